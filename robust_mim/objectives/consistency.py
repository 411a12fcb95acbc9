"""Fine-tuning losses for randomized smoothing (DMAE, Wu et al., ICLR 2023).

DMAE fine-tunes its encoder as the base classifier of a Gaussian-smoothed model with the
consistency regularization of Jeong & Shin, "Consistency Regularization for Certified
Robustness of Smoothed Classifiers" (NeurIPS 2020). ``gaussian_augmentation_loss`` is the
plain Gaussian-noise training of Cohen et al. (2019), the baseline both papers compare with.
Noise is added in ``[0, 1]`` pixel space without clamping, matching certification.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robust_mim.errors import ConfigError


def gaussian_augmentation_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """Cohen et al. (2019) training: cross-entropy of f(x + ε), ε ~ N(0, σ² I).

    Args:
        model: classifier, ``[N, 3, H, W]`` in ``[0, 1]`` → logits ``[N, K]``.
        x: images ``[N, 3, H, W]`` in ``[0, 1]``.
        y: labels ``[N]`` or soft targets ``[N, K]``.
        sigma: noise standard deviation in pixel units.
        generator: optional generator on x's device.

    Returns:
        Scalar mean cross-entropy.
    """
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return F.cross_entropy(model(x + sigma * noise), y)


def consistency_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float,
                     num_noise: int = 2, lbd: float = 2.0, eta: float = 0.5,
                     generator: torch.Generator | None = None,
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """Consistency-regularized Gaussian training (Jeong & Shin, 2020), as DMAE fine-tunes.

    With m = ``num_noise`` noisy copies x + ε_i and softmax outputs p_i, p̄ = (1/m) Σ_i p_i:

        loss = (1/m) Σ_i CE(f(x + ε_i), y) + λ · (1/m) Σ_i KL(p̄ ‖ p_i) + η · H(p̄),

    each term averaged over the batch — the official code's ``loss='default'`` form, where
    ``KL(p̄ ‖ p_i)`` is ``F.kl_div(log_softmax_i, p̄)`` summed over classes. The m copies are
    concatenated into one forward pass of m·N images (copy-major: rows ``i*N .. i*N+N-1`` are
    copy i). DMAE's defaults are m = 2, λ = 2.0, η = 0.5, and η = 0.1 at σ = 1.0.

    Args:
        model: classifier, ``[B, 3, H, W]`` in ``[0, 1]`` → logits ``[B, K]``.
        x: images ``[N, 3, H, W]`` in ``[0, 1]``.
        y: labels ``[N]`` or soft targets ``[N, K]`` (MixUp/CutMix/label smoothing).
        sigma: noise standard deviation in pixel units.
        num_noise: m, noisy copies per image (>= 1; the KL term vanishes at m = 1).
        lbd: λ, weight of the KL consistency term.
        eta: η, weight of the entropy of the averaged prediction.
        generator: optional generator on x's device.

    Returns:
        The scalar loss and its components ``{"loss", "ce", "kl", "entropy"}`` as floats.
    """
    if num_noise < 1:
        raise ConfigError(f"consistency_loss needs num_noise >= 1, got {num_noise}")
    n = x.shape[0]
    copies = x.repeat(num_noise, 1, 1, 1)  # [m*N, 3, H, W]
    noise = torch.randn(copies.shape, generator=generator, device=x.device, dtype=x.dtype)
    logits = model(copies + sigma * noise)  # [m*N, K]
    targets = y.repeat(num_noise, *[1] * (y.ndim - 1))  # copy-major: labels [m*N] or soft targets [m*N, K]
    ce = F.cross_entropy(logits, targets)
    log_p = F.log_softmax(logits, dim=1).view(num_noise, n, -1)  # [m, N, K]
    p_avg = log_p.exp().mean(dim=0)  # [N, K]
    kl = F.kl_div(log_p, p_avg.expand_as(log_p), reduction="none").sum(-1).mean()  # KL(p̄ ‖ p_i)
    entropy = -(p_avg * p_avg.clamp_min(1e-20).log()).sum(-1).mean()
    loss = ce + lbd * kl + eta * entropy
    parts = torch.stack([loss, ce, kl, entropy]).detach().tolist()  # one device sync
    return loss, dict(zip(("loss", "ce", "kl", "entropy"), parts))
