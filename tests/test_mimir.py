"""MIMIR pieces: normalized HSIC, the pretraining attack, the loss, the adaptive attacks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn

from robust_mim.papers.mimir.adaptive import feature_distance_loss, pgd_mi_loss
from robust_mim.errors import AttackInputError
from robust_mim.papers.mimir.hsic import (
    hsic_normalized,
    hsic_normalized_cca,
    mimir_adversarial_input,
    mimir_loss,
)
from tiny_models import TinyClassifier, cyclic_batch, minimize, train_tiny_classifier

EPS = 8 / 255
BOUNDED = {"sigma": 5.0, "hsic_fn": hsic_normalized, "group_size": 128}  # mimir_loss settings (no defaults)
MI = {"sigma": 5.0, "hsic_fn": hsic_normalized}  # pgd_mi_loss settings (no defaults)


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def digits() -> tuple[Tensor, Tensor]:
    """sklearn digits as [N, 3, 16, 16] images in [0, 1] with labels."""
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # [N, 1, 8, 8]
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False).clamp(0, 1)
    return x.expand(-1, 3, -1, -1).contiguous()[:512], torch.tensor(d.target)[:512]


class TinyAE(nn.Module):
    """Conv encoder → latent [N, 8, 4, 4] → conv decoder, images 3x16x16."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 8, 3, 2, 1), nn.ReLU())
        self.dec = nn.Sequential(nn.ConvTranspose2d(8, 16, 4, 2, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(16, 3, 4, 2, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.enc(x)
        return self.dec(z), z


def patch_mask(n: int, generator: torch.Generator | None = None, ratio: float = 0.5) -> Tensor:
    """Random 4x4-patch mask [N, 1, 16, 16], 1 = removed."""
    m = (torch.rand(n, 1, 4, 4, generator=generator) < ratio).float()
    return F.interpolate(m, scale_factor=4, mode="nearest")


def masked_mae_loss(ae: TinyAE, x_in: Tensor, x_target: Tensor, mask: Tensor) -> Tensor:
    recon, _ = ae(x_in * (1 - mask))
    return ((recon - x_target) ** 2 * mask).sum() / (mask.sum() * 3).clamp_min(1)


@pytest.fixture(scope="module")
def trained_ae(digits) -> TinyAE:
    """`TinyAE` trained for 150 steps on the masked-patch reconstruction loss; eval mode."""
    torch.manual_seed(0)
    x, _ = digits
    ae = TinyAE()

    def loss_at(step: int) -> Tensor:
        xb = cyclic_batch(x, step)
        return masked_mae_loss(ae, xb, xb, patch_mask(len(xb)))

    minimize(torch.optim.Adam(ae.parameters(), lr=3e-3), loss_at, 150)
    return ae.eval()


@pytest.fixture(scope="module")
def trained_clf(digits) -> TinyClassifier:
    return train_tiny_classifier(*digits).eval()


def local_pgd(loss_fn, model: nn.Module, x: Tensor, y: Tensor, steps: int = 5, eps: float = EPS,
              alpha: float = 2 / 255, seed: int = 0) -> Tensor:
    """Minimal L∞ PGD with random start that ascends loss_fn(model, x_adv, y).sum()."""
    g = torch.Generator().manual_seed(seed)
    x_adv = (x + (2 * torch.rand(x.shape, generator=g) - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(model, x_adv, y).sum(), x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv


# ----------------------------------------------------------------------------- HSIC


def reference_hsic(x: Tensor, y: Tensor, sigma: float, cca: bool = False) -> Tensor:
    """Direct transcription of the HSIC-bottleneck formulas (explicit H, one-sided centring)."""
    def gram(z: Tensor) -> Tensor:
        z = z.reshape(len(z), -1).double()
        m = len(z)
        h = torch.eye(m, dtype=z.dtype) - torch.ones(m, m, dtype=z.dtype) / m
        k = torch.exp(-torch.cdist(z, z) ** 2 / (2 * sigma ** 2 * z.shape[1]))
        return k @ h

    kx, ky = gram(x), gram(y)
    if cca:
        m = len(kx)
        rx = kx @ torch.inverse(kx + 1e-5 * m * torch.eye(m, dtype=kx.dtype))
        ry = ky @ torch.inverse(ky + 1e-5 * m * torch.eye(m, dtype=ky.dtype))
        return (rx * ry.T).sum()
    hsic = lambda a, b: (a * b.T).mean()  # noqa: E731
    return hsic(kx, ky) / (hsic(kx, kx).sqrt() * hsic(ky, ky).sqrt())


def test_hsic_matches_reference_formulas():
    torch.manual_seed(0)
    x, y = torch.rand(32, 3, 4, 4), torch.randn(32, 5, 6)
    y = y + x.flatten(1)[:, :30].reshape(32, 5, 6)
    for sigma in (0.2, 1.0, 5.0):
        assert hsic_normalized(x, y, sigma, sigma).item() == pytest.approx(reference_hsic(x, y, sigma).item(), rel=1e-4)
        ours = hsic_normalized_cca(x.double(), y.double(), sigma, sigma).item()
        assert ours == pytest.approx(reference_hsic(x, y, sigma, cca=True).item(), rel=1e-4)


def test_hsic_independent_near_zero_dependent_positive():
    torch.manual_seed(0)
    x = 2 * torch.rand(256, 2) - 1
    independent = hsic_normalized(x, 2 * torch.rand(256, 2) - 1).item()
    linear = hsic_normalized(x, x @ torch.randn(2, 2) + 0.05 * torch.randn(256, 2)).item()
    quadratic = hsic_normalized(x, x ** 2 + 0.05 * torch.randn(256, 2)).item()  # uncorrelated, dependent
    assert independent < 0.05
    assert linear > 0.5
    assert quadratic > 3 * independent and quadratic > 0.1
    assert abs(torch.corrcoef(torch.stack([x[:, 0], x[:, 0] ** 2]))[0, 1]) < 0.2  # truly nonlinear


def test_hsic_bounded_and_one_on_itself():
    torch.manual_seed(0)
    for _ in range(5):
        x, y = torch.randn(40, 7), torch.rand(40, 3, 2, 2)
        for sigma in (None, 0.5, 5.0):
            v = hsic_normalized(x, y + 0.3 * x[:, :1, None, None], sigma, sigma).item()
            assert 0.0 <= v <= 1.0 + 1e-6
        assert hsic_normalized(x, x).item() == pytest.approx(1.0, abs=1e-5)


def test_hsic_invariant_to_joint_permutation_and_drops_when_y_shuffled():
    torch.manual_seed(0)
    x = torch.rand(128, 1)
    y = torch.sin(6 * x) + 0.05 * torch.randn(128, 1)
    perm = torch.randperm(128)
    paired = hsic_normalized(x, y).item()
    assert hsic_normalized(x[perm], y[perm]).item() == pytest.approx(paired, rel=1e-5)
    assert hsic_normalized(x, y[perm]).item() < 0.3 * paired


def test_hsic_differentiable_on_input_device_in_float32():
    z = torch.randn(16, 4, dtype=torch.float16, requires_grad=True)
    h = hsic_normalized(z, torch.rand(16, 3, 2, 2), 5.0, 5.0)
    h.backward()
    assert h.dtype == torch.float32 and h.device == z.device
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    x, y = torch.randn(16, 4), torch.rand(16, 3, 2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h_amp = hsic_normalized(x, y, 5.0, 5.0)
    assert h_amp.dtype == torch.float32
    assert h_amp.item() == pytest.approx(hsic_normalized(x, y, 5.0, 5.0).item(), rel=1e-6)


def test_hsic_rejects_unpaired_batches():
    with pytest.raises(AttackInputError):
        hsic_normalized(torch.rand(4, 2), torch.rand(5, 2))


def test_minimizing_hsic_penalty_reduces_dependence():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 4, 4)
    enc = nn.Linear(48, 8)
    opt = torch.optim.SGD(enc.parameters(), lr=0.5)
    start = hsic_normalized(enc(x.flatten(1)), x).item()
    for _ in range(40):
        loss = hsic_normalized(enc(x.flatten(1)), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert hsic_normalized(enc(x.flatten(1)), x).item() < start - 0.05


# ----------------------------------------------------------------------------- pretraining attack


def test_mimir_adversarial_input_in_ball_and_raises_mae_loss(digits, trained_ae):
    x = digits[0][:128]
    torch.manual_seed(3)

    def closure(x_in: Tensor) -> Tensor:  # fresh mask every call, clean target
        return masked_mae_loss(trained_ae, x_in, x, patch_mask(len(x)))

    x_adv = mimir_adversarial_input(closure, x, EPS, 10 / 255, steps=1, generator=torch.Generator().manual_seed(0))
    assert not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(p.grad is None for p in trained_ae.parameters())
    g = torch.Generator().manual_seed(7)
    masks = [patch_mask(len(x), g) for _ in range(8)]  # same held-out masks for both inputs
    with torch.no_grad():
        clean = sum(masked_mae_loss(trained_ae, x, x, m) for m in masks) / 8
        adv = sum(masked_mae_loss(trained_ae, x_adv, x, m) for m in masks) / 8
        noise = (x + (2 * torch.rand(x.shape, generator=g) - 1) * EPS).clamp(0, 1)
        rand = sum(masked_mae_loss(trained_ae, noise, x, m) for m in masks) / 8
    assert adv > 1.01 * clean  # measured ≈ +4% (tiny AE, 50% masked, 1 step at 8/255)
    assert adv > 1.01 * rand  # the gradient step matters, not only the random start (≈ +0.2%)


def test_mimir_adversarial_input_reproducible_and_validated(digits, trained_ae):
    x = digits[0][:16]

    def closure(x_in: Tensor) -> Tensor:
        recon, _ = trained_ae(x_in)
        return F.mse_loss(recon, x)

    a = mimir_adversarial_input(closure, x, EPS, 10 / 255, steps=1, generator=torch.Generator().manual_seed(5))
    b = mimir_adversarial_input(closure, x, EPS, 10 / 255, steps=1, generator=torch.Generator().manual_seed(5))
    c = mimir_adversarial_input(closure, x, EPS, 10 / 255, steps=1, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    no_start = mimir_adversarial_input(closure, x, EPS, 1 / 255, steps=1, random_start=False)
    assert torch.allclose((no_start - x).abs().max(), torch.tensor(1 / 255), atol=1e-6)
    with pytest.raises(AttackInputError):
        mimir_adversarial_input(closure, x, -0.1, 10 / 255, steps=1)


# ----------------------------------------------------------------------------- loss


def test_mimir_loss_components_add_up_and_backprop(digits, trained_ae):
    x = digits[0][:32]
    ae = TinyAE()
    ae.load_state_dict(trained_ae.state_dict())
    x_adv = (x + EPS * torch.sign(torch.randn_like(x))).clamp(0, 1)
    recon, latent = ae(x_adv)
    recon_loss = F.mse_loss(recon, x)
    total, parts = mimir_loss(recon_loss, latent, x_adv, 0.5, **BOUNDED)
    assert set(parts) == {"recon", "hsic", "total"}
    assert parts["total"] == pytest.approx(parts["recon"] + 0.5 * parts["hsic"], rel=1e-6)
    assert parts["hsic"] == pytest.approx(hsic_normalized(latent, x_adv, 5.0, 5.0).item(), rel=1e-6)
    assert 0 < parts["hsic"] <= 1
    total.backward()
    grad_with = ae.enc[0].weight.grad.clone()
    ae.zero_grad()
    recon, latent = ae(x_adv)
    recon_loss = F.mse_loss(recon, x)
    total0, parts0 = mimir_loss(recon_loss, latent, x_adv, 0.0, **BOUNDED)
    assert total0 is recon_loss and parts0["total"] == parts0["recon"]
    total0.backward()
    assert not torch.allclose(grad_with, ae.enc[0].weight.grad)  # the HSIC term reaches the encoder
    cca_total, cca_parts = mimir_loss(F.mse_loss(ae(x_adv)[0], x), ae(x_adv)[1], x_adv, 1e-5,
                                      **{**BOUNDED, "hsic_fn": hsic_normalized_cca})
    assert cca_parts["hsic"] > 1 and torch.isfinite(cca_total)


# ----------------------------------------------------------------------------- adaptive attacks


def test_feature_distance_loss_per_example_and_ascended_by_pgd(digits, trained_clf):
    x, y = digits[0][:64], digits[1][:64]
    loss_fn = feature_distance_loss(x)
    at_clean = loss_fn(trained_clf, x.clone().requires_grad_(True), y)
    assert at_clean.shape == (64,) and torch.allclose(at_clean, torch.zeros(64), atol=1e-5)
    start = (x + EPS * (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 1)).clamp(0, 1)
    start.requires_grad_(True)
    d = loss_fn(trained_clf, start, y)
    assert d.shape == (64,)
    (grad,) = torch.autograd.grad(d.sum(), start)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    x_adv = local_pgd(loss_fn, trained_clf, x, y, steps=5)
    with torch.no_grad():
        after = loss_fn(trained_clf, x_adv, y)
    assert after.mean() > 2 * d.detach().mean()
    with pytest.raises(AttackInputError):
        loss_fn(trained_clf, x[:10], y[:10])


def test_pgd_mi_loss_per_example_and_ascended_by_pgd(digits, trained_clf):
    x, y = digits[0][:64], digits[1][:64]
    lam = 0.5
    loss_fn = pgd_mi_loss(lam, **MI)
    x_req = x.clone().requires_grad_(True)
    out = loss_fn(trained_clf, x_req, y)
    assert out.shape == (64,)
    with torch.no_grad():
        ce = F.cross_entropy(trained_clf(x), y, reduction="none")
        hsic = hsic_normalized(trained_clf.embed(x), x, 5.0, 5.0)
    assert torch.allclose(out.detach(), ce + lam * hsic, atol=1e-5)
    (grad,) = torch.autograd.grad(out.sum(), x_req)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.allclose(pgd_mi_loss(0.0, **MI)(trained_clf, x, y).detach(), ce, atol=1e-6)
    x_adv = local_pgd(pgd_mi_loss(1e-5, **MI), trained_clf, x, y, steps=5)
    with torch.no_grad():
        ce_adv = F.cross_entropy(trained_clf(x_adv), y, reduction="none")
    assert ce_adv.mean() > 2 * ce.mean()
    perturbation = pgd_mi_loss(lam, x_clean=x, **MI)(trained_clf, x_adv, y)
    assert perturbation.shape == (64,) and torch.isfinite(perturbation).all()


def test_pgd_mi_hsic_term_steers_the_attack(digits, trained_clf):
    """A large λ makes PGD raise nHSIC(z, x′) more than plain CE-PGD does."""
    x, y = digits[0][:64], digits[1][:64]
    adv_ce = local_pgd(pgd_mi_loss(0.0, **MI), trained_clf, x, y, steps=5)
    adv_mi = local_pgd(pgd_mi_loss(1e3, **MI), trained_clf, x, y, steps=5)
    with torch.no_grad():
        h_ce = hsic_normalized(trained_clf.embed(adv_ce), adv_ce, 5.0, 5.0)
        h_mi = hsic_normalized(trained_clf.embed(adv_mi), adv_mi, 5.0, 5.0)
    assert h_mi > h_ce


# ----------------------------------------------------------------------------- official forward_features (ViT)


@pytest.fixture(scope="module")
def vit_clf():
    """Nano-ViT classifier (2 blocks, width 32, patch 4 at 16x16: 1 + 16 tokens), untrained, eval mode."""
    from robust_mim.models.classifier import ImageClassifier
    from robust_mim.models.vit import build_vit_encoder, vit_spec

    torch.manual_seed(0)
    spec = vit_spec("vit_nano_patch4_16")
    return ImageClassifier(build_vit_encoder(spec), spec.embed_dim, 10, [0.5] * 3, [0.5] * 3).eval()


def test_forward_features_are_every_token_before_the_final_norm(digits, vit_clf):
    from robust_mim.papers.mimir.adaptive import features_and_logits, forward_features

    x = digits[0][:8]
    vit = vit_clf.backbone
    with torch.no_grad():
        tokens, logits = features_and_logits(vit_clf, x)
        after_norm = vit.forward_features(vit_clf.normalize(x))  # timm: blocks, then the final norm
    assert tokens.shape == (8, 1 + 16, 32)  # class token + 16 patches, width D = 32: (1+L)·D = 544
    assert torch.allclose(vit.norm(tokens), after_norm, atol=1e-5)  # exactly the final norm's input
    assert not torch.allclose(tokens, after_norm, atol=1e-2)  # ... and not its output
    assert torch.allclose(logits, vit_clf(x), atol=1e-5)  # one forward gives the classifier's logits
    assert torch.equal(forward_features(vit_clf, x), tokens)
    assert forward_features(vit_clf, x).flatten(1).shape[1] != vit_clf.embed(x).shape[1]  # not the pooled [N, D]


def test_feature_pgd_measures_the_distance_of_all_tokens(digits, vit_clf):
    x, y = digits[0][:8], digits[1][:8]
    x_adv = (x + EPS * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))).clamp(0, 1)
    from robust_mim.papers.mimir.adaptive import forward_features

    with torch.no_grad():
        got = feature_distance_loss(x)(vit_clf, x_adv, y)
        want = (forward_features(vit_clf, x_adv) - forward_features(vit_clf, x)).flatten(1).norm(dim=1)
        pooled = (vit_clf.embed(x_adv) - vit_clf.embed(x)).norm(dim=1)
    assert torch.allclose(got, want, rtol=1e-5) and not torch.allclose(got, pooled, rtol=1e-2)


def test_pgd_mi_hsic_is_taken_on_the_flattened_tokens_with_the_official_width(digits, vit_clf):
    """The HSIC term is the official hsic_normalized_cca(features.view(N, -1), x'.view(N, -1), sigma=5): the
    kernel width 2σ²d uses d = (1+L)·D of the tokens, not D of the pooled embedding."""
    from robust_mim.papers.mimir.adaptive import forward_features

    x, y = digits[0][:16], digits[1][:16]
    loss_fn = pgd_mi_loss(1.0, sigma=5.0, hsic_fn=hsic_normalized_cca)
    with torch.no_grad():
        hsic = loss_fn(vit_clf, x, y) - F.cross_entropy(vit_clf(x), y, reduction="none")  # [N], the same scalar
        tokens = forward_features(vit_clf, x)
        official = reference_hsic(tokens.flatten(1), x, 5.0, cca=True)  # width from the flattened dimension
        pooled = reference_hsic(vit_clf.embed(x), x, 5.0, cca=True)
    assert tokens.flatten(1).shape[1] == 17 * 32
    assert torch.allclose(hsic, official.float().expand(16), rtol=1e-3)
    assert abs(official - pooled) > 1e-2 * abs(official)


# ----------------------------------------------------------------------------- HSIC on groups of the per-GPU batch


def test_grouped_hsic_is_the_mean_over_groups_of_the_official_per_gpu_batch():
    from robust_mim.papers.mimir.hsic import grouped_hsic

    torch.manual_seed(0)
    z, x = torch.randn(512, 6), torch.rand(512, 3, 2, 2)
    z = z + x.flatten(1)[:, :6]
    per_gpu = torch.stack([hsic_normalized_cca(z[i:i + 128], x[i:i + 128], 5.0, 5.0) for i in range(0, 512, 128)])
    assert grouped_hsic(hsic_normalized_cca, z, x, 5.0, 128).item() == pytest.approx(per_gpu.mean().item(), rel=1e-5)
    whole = hsic_normalized_cca(z, x, 5.0, 5.0).item()
    assert abs(whole - per_gpu.mean().item()) > 1.0  # the CCA value scales with the batch: λ means another thing
    assert grouped_hsic(hsic_normalized_cca, z[:100], x[:100], 5.0, 128).item() == pytest.approx(
        hsic_normalized_cca(z[:100], x[:100], 5.0, 5.0).item(), rel=1e-6)  # a smaller batch is one group
    halves = [hsic_normalized(z[:150], x[:150], 5.0, 5.0), hsic_normalized(z[150:300], x[150:300], 5.0, 5.0)]
    assert grouped_hsic(hsic_normalized, z[:300], x[:300], 5.0, 128).item() == pytest.approx(
        torch.stack(halves).mean().item(), rel=1e-5)  # 300 // 128 = 2 groups of 150
    with pytest.raises(AttackInputError):
        grouped_hsic(hsic_normalized, z, x, 5.0, 1)


def test_mimir_loss_averages_the_penalty_over_groups():
    torch.manual_seed(0)
    latent, x_adv = torch.randn(64, 5, 4, requires_grad=True), torch.rand(64, 3, 4, 4)
    recon = latent.pow(2).mean()
    _, parts = mimir_loss(recon, latent, x_adv, 1e-5, sigma=5.0, hsic_fn=hsic_normalized_cca, group_size=16)
    groups = [hsic_normalized_cca(latent[i:i + 16], x_adv[i:i + 16], 5.0, 5.0).item() for i in range(0, 64, 16)]
    assert parts["hsic"] == pytest.approx(sum(groups) / 4, rel=1e-5)
    assert parts["hsic"] <= 15  # each group's CCA value lies in [0, 16 - 1]
