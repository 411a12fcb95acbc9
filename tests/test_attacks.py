"""Attacks: constraints, strength, restarts, targeting, agreement with ART, EOT, BPDA, validation."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_mim.attacks.art import apgd, autoattack_style, square
from robust_mim.attacks.core import (ATTACKS, BPDA, ExpectationOverTransformation, fgsm, pgd, predict_labels,
                                straight_through)
from robust_mim.errors import AttackInputError
from tiny_models import NoisyInput


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(fresh_digits_cnn, digits16):
    """The session's small digits CNN (a copy: tests may change it) and the whole test split."""
    xte, yte = digits16[1].tensors
    return fresh_digits_cnn(), xte, yte


def acc(model, x, y):
    return (predict_labels(model, x) == y).float().mean().item()


def quantize(x):
    return torch.round(x * 4) / 4


class Quantized(nn.Module):
    def __init__(self, model, pre):
        super().__init__()
        self.model, self.pre = model, pre

    def forward(self, x):
        return self.model(self.pre(x))


class FirstClasses(nn.Module):
    """The model restricted to its first k logits (a k-class classifier)."""

    def __init__(self, model, k):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x):
        return self.model(x)[:, :self.k]


def test_fixture_model_is_accurate(trained):
    model, x, y = trained
    assert x.shape[0] >= 256
    assert acc(model, x, y) > 0.85


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_pgd_stays_in_ball_and_raises_loss(trained, norm, eps):
    model, x, y = trained
    x, y = x[:128], y[:128]
    x_adv = pgd(model, x, y, eps, norm=norm, steps=10, generator=torch.Generator().manual_seed(0))
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert size.max() <= eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and not x_adv.requires_grad
    with torch.no_grad():
        clean, adv = F.cross_entropy(model(x), y, reduction="none"), F.cross_entropy(model(x_adv), y, reduction="none")
    assert adv.mean() > clean.mean() + 0.1
    assert (adv >= clean - 1e-4).float().mean() > 0.95
    assert acc(model, x_adv, y) < acc(model, x, y)


@pytest.mark.parametrize("loss", ["cw", "dlr"])
def test_margin_losses_attack(trained, loss):
    model, x, y = trained
    x, y = x[:128], y[:128]
    x_adv = pgd(model, x, y, 16 / 255, steps=10, loss=loss)
    assert (x_adv - x).abs().max() <= 16 / 255 + 1e-6
    assert acc(model, x_adv, y) < acc(model, x, y) - 0.1


def test_callable_loss_is_maximized(trained):
    model, x, y = trained
    x, y = x[:128], y[:128]

    def confidence(m, xa, ya):  # maximizing minus CE makes the model MORE confident in y
        return -F.cross_entropy(m(xa), ya, reduction="none")

    helped = pgd(model, x, y, 16 / 255, steps=10, loss=confidence)
    with torch.no_grad():
        assert F.cross_entropy(model(helped), y) < F.cross_entropy(model(x), y)
    assert acc(model, helped, y) >= acc(model, x, y)


def test_attack_leaves_parameters_and_outer_graph_intact(trained):
    model, x, y = trained
    model.zero_grad(set_to_none=True)
    frozen_before = [p.requires_grad for p in model.parameters()]
    outer = F.cross_entropy(model(x[:16]), y[:16])  # a graph built before the attack
    pgd(model, x[:16], y[:16], 8 / 255, steps=2)
    assert [p.requires_grad for p in model.parameters()] == frozen_before
    assert all(p.grad is None for p in model.parameters())
    outer.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)


def test_fgsm_in_ball_and_raises_loss(trained):
    model, x, y = trained
    x_adv = fgsm(model, x[:128], y[:128], 8 / 255)
    assert (x_adv - x[:128]).abs().max() <= 8 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y[:128]) > F.cross_entropy(model(x[:128]), y[:128])


def test_restarts_keep_per_example_worst_case(trained):
    model, x, y = trained
    x, y, eps = x[:200], y[:200], 8 / 255
    multi = pgd(model, x, y, eps, steps=3, restarts=3, generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)  # the same random starts, one restart per call
    singles = torch.stack([pgd(model, x, y, eps, steps=3, generator=gen) for _ in range(3)])  # [R, N, ...]
    with torch.no_grad():
        fooled = torch.stack([model(s).argmax(1) != y for s in singles])  # [R, N]
        losses = torch.stack([F.cross_entropy(model(s), y, reduction="none") for s in singles])  # [R, N]
        multi_fooled = model(multi).argmax(1) != y
        multi_loss = F.cross_entropy(model(multi), y, reduction="none")
    any_fooled = fooled.any(0)
    assert 0 < any_fooled.sum() < len(y), "pick eps/steps so that restarts matter"
    assert (fooled.any(0) != fooled.all(0)).any(), "some examples must be fooled by only some restarts"
    assert torch.equal(multi_fooled, any_fooled)
    eligible = torch.where(fooled == any_fooled, losses, torch.full_like(losses, -1e9))
    assert torch.allclose(multi_loss, eligible.amax(0), atol=1e-5)


def test_targeted_moves_toward_target(trained):
    model, x, y = trained
    x, y = x[:128], y[:128]
    target = (y + 1) % 10
    x_adv = pgd(model, x, target, 32 / 255, steps=20, targeted=True)
    hit_clean = (predict_labels(model, x) == target).float().mean()
    hit_adv = (predict_labels(model, x_adv) == target).float().mean()
    assert hit_adv > hit_clean + 0.3
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), target) < F.cross_entropy(model(x), target)


@pytest.mark.parametrize("norm,eps", [("linf", 12 / 255), ("l2", 1.0)])
def test_pgd_matches_art_pgd(trained, norm, eps):
    from robust_mim.attacks.art import art_pgd

    model, x, y = trained
    ours = acc(model, pgd(model, x, y, eps, norm=norm, steps=10, step_size=2.5 * eps / 10,
                          generator=torch.Generator().manual_seed(0)), y)
    theirs = acc(model, art_pgd(model, x, y, eps, norm=norm, steps=10, step_size=2.5 * eps / 10,
                                generator=torch.Generator().manual_seed(0)), y)
    assert 0.1 < theirs < 0.9, "eps must leave robust accuracy away from 0 and 1"
    assert abs(ours - theirs) <= 0.02, (ours, theirs)


def test_eot_finds_at_least_as_many_as_single_draw(trained):
    model, x, y = trained
    noisy, x, y = NoisyInput(model, sigma=0.4), x[:160], y[:160]

    def success(x_adv):  # fraction of examples misclassified, averaged over 16 noise draws
        torch.manual_seed(123)
        return sum((predict_labels(noisy, x_adv) != y).float().mean().item() for _ in range(16)) / 16

    torch.manual_seed(0)
    single = pgd(noisy, x, y, 16 / 255, steps=10, eot_samples=1, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    eot = pgd(noisy, x, y, 16 / 255, steps=10, eot_samples=8, generator=torch.Generator().manual_seed(0))
    assert success(eot) >= success(single)
    assert success(eot) > success(x) + 0.1


def test_eot_wrapper_averages_probabilities(trained):
    model, x, _ = trained
    wrapped = ExpectationOverTransformation(model, samples=3)  # deterministic model: same as softmax
    with torch.no_grad():
        assert torch.allclose(wrapped(x[:8]).exp(), F.softmax(model(x[:8]), 1), atol=1e-5)


def test_bpda_passes_gradients_through_rounding(trained):
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    quantize(x).sum().backward()
    assert torch.count_nonzero(x.grad) == 0  # rounding masks the gradient
    x.grad = None
    out = BPDA(quantize)(x)
    out.sum().backward()
    assert torch.equal(out.detach(), quantize(x.detach())) and torch.all(x.grad == 1)
    assert torch.equal(straight_through(x, quantize(x)).detach(), quantize(x.detach()))
    model, xs, ys = trained
    masked, bpda = Quantized(model, quantize), Quantized(model, BPDA(quantize))
    gen = torch.Generator().manual_seed(0)
    acc_masked = acc(masked, pgd(masked, xs, ys, 32 / 255, steps=10, random_start=False), ys)
    acc_bpda = acc(masked, pgd(bpda, xs, ys, 32 / 255, steps=10, generator=gen), ys)
    assert acc_bpda < acc_masked - 0.2


@pytest.mark.parametrize("call", [
    lambda m, x, y: pgd(m, x, y, -0.1),
    lambda m, x, y: pgd(m, x, y, 0.1, norm="l3"),
    lambda m, x, y: pgd(m, x, y, 0.1, loss="hinge"),
    lambda m, x, y: pgd(m, x, y[:-1], 0.1),
    lambda m, x, y: pgd(m, x, y.float(), 0.1),
    lambda m, x, y: pgd(m, x * 2 - 0.5, y, 0.1),
    lambda m, x, y: pgd(m, x, y, 0.1, steps=0),
    lambda m, x, y: fgsm(m, x, y, float("nan")),
    lambda m, x, y: ATTACKS.get("deepfool"),
    lambda m, x, y: apgd(m, x, y, 0.1, "l1"),
    lambda m, x, y: apgd(m, x, y, 0.1, loss="mse"),
    lambda m, x, y: autoattack_style(m, x, y, 0.1, components=("fab",)),
])
def test_bad_inputs_raise_attack_input_error(trained, call):
    model, x, y = trained
    with pytest.raises(AttackInputError) as err:
        call(model, x[:4], y[:4])
    assert "\n" not in str(err.value) and str(err.value)


def test_registry_names_and_eps_zero(trained):
    model, x, y = trained
    for name in ("fgsm", "pgd", "art-pgd", "apgd-ce", "apgd-dlr", "apgd-dlr-targeted", "square", "autoattack-style"):
        assert name in ATTACKS
    assert torch.equal(ATTACKS.get("pgd")(model, x[:4], y[:4], eps=0.0), x[:4])


def test_art_attacks_respect_ball_and_quiet(trained, capsys):
    model, x, y = trained
    x, y, eps = x[:32], y[:32], 16 / 255
    for x_adv in (apgd(model, x, y, eps, steps=5), square(model, x, y, eps, queries=20),
                  apgd(model, x, y, 1.0, "l2", loss="dlr", steps=5)):
        assert x_adv.min() >= 0 and x_adv.max() <= 1 and x_adv.shape == x.shape
    assert (apgd(model, x, y, eps, steps=5) - x).abs().max() <= eps + 1e-6
    assert "it/s" not in capsys.readouterr().err  # no tqdm bars unless verbose


def test_autoattack_style_keeps_worst_case_and_reports_components(trained):
    model, x, y = trained
    x, y, eps = x[:48], y[:48], 16 / 255
    torch.manual_seed(0)
    x_adv, info = autoattack_style(model, x, y, eps, steps=5, n_target_classes=2, queries=20,
                                   generator=torch.Generator().manual_seed(0))
    assert info["attack"] == "APGD-CE + APGD-DLR-T + Square (ART)" and not info["notes"]
    curve = list(info["robust_accuracy"].values())  # clean, after each component
    assert curve == sorted(curve, reverse=True) and len(curve) == 4
    assert abs(acc(model, x_adv, y) - curve[-1]) < 1e-6
    assert (x_adv - x).abs().max() <= eps + 1e-6


def test_autoattack_style_falls_back_below_four_classes(trained):
    model, x, y = trained
    keep = y < 3
    three = FirstClasses(model, 3)
    _, info = autoattack_style(three, x[keep][:24], y[keep][:24], 16 / 255, steps=3, queries=10)
    assert info["components"] == ["apgd-ce", "apgd-dlr", "square"]
    assert "untargeted" in info["notes"][0] and info["attack"] == "APGD-CE + APGD-DLR + Square (ART)"
