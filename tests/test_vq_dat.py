"""VQ autoencoder (DAT's discrete image space) and the DAT objective."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import filled, vq_arch
from robust_mim.errors import ConfigError
from robust_mim.models.vq import VQAutoencoder, codebook_usage, psnr
from robust_mim.objectives import FINETUNE, build_step
from robust_mim.papers.dat.objective import dat_loss, dat_perturbation


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """128 sklearn digits as tinted RGB 16x16 images in [0, 1] and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:128], dtype=torch.float32)[:, None] / 16
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)
    x = x.repeat(1, 3, 1, 1) * torch.tensor([1.0, 0.7, 0.4]).view(1, 3, 1, 1)
    return x, torch.tensor(d.target[:128])

EPS = 0.1  # DAT's L2 step (the schema's default for method dat; official pgd_generator eps=0.1)


def tiny_vq(downsample: int = 4) -> VQAutoencoder:
    return VQAutoencoder(**vq_arch(downsample=downsample, codebook_size=32, codebook_dim=8, hidden=16))


def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(128, 10))


@pytest.mark.parametrize("downsample", [2, 4])
def test_vq_shapes(downsample):
    torch.manual_seed(0)
    vq = tiny_vq(downsample)
    x = torch.rand(3, 3, 16, 16)
    z_q, indices, commit = vq.encode(x)
    h = 16 // downsample
    assert z_q.shape == (3, 8, h, h) and indices.shape == (3, h, h) and commit.dim() == 0
    x_hat, idx2, _ = vq(x)
    assert x_hat.shape == x.shape and x_hat.min() > 0 and x_hat.max() < 1
    vq.eval()
    z_q, indices, _ = vq.encode(x)
    torch.testing.assert_close(vq.decode_indices(indices), vq.decode(z_q))


def test_vq_rejects_bad_configuration():
    with pytest.raises(ConfigError, match="downsample"):
        VQAutoencoder(**vq_arch(downsample=3))
    with pytest.raises(ConfigError, match="divisible by 4"):
        tiny_vq(4)(torch.rand(1, 3, 18, 18))


def test_vq_training_reduces_reconstruction_error(digits):
    torch.manual_seed(0)
    x, _ = digits
    vq = tiny_vq()
    vq.eval()
    with torch.no_grad():
        before = vq.vq_loss(x)[1]["recon"]
    opt = torch.optim.Adam(vq.parameters(), lr=3e-3)
    vq.train()
    for _ in range(100):
        loss, terms = vq.vq_loss(x[torch.randint(0, len(x), (32,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
    vq.eval()
    with torch.no_grad():
        after = vq.vq_loss(x)[1]
        usage = codebook_usage(vq(x)[1], vq.codebook_size)
    assert after["recon"] < 0.2 * before, (before, after)
    assert after["psnr"] > 15
    assert 0 < usage["usage"] <= 1 and 1 <= usage["perplexity"] <= vq.codebook_size


def test_straight_through_requantization_passes_gradient_to_input():
    torch.manual_seed(0)
    vq = tiny_vq().eval()
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = vq.quantize_image_st(x)
    torch.testing.assert_close(out, vq.quantize_image(x))  # forward: Q(x)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    torch.testing.assert_close(x.grad, w)  # backward: identity
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in vq.parameters())


def test_codebook_usage_and_psnr_by_hand():
    stats = codebook_usage(torch.tensor([[0, 0], [1, 3]]), codebook_size=4)
    assert stats["usage"] == pytest.approx(0.75)
    assert stats["perplexity"] == pytest.approx(math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))
    x = torch.zeros(2, 3, 4, 4)
    assert psnr(x, x + 0.1).item() == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    assert psnr(x, torch.cat([x[:1] + 0.1, x[1:] + 0.01]), per_image=True).tolist() == pytest.approx([20.0, 40.0],
                                                                                                     abs=1e-3)


# ----------------------------------------------------------------------------- DAT


def test_dat_attack_stays_in_the_l2_ball_and_raises_the_loss(digits):
    torch.manual_seed(0)
    x, y = digits[0][:32], digits[1][:32]
    model = tiny_cnn()
    for random_start in (False, True):
        delta = dat_perturbation(model, x, y, eps=0.1, random_start=random_start)
        norms = delta.flatten(1).norm(dim=1)
        assert norms.max() <= 0.1 + 1e-5 and norms.mean() > 0.09
        assert (x + delta).min() >= 0 and (x + delta).max() <= 1
    with torch.no_grad():
        delta = dat_perturbation(model, x, y, eps=0.1, random_start=False)
        assert F.cross_entropy(model(x + delta), y) > F.cross_entropy(model(x), y)


def test_dat_loss_trains_the_classifier_only(digits):
    torch.manual_seed(0)
    x, y = digits[0][:16], digits[1][:16]
    model, vq = tiny_cnn(), tiny_vq()
    vq(x)  # k-means initialisation of the codebook in training mode
    codebook = vq.quantizer.codebook.clone()
    loss, terms = dat_loss(model, vq, x, y, EPS)
    assert torch.isfinite(loss) and loss.dim() == 0
    clean_ce = F.cross_entropy(model(x), y).item()
    assert terms["ce_clean"] == pytest.approx(clean_ce, rel=1e-5)
    assert loss.item() >= clean_ce and loss.item() == pytest.approx(terms["ce_clean"] + terms["ce_adv"], rel=1e-5)
    assert 0 < terms["delta_l2"] <= 0.1 + 1e-5
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(p.grad is None for p in vq.parameters())
    assert vq.training and torch.equal(vq.quantizer.codebook, codebook)  # ran in eval mode, mode restored


def test_dat_adversarial_input_is_the_requantized_quantized_image(digits):
    """With ε = 0 and no random start, x_adv = Q(Q(x)) exactly."""
    torch.manual_seed(0)
    x, y = digits[0][:8], digits[1][:8]
    model, vq = tiny_cnn(), tiny_vq().eval()
    _, terms = dat_loss(model, vq, x, y, eps=0.0, random_start=False)
    with torch.no_grad():
        expected = F.cross_entropy(model(vq.quantize_image(vq.quantize_image(x))), y).item()
    assert terms["ce_adv"] == pytest.approx(expected, rel=1e-5)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert dat_loss(model, vq, x, y, EPS, generator=g1)[0].item() == dat_loss(model, vq, x, y, EPS, generator=g2)[0].item()


def test_dat_is_a_registered_finetuning_method(digits):
    x, y = digits[0][:4], digits[1][:4]
    vq = tiny_vq()
    step = build_step(FINETUNE, filled("finetune_method", {"name": "dat", "eps": 0.1}), vq=vq)
    loss, terms = step(tiny_cnn(), x, y)
    assert torch.isfinite(loss) and set(terms) >= {"ce_clean", "ce_adv"}
    assert not vq.training and not any(p.requires_grad for p in vq.parameters())
    with pytest.raises(ConfigError, match="vq"):
        build_step(FINETUNE, filled("finetune_method", {"name": "dat"}))


def test_dat_records_the_fraction_of_vq_codes_its_perturbation_changes(digits):
    from robust_mim.papers.dat.objective import codes_changed

    torch.manual_seed(0)
    x, y = digits[0][:16], digits[1][:16]
    model, vq = tiny_cnn(), tiny_vq()
    vq(x)  # k-means initialisation of the codebook
    vq.eval()
    x_hat = vq.quantize_image(x)
    assert torch.equal(codes_changed(vq, x_hat, x_hat), torch.zeros(16))
    far = codes_changed(vq, x_hat, 1 - x_hat)  # an inverted image
    assert far.shape == (16,) and 0 < far.mean() <= 1
    _, still = dat_loss(model, vq, x, y, eps=0.0, random_start=False)
    assert still["codes_changed"] == 0.0 and still["images_codes_changed"] == 0.0  # δ = 0 changes no code
    _, big = dat_loss(model, vq, x, y, eps=20.0)  # an L2 step far beyond the paper's 0.1
    assert 0 < big["codes_changed"] <= 1 and 0 < big["images_codes_changed"] <= 1


def test_dat_attacks_and_trains_on_soft_targets_as_the_official_mixup_criterion(digits):
    """MixUp/CutMix/label smoothing hand DAT soft targets [N, K]: one-hot targets reproduce the hard-label step
    exactly; mixed targets give the soft-target CE −Σ t log softmax (timm's SoftTargetCrossEntropy) in the
    attack and both loss terms, and the attack raises that loss."""
    torch.manual_seed(0)
    x, y = digits[0][:16], digits[1][:16]
    model, vq = tiny_cnn(), tiny_vq()
    vq(x)  # k-means initialisation of the codebook
    vq.eval()
    one_hot = F.one_hot(y, 10).float()  # [N, K]
    g_hard, g_soft = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    hard = dat_loss(model, vq, x, y, EPS, generator=g_hard)
    soft = dat_loss(model, vq, x, one_hot, EPS, generator=g_soft)
    assert soft[0].item() == pytest.approx(hard[0].item(), rel=1e-6) and soft[1] == pytest.approx(hard[1])
    lam, perm = 0.7, torch.roll(torch.arange(16), 1)
    mixed_x = lam * x + (1 - lam) * x[perm]
    mixed = 0.9 * (lam * one_hot + (1 - lam) * one_hot[perm]) + 0.1 / 10  # MixUp + label smoothing 0.1
    loss, terms = dat_loss(model, vq, mixed_x, mixed, EPS)
    soft_ce = -(mixed * model(mixed_x).log_softmax(1)).sum(1).mean().item()
    assert terms["ce_clean"] == pytest.approx(soft_ce, rel=1e-5) and torch.isfinite(loss)
    assert terms["acc"] == pytest.approx((model(mixed_x).argmax(1) == mixed.argmax(1)).float().mean().item())
    x_hat = vq.quantize_image(mixed_x)
    delta = dat_perturbation(model, x_hat, mixed, EPS, random_start=False)
    with torch.no_grad():
        before = -(mixed * model(x_hat).log_softmax(1)).sum(1).mean()
        after = -(mixed * model(x_hat + delta).log_softmax(1)).sum(1).mean()
    assert after > before and delta.flatten(1).norm(dim=1).max() <= 0.1 + 1e-5
