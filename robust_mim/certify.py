"""Randomized smoothing: Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via
Randomized Smoothing" (ICML 2019).

The smoothed classifier is ``g(x) = argmax_c P(f(x + δ) = c)`` with ``δ ~ N(0, σ² I)``, where
``f`` is any base classifier (``[N, 3, H, W]`` in ``[0, 1]`` → logits ``[N, K]``; normalisation
lives inside it). ``Smooth.predict`` and ``Smooth.certify`` are the paper's PREDICT and CERTIFY
Monte Carlo algorithms and keep its notation (n0, n, α, p_A, c_A). Noise is added in pixel
space without clamping, as in the paper, so σ is in ``[0, 1]`` pixel units.

``GaussianNoiseEnsemble`` is the differentiable "soft" smoothed classifier (log of the average
softmax over noise draws) that PGD-EOT attacks use against ``g`` (Salman et al., NeurIPS 2019).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from scipy.stats import beta, binomtest, norm
from torch import nn

from robust_mim.errors import ConfigError
from robust_mim.progress import Progress

ABSTAIN = -1  # the class Smooth returns when it abstains


# ----------------------------------------------------------------------------- statistics


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 − α) Clopper–Pearson lower confidence bound on a binomial proportion.

    With probability at least 1 − α over the n draws, the true success probability is at least
    the returned value. Equals ``proportion_confint(k, n, alpha=2α, method="beta")[0]``, the
    bound used by Cohen et al.

    Args:
        k: number of successes, 0 <= k <= n.
        n: number of draws, n >= 1.
        alpha: failure probability in (0, 1).
    """
    _check_counts(k, n, alpha)
    if k == 0:
        return 0.0
    return float(beta.ppf(alpha, k, n - k + 1))


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest L2 radius CERTIFY can return with n estimation samples: σ·Φ⁻¹(α^{1/n}).

    It is reached when all n noisy samples vote for the selected class, because the
    Clopper–Pearson lower bound of n successes in n draws is α^{1/n}.

    Args:
        sigma: noise standard deviation in pixel units.
        n: number of estimation samples.
        alpha: failure probability in (0, 1).
    """
    _check_counts(n, n, alpha)
    return sigma * float(norm.ppf(alpha ** (1.0 / n)))


def _check_counts(k: int, n: int, alpha: float) -> None:
    if n < 1 or not 0 <= k <= n:
        raise ConfigError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha}")


# ----------------------------------------------------------------------------- smoothing


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _module_device(model: nn.Module, fallback: torch.device) -> torch.device:
    """The device of the model's first parameter or buffer, else ``fallback``."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return fallback


class Smooth:
    """The smoothed classifier g of Cohen et al. (2019) around a base classifier f."""

    ABSTAIN = ABSTAIN

    def __init__(self, base_classifier: nn.Module, num_classes: int, sigma: float) -> None:
        """
        Args:
            base_classifier: maps ``[B, 3, H, W]`` images in ``[0, 1]`` to logits ``[B, K]``.
            num_classes: K, the number of classes.
            sigma: standard deviation σ > 0 of the Gaussian noise, in pixel units.
        """
        if sigma <= 0:
            raise ConfigError(f"smoothing sigma must be > 0, got {sigma}")
        if num_classes < 2:
            raise ConfigError(f"smoothing needs num_classes >= 2, got {num_classes}")
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.sigma = sigma

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int,
                generator: torch.Generator | None = None) -> int:
        """PREDICT: evaluate g at x, abstaining when the top class is not clearly ahead.

        With probability at least 1 − α over the noise, the returned class equals g(x) (or the
        method abstains). The top-two counts are compared with a two-sided binomial test
        (Hung & Fithian, 2019); if its p-value exceeds α the method abstains.

        Args:
            x: one image ``[3, H, W]`` in ``[0, 1]``.
            n: number of Monte Carlo noise samples.
            alpha: failure probability in (0, 1).
            batch_size: noisy copies per forward pass of the base classifier.
            generator: optional generator on the model's device, for reproducible noise.

        Returns:
            The predicted class, or ``ABSTAIN`` (-1).
        """
        counts = self._sample_noise(x, n, batch_size, generator)  # [K]
        top2 = torch.topk(counts, 2).indices.tolist()
        count1, count2 = int(counts[top2[0]]), int(counts[top2[1]])
        if binomtest(count1, count1 + count2, p=0.5).pvalue > alpha:
            return ABSTAIN
        return int(top2[0])

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                generator: torch.Generator | None = None) -> tuple[int, float]:
        """CERTIFY: g's prediction at x and an L2 radius within which it cannot change.

        With probability at least 1 − α over the noise, if the method does not abstain, the
        returned class equals g(x) and g(x + δ) = g(x) for every ‖δ‖₂ < radius. The n0 selection
        samples pick the guess c_A; n fresh samples give the Clopper–Pearson lower bound
        p_A on P(f(x + ε) = c_A), and the radius is σ·Φ⁻¹(p_A).

        Args:
            x: one image ``[3, H, W]`` in ``[0, 1]``.
            n0: number of selection samples.
            n: number of estimation samples (bounds the radius, see ``max_certifiable_radius``).
            alpha: failure probability in (0, 1).
            batch_size: noisy copies per forward pass of the base classifier.
            generator: optional generator on the model's device, for reproducible noise.

        Returns:
            ``(class, radius)``; ``(ABSTAIN, 0.0)`` when p_A < 1/2.
        """
        counts_selection = self._sample_noise(x, n0, batch_size, generator)  # [K]
        c_a = int(counts_selection.argmax())
        counts_estimation = self._sample_noise(x, n, batch_size, generator)  # [K]
        p_a = lower_confidence_bound(int(counts_estimation[c_a]), n, alpha)
        if p_a < 0.5:
            return ABSTAIN, 0.0
        return c_a, self.sigma * float(norm.ppf(p_a))

    def _sample_noise(self, x: torch.Tensor, num: int, batch_size: int,
                      generator: torch.Generator | None) -> torch.Tensor:
        """Class counts of f(x + ε) over ``num`` draws of ε ~ N(0, σ² I).

        Args:
            x: one image ``[3, H, W]``.
            num: number of noise draws (>= 1).
            batch_size: draws per forward pass.
            generator: optional generator on the model's device.

        Returns:
            int64 counts ``[K]`` on the CPU, summing to ``num``.
        """
        if x.dim() != 3:
            raise ConfigError(f"Smooth expects one image [3, H, W], got shape {tuple(x.shape)}")
        if num < 1 or batch_size < 1:
            raise ConfigError(f"need num >= 1 and batch_size >= 1, got {num}, {batch_size}")
        model = self.base_classifier
        x = x.to(_module_device(model, x.device))
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=x.device)
        with torch.inference_mode(), _eval_mode(model):
            for start in range(0, num, batch_size):
                b = min(batch_size, num - start)
                batch = x.unsqueeze(0).expand(b, *x.shape)  # [b, 3, H, W]
                noise = torch.randn(batch.shape, generator=generator, device=x.device,
                                    dtype=x.dtype)
                predictions = model(batch + self.sigma * noise).argmax(dim=1)  # [b]
                counts += torch.bincount(predictions, minlength=self.num_classes)
        return counts.cpu()


# ----------------------------------------------------------------------------- datasets


def certify_dataset(smooth: Smooth, x: torch.Tensor, y: torch.Tensor, n0: int, n: int,
                    alpha: float, batch_size: int,
                    generator: torch.Generator | None = None, progress: Progress | None = None,
                    done: list[dict] | None = None,
                    after_image: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Run CERTIFY on every image; one flat row per image, as in Cohen et al.'s output table.

    Args:
        smooth: the smoothed classifier.
        x: images ``[N, 3, H, W]`` in ``[0, 1]``.
        y: labels ``[N]``.
        n0, n, alpha, batch_size, generator: as in ``Smooth.certify``.
        progress: counts one unit per image certified in this call (the caller's log lines), if given.
        done: rows of the first images, certified before (a resumed run): certification goes on after them
            (the caller restores ``generator`` to its state after the last of them).
        after_image: called with all rows so far after each image (to save a resumable state).

    Returns:
        Rows ``{idx, label, predict, radius, correct, time_s}``; ``predict`` is -1 and
        ``radius`` 0.0 on abstention; ``correct`` is 1 when ``predict == label`` else 0.
    """
    if x.dim() != 4 or len(x) != len(y):
        raise ConfigError(f"need x [N, 3, H, W] and y [N], got {tuple(x.shape)}, {tuple(y.shape)}")
    rows = list(done or [])
    for idx in range(len(rows), len(x)):
        start = time.perf_counter()
        prediction, radius = smooth.certify(x[idx], n0, n, alpha, batch_size, generator)
        label = int(y[idx])
        rows.append({"idx": idx, "label": label, "predict": prediction, "radius": radius,
                     "correct": int(prediction == label),
                     "time_s": time.perf_counter() - start})
        if progress is not None:
            progress.update()
        if after_image is not None:
            after_image(rows)
    return rows


def certified_accuracy(rows: list[dict], radii: list[float]) -> dict[float, float]:
    """Certified accuracy at each radius: the fraction of rows that are correct with radius >= r.

    At r = 0 this is the smoothed classifier's clean accuracy counting abstentions as errors.
    The result is non-increasing in r.

    Args:
        rows: output of ``certify_dataset`` (needs the ``correct`` and ``radius`` keys).
        radii: L2 radii in pixel units.
    """
    if not rows:
        raise ConfigError("certified_accuracy needs at least one certified row")
    return {float(r): sum(1 for row in rows if row["correct"] and row["radius"] >= r) / len(rows)
            for r in radii}


# ----------------------------------------------------------------------------- attacks


class GaussianNoiseEnsemble(nn.Module):
    """Soft smoothed classifier: log of the softmax averaged over Gaussian noise draws.

    ``forward(x) = log( (1/S) Σ_s softmax(f(x + σ ε_s)) )`` with ε_s ~ N(0, I), fresh draws on
    every call. It is differentiable in x, so PGD with expectation over transformation can
    attack the smoothed classifier (Salman et al., 2019). The output is log-probabilities,
    usable anywhere logits are expected (cross-entropy of it is the NLL of the average).
    """

    def __init__(self, base: nn.Module, sigma: float, samples: int,
                 generator: torch.Generator | None = None) -> None:
        """
        Args:
            base: base classifier, ``[B, 3, H, W]`` in ``[0, 1]`` → logits ``[B, K]``.
            sigma: noise standard deviation σ >= 0 in pixel units.
            samples: S, noise draws per input (>= 1).
            generator: optional generator on the inputs' device, for reproducible noise.
        """
        super().__init__()
        if sigma < 0 or samples < 1:
            raise ConfigError(f"need sigma >= 0 and samples >= 1, got {sigma}, {samples}")
        self.base = base
        self.sigma = sigma
        self.samples = samples
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: images ``[N, 3, H, W]`` in ``[0, 1]``.

        Returns:
            log average softmax ``[N, K]``.
        """
        n = x.shape[0]
        copies = x.unsqueeze(0).expand(self.samples, *x.shape)  # [S, N, 3, H, W]
        copies = copies.reshape(-1, *x.shape[1:])  # [S*N, 3, H, W], copy-major
        noise = torch.randn(copies.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        probs = F.softmax(self.base(copies + self.sigma * noise), dim=1)  # [S*N, K]
        avg = probs.view(self.samples, n, -1).mean(dim=0)  # [N, K]
        return torch.log(avg.clamp_min(1e-20))


# ----------------------------------------------------------------------------- empirical check


def radius_grid(table_radii: list[float], max_radius: float, step: float = 0.05) -> list[float]:
    """Radii for a certified-accuracy curve: multiples of ``step`` up to the larger of the table's
    largest radius and ``max_radius``, plus the table radii and ``max_radius`` itself, sorted."""
    top = max([*table_radii, max_radius])
    grid = {round(k * step, 6) for k in range(int(top / step) + 1)}
    return sorted(grid | {float(r) for r in table_radii} | {float(max_radius)})


def certification_rows(rows: list[dict], table_radii: list[float], max_radius: float,
                       step: float = 0.05) -> list[dict]:
    """Certified accuracy on `radius_grid`, one flat row per radius.

    Each row: ``{radius, certified_accuracy, in_table, within_max_radius}``. Beyond
    ``max_radius`` (σ·Φ⁻¹(α^{1/n})) no image can be certified whatever the model, so those
    rows are 0 by construction of the sample size and flagged ``within_max_radius = False``.

    Args:
        rows: per-image rows of `certify_dataset`.
        table_radii: the radii of the paper's table (flagged ``in_table``).
        max_radius: the largest radius the sample size allows.
    """
    radii = radius_grid(table_radii, max_radius, step)
    accuracy = certified_accuracy(rows, radii)
    table = {round(float(r), 6) for r in table_radii}
    return [{"radius": r, "certified_accuracy": accuracy[r], "in_table": round(r, 6) in table,
             "within_max_radius": r <= max_radius + 1e-12} for r in radii]


def attack_certified_points(smooth: Smooth, x: torch.Tensor, y: torch.Tensor, radii: list[float], *,
                            factors: tuple[float, ...] = (1.0,), steps: int = 20, noise_samples: int = 32,
                            eot_samples: int = 1, n: int = 1000, alpha: float = 0.001,
                            batch_size: int = 1000, indices: list[int] | None = None,
                            generator: torch.Generator | None = None) -> list[dict]:
    """Empirical check of certificates: L2 PGD-EOT against g at (multiples of) each radius.

    For each image, PGD (`robust_mim.attacks.core.pgd`, L2 ball of radius ``factor · radius``,
    ``eot_samples`` passes per gradient) maximises the cross-entropy of the soft smoothed
    classifier `GaussianNoiseEnsemble` (``noise_samples`` draws of the same σ per pass); then
    PREDICT (n samples, α) evaluates g at the adversarial image. A certificate that holds means
    no attack inside the radius can make PREDICT return another class, except with probability
    about 2α (α for the certificate, α for PREDICT).

    Args:
        smooth: the smoothed classifier (its base classifier is attacked through the noise).
        x: images ``[M, 3, H, W]`` in ``[0, 1]`` that CERTIFY classified correctly.
        y: their labels ``[M]``.
        radii: their certified radii (``M`` floats > 0).
        factors: attack radii as multiples of the certified radius (> 1 shows the attack bites).
        steps, noise_samples, eot_samples: PGD steps, noise draws per pass, passes per step.
        n, alpha, batch_size: PREDICT at the adversarial image.
        indices: test-set index of each image, copied into the rows (default 0..M-1).
        generator: optional generator on the model's device (random starts and noise).

    Returns:
        One row per image × factor: ``{idx, label, radius, factor, eps, predict_adv, flipped,
        abstained}``; ``flipped`` is 1 when PREDICT returns a class other than the label.
    """
    from robust_mim.attacks.core import pgd

    device = _module_device(smooth.base_classifier, x.device)
    soft = GaussianNoiseEnsemble(smooth.base_classifier, smooth.sigma, noise_samples, generator)
    indices = list(range(len(x))) if indices is None else list(indices)
    rows = []
    with _eval_mode(smooth.base_classifier):
        for i, image, label, radius in zip(indices, x.to(device), y.to(device), radii):
            for factor in factors:
                eps = float(factor) * float(radius)
                x_adv = pgd(soft, image[None], label[None], eps, norm="l2", steps=steps,
                            eot_samples=eot_samples, generator=generator)  # [1, 3, H, W]
                pred = smooth.predict(x_adv[0], n, alpha, batch_size, generator)
                rows.append({"idx": i, "label": int(label), "radius": float(radius), "factor": float(factor),
                             "eps": eps, "predict_adv": pred, "abstained": int(pred == ABSTAIN),
                             "flipped": int(pred not in (ABSTAIN, int(label)))})
    return rows


def certificate_check(attack_rows: list[dict], alpha: float, confidence: float = 0.99) -> list[dict]:
    """Summarise `attack_certified_points` per factor and test the certificates.

    At factors <= 1 each flip has probability at most 2α if the certificates hold, so the check
    passes when the number of flips does not exceed the ``confidence`` quantile of
    Binomial(n_attacked, 2α); at factors > 1 flips are allowed (``passed`` is None).

    Returns:
        One row per factor: ``{factor, n_attacked, n_flipped, n_abstained, flipped_fraction,
        allowed_flips, passed}``.
    """
    from scipy.stats import binom

    out = []
    for factor in sorted({r["factor"] for r in attack_rows}):
        rows = [r for r in attack_rows if r["factor"] == factor]
        flipped = sum(r["flipped"] for r in rows)
        allowed = int(binom.ppf(confidence, len(rows), min(1.0, 2 * alpha))) if factor <= 1 else None
        out.append({"factor": factor, "n_attacked": len(rows), "n_flipped": flipped,
                    "n_abstained": sum(r["abstained"] for r in rows),
                    "flipped_fraction": flipped / len(rows), "allowed_flips": allowed,
                    "passed": None if allowed is None else flipped <= allowed})
    return out


__all__ = [
    "ABSTAIN", "Smooth", "lower_confidence_bound", "max_certifiable_radius",
    "certify_dataset", "certified_accuracy", "GaussianNoiseEnsemble",
    "radius_grid", "certification_rows", "attack_certified_points", "certificate_check",
]
