"""Pretext tasks of Chen et al. (CVPR 2020): transforms, heads, partial fine-tuning, losses."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import filled
from robust_mim.errors import AttackInputError, ConfigError
from robust_mim.papers.chen.models import JigsawHead, PretextModel, RotationHead, SelfieHead, build_pretext_model
from robust_mim.models.resnet import ResNetBackbone, SoftmaxEnsemble, freeze_prefix, partial_parameters
from robust_mim.papers.chen.pretext_losses import (
    adversarial_pretext_loss, gradient_diversity, jigsaw_loss, multitask_pretext_loss,
    pgd_linf_on_loss, pretext_loss, rotation_loss, rotation_objective, selfie_loss,
)
from robust_mim.papers.chen.pretext import (
    from_tiles, inverse_permutation, jigsaw_batch, jigsaw_permutations, patchify, permute_tiles,
    random_rotation_batch, rotate_back, rotation_batch, selfie_batch, to_tiles, unpatchify,
)


class TinyNet(nn.Module):
    """A small CNN backbone with ``embed`` (3×16×16 → [N, 64]) and a head."""

    def __init__(self, num_classes: int = 10, dim: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(32 * 16, dim), nn.ReLU())
        self.head = nn.Linear(dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x - 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def tiny_pretext_model(seed: int = 0) -> PretextModel:
    torch.manual_seed(seed)
    return build_pretext_model(TinyNet(), 64, ["rotation", "jigsaw", "selfie"], image_size=16,
                               jigsaw_grid=2, num_permutations=12, selfie_patch=4, selfie_masked=4)


# ----------------------------------------------------------------------------- transforms
def test_rotation_batch_rotates_back_and_labels_quarter_turns():
    x = torch.rand(5, 3, 8, 8)
    x_rot, labels = rotation_batch(x)
    assert x_rot.shape == (20, 3, 8, 8) and labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    assert torch.equal(rotate_back(x_rot, labels), x.repeat(4, 1, 1, 1))
    # 90° counter-clockwise: the top row becomes the left column, read bottom-up
    assert torch.equal(x_rot[5:10, :, :, 0], x[:, :, 0, :].flip(-1))
    assert not torch.equal(x_rot[:5], x_rot[10:15])


def test_random_rotation_is_balanced_and_invertible():
    x = torch.rand(10, 3, 8, 8)
    x_rot, labels = random_rotation_batch(x, torch.Generator().manual_seed(1))
    assert torch.equal(rotate_back(x_rot, labels), x)
    assert sorted(torch.bincount(labels, minlength=4).tolist()) == [2, 2, 3, 3]
    with pytest.raises(ConfigError):
        rotation_batch(torch.rand(2, 3, 8, 6))


def test_jigsaw_permutations_fixed_unique_identity_first():
    perms = jigsaw_permutations(31, grid=4, seed=3)
    assert perms.shape == (31, 16) and perms.dtype == torch.long
    assert torch.equal(perms, jigsaw_permutations(31, grid=4, seed=3))
    assert not torch.equal(perms, jigsaw_permutations(31, grid=4, seed=4))
    assert torch.equal(perms[0], torch.arange(16))
    assert len({tuple(r) for r in perms.tolist()}) == 31
    assert torch.equal(perms.sort(dim=1).values, torch.arange(16).expand(31, 16))  # each row a permutation
    assert len({tuple(r) for r in jigsaw_permutations(24, grid=2).tolist()}) == 24  # all of 4!
    with pytest.raises(ConfigError):
        jigsaw_permutations(25, grid=2)


def test_jigsaw_inverse_permutation_recovers_image_and_moves_tiles():
    x = torch.rand(6, 3, 16, 16)
    perms = jigsaw_permutations(10, grid=4, seed=0)
    x_jig, labels = jigsaw_batch(x, perms, torch.Generator().manual_seed(0), identity_prob=0.0)
    assert torch.equal(to_tiles(x_jig, 4)[2, 5], to_tiles(x, 4)[2, perms[labels[2], 5]])
    assert torch.equal(permute_tiles(x_jig, inverse_permutation(perms[labels])), x)
    assert torch.equal(from_tiles(to_tiles(x, 4), 4), x)
    shuffled = labels != 0
    assert shuffled.any() and not torch.equal(x_jig[shuffled], x[shuffled])
    x_id, labels_id = jigsaw_batch(x, perms, identity_prob=1.0)
    assert torch.equal(x_id, x) and labels_id.eq(0).all()


def test_selfie_target_points_at_removed_patch():
    x = torch.rand(7, 3, 16, 16)
    b = selfie_batch(x, patch_size=4, num_masked=5, generator=torch.Generator().manual_seed(0))
    assert b["patches"].shape == (7, 16, 48) and b["candidates"].shape == (7, 5, 48)
    assert torch.equal(unpatchify(patchify(x, 4), 4), x)
    picked = torch.gather(b["candidates"], 1, b["target"][:, :, None].expand(-1, -1, 48))  # [N, M, C*p*p]
    truth = torch.gather(b["patches"], 1, b["masked"][:, :, None].expand(-1, -1, 48))
    assert torch.equal(picked, truth)
    assert b["visible"].sum(1).eq(11).all() and not b["visible"].gather(1, b["masked"]).any()
    assert torch.equal(b["candidate_positions"].sort(1).values, b["masked"].sort(1).values)
    assert (b["target"] != torch.arange(5)).any()  # candidates are shuffled
    context = patchify(b["context"], 4)
    assert context[~b["visible"]].eq(0).all() and torch.equal(context[b["visible"]], b["patches"][b["visible"]])


# ----------------------------------------------------------------------------- models
def test_heads_and_selfie_logits_shapes():
    model = tiny_pretext_model()
    x = torch.rand(3, 3, 16, 16)
    assert model.rotation_logits(x).shape == (3, 4) and model.jigsaw_logits(x).shape == (3, 12)
    b = selfie_batch(x, 4, 4)
    assert model.selfie_logits(b["context"], b["candidates"], b["masked"]).shape == (3, 4, 4)
    assert isinstance(model.heads["rotation"], RotationHead) and isinstance(model.heads["jigsaw"], JigsawHead)
    assert "heads.jigsaw.perms" in model.state_dict()
    with pytest.raises(ConfigError):
        PretextModel(TinyNet(), {"colorize": nn.Identity()})


def test_resnet_backbone_small_input_and_shared_selfie_encoder():
    torch.manual_seed(0)
    net = ResNetBackbone("resnet18", num_classes=10, channels=(8, 16, 32, 64))
    x = torch.rand(2, 3, 16, 16)
    assert net(x).shape == (2, 10) and torch.allclose(net(x), net.head(net.embed(x)))
    assert net.backbone.conv1.stride == (1, 1) and isinstance(net.backbone.maxpool, nn.Identity)
    assert net.stage_prefixes(2) == ["backbone.conv1", "backbone.bn1", "backbone.layer1"]
    assert len(net.blocks()) == 5
    model = PretextModel(net, {"selfie": SelfieHead(64, 4, 4, 4, shared_patch_encoder=True)})
    loss, metrics = selfie_loss(model, x)
    loss.backward()
    assert torch.isfinite(loss) and 0 <= metrics["acc"] <= 1
    # timm zero-initialises each block's last BN, so the stem and those BNs get the first gradients
    assert net.backbone.conv1.weight.grad.abs().sum() > 0
    assert net.backbone.layer4[1].bn2.weight.grad.abs().sum() > 0


def test_partial_finetuning_keeps_frozen_weights_bit_identical():
    torch.manual_seed(0)
    net = ResNetBackbone("resnet18", num_classes=10, channels=(8, 16, 32, 64))
    frozen_prefixes = net.stage_prefixes(3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    frozen = freeze_prefix(net, frozen_prefixes)
    trainable = partial_parameters(net, frozen_prefixes)
    assert "backbone.layer2.0.conv1.weight" in frozen and "backbone.layer3.0.conv1.weight" not in frozen
    assert len(trainable) == sum(p.requires_grad for p in net.parameters())
    opt = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.5)
    x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,))
    net.train()
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    after = net.state_dict()
    for key, value in before.items():
        under = any(key.startswith(p + ".") for p in frozen_prefixes)
        if under:
            assert torch.equal(after[key], value), key  # weights and BN running stats
        elif key.endswith("weight"):
            assert not torch.equal(after[key], value), key
    with pytest.raises(ConfigError):
        freeze_prefix(net, ["backbone.nope"])


def test_softmax_ensemble_is_log_probability_and_differentiable():
    torch.manual_seed(0)
    members = [TinyNet(5), TinyNet(5), TinyNet(5)]
    ens = SoftmaxEnsemble(members)
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    out = ens(x)
    assert torch.allclose(out.logsumexp(-1), torch.zeros(4), atol=1e-5)
    expected = torch.stack([m(x).softmax(-1) for m in members]).mean(0).log()
    assert torch.allclose(out, expected, atol=1e-5)
    out[:, 0].sum().backward()
    assert x.grad.abs().sum() > 0 and members[1].head.weight.grad is not None
    assert torch.allclose(SoftmaxEnsemble(members[:1])(x), members[0](x).log_softmax(-1), atol=1e-6)


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("loss", [rotation_loss, jigsaw_loss, selfie_loss])
def test_pretext_losses_finite_and_backprop_to_backbone_and_head(loss):
    model = tiny_pretext_model()
    task = loss.__name__.split("_")[0]
    value, metrics = loss(model, torch.rand(8, 3, 16, 16), torch.Generator().manual_seed(0))
    value.backward()
    assert torch.isfinite(value) and 0.0 <= metrics["acc"] <= 1.0
    assert model.backbone.features[0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.heads[task].parameters())
    others = [t for t in model.tasks if t != task]
    assert all(p.grad is None for t in others for p in model.heads[t].parameters())


def test_rotation_pretraining_on_digits_beats_chance(digits16):
    torch.manual_seed(0)
    train, test = digits16[0].tensors[0], digits16[1].tensors[0]  # [N, 3, 16, 16] in [0, 1]
    model = build_pretext_model(TinyNet(), 64, ["rotation"], image_size=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for step in range(100):
        batch = train[torch.randint(0, len(train), (32,), generator=gen)]
        loss, _ = rotation_loss(model, batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x_rot, labels = rotation_batch(test)
        acc = (model.rotation_logits(x_rot).argmax(-1) == labels).float().mean().item()
    assert acc > 0.6, acc  # chance is 0.25; measured 0.82-0.86 over seeds 0-3


def test_pgd_stays_in_eps_ball_and_raises_loss():
    model = tiny_pretext_model()
    x = torch.rand(16, 3, 16, 16)
    inputs, loss_fn = rotation_objective(model, x, torch.Generator().manual_seed(0))
    eps = 8 / 255
    x_adv = pgd_linf_on_loss(lambda z: loss_fn(z)[0], inputs, eps, 2 / 255, 10, torch.Generator().manual_seed(1))
    assert (x_adv - inputs).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - inputs).abs().max() > eps / 2
    assert loss_fn(x_adv)[0] > loss_fn(inputs)[0]
    with pytest.raises(AttackInputError):
        pgd_linf_on_loss(lambda z: loss_fn(z)[0], inputs, eps=-1.0)


@pytest.mark.parametrize("task", ["rotation", "jigsaw", "selfie"])
def test_adversarial_pretext_loss_not_below_clean(task):
    model = tiny_pretext_model()
    gaps = []
    for seed in range(3):
        x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
        loss, m = pretext_loss(model, task, x, adversarial=True, steps=5, generator=torch.Generator().manual_seed(seed))
        assert math.isclose(loss.item(), 0.5 * (m["loss_clean"] + m["loss_adv"]), rel_tol=1e-5)
        gaps.append(m["loss_adv"] - m["loss_clean"])
    assert sum(gaps) / len(gaps) > 0


def test_adversarial_pretext_loss_backprops():
    model = tiny_pretext_model()
    x = torch.rand(8, 3, 16, 16)
    inputs, loss_fn = rotation_objective(model, x)
    loss, m = adversarial_pretext_loss(loss_fn, inputs, steps=3)
    loss.backward()
    assert torch.isfinite(loss) and model.heads["rotation"].weight.grad.abs().sum() > 0
    assert model.backbone.features[0].weight.grad is not None


def test_gradient_diversity_orthogonal_vs_aligned():
    a = torch.zeros(2, 3, 4, 4)
    a[:, 0, 0, 0] = 1.0
    b = torch.zeros(2, 3, 4, 4)
    b[:, 1, 0, 0] = 2.0
    c = torch.zeros(2, 3, 4, 4)
    c[:, 2, 0, 0] = 0.5
    assert abs(gradient_diversity([a, b, c]).item()) < 1e-4  # orthonormal after scaling → det 1
    aligned = gradient_diversity([a, 3 * a, c]).item()
    assert aligned < math.log(1e-4)  # a rank-deficient Gram matrix → log of the jitter scale


def test_multitask_pretext_loss_with_diversity():
    model = tiny_pretext_model()
    x = torch.rand(6, 3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    loss, m = multitask_pretext_loss(model, x, steps=2, diversity_weight=0.1, generator=gen)
    loss.backward()
    assert torch.isfinite(loss) and m["diversity"] <= 1e-4
    expected = 0.5 * (m["loss_clean"] + m["loss_adv"]) + 0.1 * m["diversity"]
    assert math.isclose(loss.item(), expected, rel_tol=1e-4)
    for task in ("rotation", "jigsaw", "selfie"):
        assert f"{task}_acc_adv" in m
        assert all(p.grad is not None for p in model.heads[task].parameters())
    clean, mc = multitask_pretext_loss(model, x, adversarial=False, generator=torch.Generator().manual_seed(0))
    assert "loss_adv" not in mc and torch.isfinite(clean)


def test_ensemble_pretraining_keeps_the_official_diversity_weight_by_default():
    from robust_mim.papers.chen.objective import PRETEXT_PRETRAIN
    from robust_mim.objectives import build_step

    settings = filled("pretext_objective", {"name": "pretext_multitask", "steps": 1})  # no diversity_weight given
    step = build_step(PRETEXT_PRETRAIN, settings)
    torch.manual_seed(0)
    loss, m = step(tiny_pretext_model(), torch.rand(4, 3, 16, 16), torch.zeros(4, dtype=torch.long))
    assert m["diversity"] != 0.0  # λ = 0.1: the log-det term is computed and added, not silently dropped
    assert math.isclose(loss.item(), 0.5 * (m["loss_clean"] + m["loss_adv"]) + 0.1 * m["diversity"], rel_tol=1e-4)
