"""Randomized-smoothing certification (Cohen et al., 2019): robust_mim.certify."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import beta, norm
from torch import nn

from robust_mim.certify import (
    ABSTAIN,
    GaussianNoiseEnsemble,
    Smooth,
    certified_accuracy,
    certify_dataset,
    lower_confidence_bound,
    max_certifiable_radius,
)
from robust_mim.errors import ConfigError

SHAPE = (3, 16, 16)
DIM = math.prod(SHAPE)


class ConstantClassifier(nn.Module):
    """Always predicts class ``c`` whatever the input."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.c, self.num_classes = c, num_classes
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        logits = torch.zeros(len(x), self.num_classes)
        logits[:, self.c] = 1.0
        return logits


class FirstPixelSplit(nn.Module):
    """Class 1 when the first pixel exceeds 0.5, else class 0 (p = 1/2 each at pixel 0.5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        above = (x[:, 0, 0, 0] > 0.5).float()
        return torch.stack([1 - above, above, torch.zeros_like(above) - 1], dim=1)


class RandomClassifier(nn.Module):
    """Ignores its input and returns a uniformly random class."""

    def __init__(self, num_classes: int, seed: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rand(len(x), self.num_classes, generator=self.gen)


class AnyNegativePixel(nn.Module):
    """Class 1 when some pixel is below 0 (only possible if noise is not clamped)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        neg = (x.flatten(1).min(dim=1).values < 0).float()
        return torch.stack([1 - neg, neg], dim=1)


def linear_model(scale: float = 1.0, seed: int = 0) -> tuple[nn.Module, torch.Tensor, float]:
    """Two-class linear model: logit_1 - logit_0 = scale * (w·x + b), ‖w‖ = 1.

    Returns the model, w [DIM] and b. For this model the smoothed classifier is exact:
    P(f(x + ε) = 1) = Φ((w·x + b) / σ), and the distance to the boundary is |w·x + b|.
    """
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(DIM, generator=gen)
    w = w / w.norm()
    b = -0.5 * float(w.sum())  # the constant 0.5 image sits on the boundary
    linear = nn.Linear(DIM, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.stack([torch.zeros(DIM), scale * w]))
        linear.bias.copy_(torch.tensor([0.0, scale * b]))
    return nn.Sequential(nn.Flatten(), linear), w, b


def image_at_margin(w: torch.Tensor, margin: float) -> torch.Tensor:
    """An image [3, 16, 16] at signed distance ``margin`` from the linear model's boundary."""
    return (0.5 + margin * w).view(SHAPE)


def radius_band(p_true: float, n: int, alpha: float, sigma: float,
                sds: float = 5.0) -> tuple[float, float]:
    """The radii CERTIFY returns when its estimation count lies within ``sds`` binomial SDs."""
    sd = math.sqrt(n * p_true * (1 - p_true))
    lo = max(0, math.floor(n * p_true - sds * sd))
    hi = min(n, math.ceil(n * p_true + sds * sd))

    def to_radius(k: int) -> float:
        return sigma * norm.ppf(max(lower_confidence_bound(k, n, alpha), 0.5))

    return to_radius(lo), to_radius(hi)


# ----------------------------------------------------------------------------- statistics


def test_lower_confidence_bound_matches_beta_quantile_and_is_monotone():
    n, alpha = 100, 0.001
    bounds = [lower_confidence_bound(k, n, alpha) for k in range(n + 1)]
    for k in range(1, n + 1):
        assert bounds[k] == pytest.approx(beta.ppf(alpha, k, n - k + 1), rel=1e-12)
    assert bounds[0] == 0.0
    assert all(b1 < b2 for b1, b2 in zip(bounds, bounds[1:]))
    assert all(bound < k / n for k, bound in enumerate(bounds) if k > 0)  # a lower bound
    assert bounds[n] == pytest.approx(alpha ** (1 / n), rel=1e-12)


def test_lower_confidence_bound_matches_statsmodels_if_installed():
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for k, n in [(1, 10), (37, 50), (990, 1000)]:
        expected = proportion.proportion_confint(k, n, alpha=2 * 0.001, method="beta")[0]
        assert lower_confidence_bound(k, n, 0.001) == pytest.approx(expected, rel=1e-10)


def test_max_certifiable_radius_formula_and_growth():
    sigma, alpha = 0.5, 0.001
    assert max_certifiable_radius(sigma, 100_000, alpha) == pytest.approx(
        sigma * norm.ppf(alpha ** (1 / 100_000)), rel=1e-12)
    radii = [max_certifiable_radius(sigma, n, alpha) for n in (100, 1000, 10_000)]
    assert radii[0] < radii[1] < radii[2]


def test_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError):
        lower_confidence_bound(5, 3, 0.01)
    with pytest.raises(ConfigError):
        lower_confidence_bound(1, 3, 1.5)
    with pytest.raises(ConfigError):
        Smooth(ConstantClassifier(0, 3), num_classes=3, sigma=0.0)
    smooth = Smooth(ConstantClassifier(0, 3), num_classes=3, sigma=0.25)
    with pytest.raises(ConfigError):
        smooth.certify(torch.zeros(1, *SHAPE), 10, 10, 0.001, 4)


# ----------------------------------------------------------------------------- PREDICT / CERTIFY


def test_constant_classifier_certifies_its_class_at_the_max_radius():
    c, sigma, n, alpha = 2, 0.25, 500, 0.001
    model = ConstantClassifier(c, num_classes=4)
    smooth = Smooth(model, num_classes=4, sigma=sigma)
    prediction, radius = smooth.certify(torch.rand(SHAPE), n0=7, n=n, alpha=alpha, batch_size=64)
    assert prediction == c
    assert radius == pytest.approx(sigma * norm.ppf(alpha ** (1 / n)), rel=1e-9)
    assert radius == pytest.approx(max_certifiable_radius(sigma, n, alpha), rel=1e-12)
    assert sum(model.calls) == 7 + n and max(model.calls) == 64  # batched, every sample drawn
    assert smooth.predict(torch.rand(SHAPE), n=50, alpha=alpha, batch_size=16) == c


def test_fifty_fifty_classifier_abstains():
    smooth = Smooth(FirstPixelSplit(), num_classes=3, sigma=0.25)
    x = torch.full(SHAPE, 0.5)
    gen = torch.Generator().manual_seed(0)
    assert smooth.certify(x, 100, 1000, 0.001, 250, generator=gen) == (ABSTAIN, 0.0)
    assert smooth.predict(x, 1000, 0.001, 250, generator=gen) == ABSTAIN


def test_random_classifier_abstains():
    smooth = Smooth(RandomClassifier(num_classes=10, seed=0), num_classes=10, sigma=0.5)
    x = torch.rand(SHAPE)
    assert smooth.certify(x, 100, 1000, 0.001, 200) == (ABSTAIN, 0.0)
    assert smooth.predict(x, 1000, 0.001, 200) == ABSTAIN


def test_noise_is_not_clamped_to_the_image_range():
    smooth = Smooth(AnyNegativePixel(), num_classes=2, sigma=0.25)
    assert smooth.predict(torch.zeros(SHAPE), 100, 0.001, 50) == 1


def test_certified_radius_matches_the_exact_smoothed_linear_classifier():
    model, w, _ = linear_model()
    sigma, n, alpha = 0.5, 2000, 0.001
    smooth = Smooth(model, num_classes=2, sigma=sigma)
    gen = torch.Generator().manual_seed(1)
    for margin in (0.3, -0.6, 1.0):
        prediction, radius = smooth.certify(image_at_margin(w, margin), 100, n, alpha, 500, gen)
        assert prediction == int(margin > 0)
        lo, hi = radius_band(norm.cdf(abs(margin) / sigma), n, alpha, sigma)
        assert lo <= radius <= hi
        assert radius < abs(margin)  # the certificate never exceeds the true distance


def test_same_generator_seed_gives_the_same_certificate_and_restores_train_mode():
    model, w, _ = linear_model()
    model.train()
    smooth = Smooth(model, num_classes=2, sigma=0.5)
    x = image_at_margin(w, 0.2)
    first = smooth.certify(x, 50, 300, 0.001, 64, torch.Generator().manual_seed(3))
    second = smooth.certify(x, 50, 300, 0.001, 64, torch.Generator().manual_seed(3))
    assert first == second
    assert model.training


def test_agrees_with_adversarial_robustness_toolbox():
    pytest.importorskip("statsmodels")  # ART's Clopper–Pearson bound needs it
    rs = pytest.importorskip("art.estimators.certification.randomized_smoothing")
    model, w, _ = linear_model()
    sigma, n0, n, alpha = 0.5, 100, 2000, 0.001
    margins = [0.25, -0.5, 0.8, 0.0]
    x = torch.stack([image_at_margin(w, m) for m in margins])  # [4, 3, 16, 16]
    art_model = rs.PyTorchRandomizedSmoothing(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=SHAPE, nb_classes=2,
        sample_size=n0, scale=sigma, alpha=alpha, device_type="cpu")
    np.random.seed(0)
    torch.manual_seed(0)
    art_pred, art_radius = art_model.certify(x.numpy(), n=n, batch_size=500)
    smooth = Smooth(model, num_classes=2, sigma=sigma)
    gen = torch.Generator().manual_seed(0)
    for i, margin in enumerate(margins):
        ours_pred, ours_radius = smooth.certify(x[i], n0, n, alpha, 500, gen)
        assert ours_pred == int(art_pred[i])
        if margin == 0.0:
            assert ours_pred == ABSTAIN and art_radius[i] == 0.0
            continue
        lo, hi = radius_band(norm.cdf(abs(margin) / sigma), n, alpha, sigma)
        assert lo <= ours_radius <= hi and lo <= float(art_radius[i]) <= hi
        assert abs(ours_radius - float(art_radius[i])) <= hi - lo


# ----------------------------------------------------------------------------- datasets


def test_certify_dataset_rows_and_certified_accuracy_curve():
    model, w, _ = linear_model()
    sigma, n, alpha = 0.5, 500, 0.001
    margins = [0.9, 0.5, 0.2, -0.4, -1.2, 0.0, 0.7, -0.05]
    x = torch.stack([image_at_margin(w, m) for m in margins])
    y = torch.tensor([1, 1, 0, 0, 0, 1, 1, 1])  # the third and last are wrong labels
    rows = certify_dataset(Smooth(model, 2, sigma), x, y, 50, n, alpha, 250,
                           torch.Generator().manual_seed(0))
    assert [row["idx"] for row in rows] == list(range(len(margins)))
    for row, margin in zip(rows, margins):
        assert set(row) == {"idx", "label", "predict", "radius", "correct", "time_s"}
        assert row["correct"] == int(row["predict"] == row["label"]) and row["time_s"] > 0
        if row["predict"] == ABSTAIN:
            assert row["radius"] == 0.0
        else:
            assert row["predict"] == int(margin > 0) and 0 <= row["radius"] < abs(margin)
    radii = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0, max_certifiable_radius(sigma, n, alpha) + 1e-9]
    curve = certified_accuracy(rows, radii)
    values = [curve[r] for r in radii]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[0] == sum(r["correct"] for r in rows) / len(rows) > values[3]
    assert values[-1] == 0.0


# ----------------------------------------------------------------------------- soft smoothing


def test_gaussian_noise_ensemble_is_differentiable_and_agrees_with_predict():
    torch.manual_seed(0)
    model, w, _ = linear_model(scale=4.0)
    sigma = 0.25
    soft = GaussianNoiseEnsemble(model, sigma=sigma, samples=32)
    margins = [0.5, -0.5, 0.8, -0.3]
    x = torch.stack([image_at_margin(w, m) for m in margins]).requires_grad_(True)
    log_probs = soft(x)  # [4, 2]
    assert log_probs.shape == (4, 2)
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(4), atol=1e-5)
    log_probs[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    smooth = Smooth(model, num_classes=2, sigma=sigma)
    expected = [smooth.predict(xi.detach(), 1000, 0.001, 500) for xi in x]
    assert log_probs.argmax(1).tolist() == expected == [int(m > 0) for m in margins]
