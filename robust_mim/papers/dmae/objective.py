"""Fine-tuning methods for Gaussian-smoothed classifiers (paper 3: DMAE, Wu et al., ICLR 2023).

Two registered ``FINETUNE`` methods train the base classifier f of the smoothed classifier
g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ² I), at the σ it will be certified with:

- ``gaussian``: Gaussian data augmentation (Cohen et al., 2019) — cross-entropy of f(x + δ).
  From scratch this is the "Cohen RS" baseline; from a MAE/DMAE encoder it is the paper's
  "+ Gaussian fine-tuning" rows.
- ``consistency``: DMAE's fine-tuning, Gaussian augmentation with the consistency
  regularization of Jeong & Shin (NeurIPS 2020): m = 2 noisy copies, λ = 2, η = 0.5
  (η = 0.1 at σ = 1.0, as in the official FINETUNE.md).

σ is in ``[0, 1]`` pixel units (normalisation is inside the model), noise is not clamped —
exactly the noise `robust_mim.certify.Smooth` certifies with. The losses themselves live in
`robust_mim.objectives.consistency`.
"""
from __future__ import annotations

from robust_mim.errors import ConfigError
from robust_mim.objectives import FINETUNE, Step
from robust_mim.objectives.consistency import consistency_loss, gaussian_augmentation_loss

LARGE_SIGMA = 1.0  # from this σ on, DMAE lowers the entropy weight η to ETA_LARGE_SIGMA
ETA_DEFAULT, ETA_LARGE_SIGMA = 0.5, 0.1


def default_eta(sigma: float) -> float:
    """DMAE's entropy weight η for noise level σ: 0.5 for σ in {0.25, 0.5}, 0.1 for σ = 1.0."""
    return ETA_LARGE_SIGMA if sigma >= LARGE_SIGMA else ETA_DEFAULT


def _check_sigma(method: str, sigma: float) -> None:
    if not sigma > 0:
        raise ConfigError(f"fine-tuning method '{method}' needs sigma > 0 (pixel units), got {sigma}")


@FINETUNE.register("gaussian")
def _gaussian(sigma: float) -> Step:
    """Cohen et al. (2019) Gaussian augmentation at ``sigma``; logs the cross-entropy."""
    _check_sigma("gaussian", sigma)

    def step(model, x, y):
        loss = gaussian_augmentation_loss(model, x, y, float(sigma))
        return loss, {"ce": loss.item()}
    return step


@FINETUNE.register("consistency")
def _consistency(sigma: float, num_noise: int, lbd: float, eta: float | None) -> Step:
    """Consistency-regularized Gaussian training (DMAE fine-tuning); ``eta=None`` → `default_eta`."""
    _check_sigma("consistency", sigma)
    eta = default_eta(sigma) if eta is None else eta
    if num_noise < 1 or lbd < 0 or eta < 0:
        raise ConfigError(f"fine-tuning method 'consistency' needs num_noise >= 1, lbd >= 0 and eta >= 0, "
                          f"got {num_noise}, {lbd}, {eta}")
    return lambda model, x, y: consistency_loss(model, x, y, float(sigma), int(num_noise), float(lbd), float(eta))
