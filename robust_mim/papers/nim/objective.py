"""NIM / De³ (You et al., NeurIPS 2023): classifiers trained and evaluated on denoised images.

Noisy image modeling (NIM) pretrains a `MaskedAutoencoder` to map ``x + σ·n`` back to the
clean ``x`` (`robust_mim.objectives.mim.nim_objective`, σ drawn per image). Its decoder is
then a denoiser, and the paper's defense De³ (`robust_mim.defenses.De3`) classifies
``denoise(x + σ_test·n)``. For the classifier to see images like those at test time, the
paper fine-tunes it on *denoised* images: σ ~ U(0, 30)/255 per image, noise added, the frozen
NIM autoencoder reconstructs, the classifier trains on the reconstruction (official
``finetune.py``: ``--sigma_dist uniform --uniform_low 0 --uniform_high 30``).

This module registers that method as FINETUNE ``"denoised"`` and holds the σ_test trade-off
sweep (`sigma_tradeoff`) behind the paper's key figure.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from robust_mim.errors import ConfigError
from robust_mim.models.classifier import freeze
from robust_mim.models.mim import MaskedAutoencoder
from robust_mim.objectives import FINETUNE, Step, _check_aux, cross_entropy_step
from robust_mim.objectives.mim import SIGMA_SAMPLERS, add_gaussian_noise, sample_sigma


@torch.no_grad()
def denoised_images(denoiser: MaskedAutoencoder, x: Tensor, sigma: Tensor | float) -> Tensor:
    """Noise then denoise, without gradient: ``reconstruct(x + σ·n)`` in [0, 1].

    Args:
        denoiser: frozen (NIM-)pretrained autoencoder.
        x: clean images [N, 3, H, W] in [0, 1].
        sigma: noise level in pixel units, a float or per-image [N].

    Returns:
        denoised images [N, 3, H, W] in [0, 1], detached. A norm-pix denoiser's prediction is
        un-normalised with the per-patch statistics of the clean x (official ``finetune.py``).
    """
    return denoiser.reconstruct(add_gaussian_noise(x, sigma), reference=x).detach()


def denoised_step(model: nn.Module, x: Tensor, y: Tensor, denoiser: MaskedAutoencoder, sampler: str,
                  **sampler_args: float) -> tuple[Tensor, dict[str, float]]:
    """One De³ fine-tuning step: cross-entropy of ``model`` on denoised noisy images.

    σ is drawn per image by ``sampler`` (the method's schema default: σ·255 ~ U(0, 30)); the denoiser
    runs without gradient, so the loss backpropagates into ``model`` only.

    Args:
        model: classifier [N, 3, H, W] in [0, 1] -> logits [N, K] (being trained).
        x: clean images [N, 3, H, W] in [0, 1]; y: labels [N] or soft targets [N, K] (MixUp/CutMix;
            the reference fine-tunes with MixUp and CutMix on ImageNet).
        denoiser: frozen autoencoder (the run's ``denoiser``).
    """
    sigma = sample_sigma(x.shape[0], sampler, device=x.device, **sampler_args)  # [N]
    x_den = denoised_images(denoiser, x, sigma)  # [N, 3, H, W]
    loss, metrics = cross_entropy_step(model, x_den, y)
    return loss, {**metrics, "sigma_mean": sigma.mean().item()}


@FINETUNE.register("denoised")
def _denoised(denoiser: MaskedAutoencoder | None, sampler: str, concentration: float, scale_255: float,
              high_255: float, sigma_255: float) -> Step:
    _check_aux("denoised", denoiser=denoiser)
    if sampler not in SIGMA_SAMPLERS:
        raise ConfigError(f"unknown sigma sampler '{sampler}' (known: {', '.join(SIGMA_SAMPLERS)})")
    frozen = freeze(denoiser)
    args = {"concentration": concentration, "scale_255": scale_255, "high_255": high_255, "sigma_255": sigma_255}
    return lambda model, x, y: denoised_step(model, x, y, frozen, sampler, **args)


# ----------------------------------------------------------------------------- σ_test sweep


def pretraining_label(objective: dict[str, Any] | None) -> str:
    """Table name of a pretraining objective: ``MAE``, ``NIM-gamma``, ``NIM-uniform``, ``NIM-fixed``, ..."""
    if not objective:
        return "none"
    if objective["name"] == "nim":
        return f"NIM-{objective.get('sampler', 'gamma')}"
    return objective["name"].upper()



def sigma_sweep_entry(eps: float, steps: int, eot_samples: int, batch_size: int) -> dict[str, Any]:
    """Suite entry (`robust_mim.evaluation.suite`) of the sweep: clean (ε = 0) and L∞ PGD with EOT at ``eps``."""
    return {"name": "pgd-linf-eot", "attack": "pgd", "threat_model": "white-box", "norm": "linf",
            "eps": [0.0, float(eps)], "steps": steps, "restarts": 1, "eot_samples": eot_samples,
            "batch_size": batch_size}


def sigma_tradeoff(classifier: nn.Module, denoiser: MaskedAutoencoder, x: Tensor, y: Tensor,
                   sigmas_255: list[float], eps: float, *, steps: int, eot_samples: int,
                   batch_size: int, generator: torch.Generator | None = None,
                   degradation: str = "noise") -> list[dict[str, Any]]:
    """The paper's σ_test trade-off: clean and PGD-EOT accuracy of De³ at every degradation level.

    Each level builds `De3` (degrade → frozen denoiser → ``classifier``) and runs the shared
    evaluation (`robust_mim.evaluation.suite.run_suite`) with one entry: ε = 0 (clean) and L∞ PGD at
    ``eps`` whose gradients average ``eot_samples`` draws (1 draw where De³ is deterministic).
    ``degradation="noise"``: σ_test = v/255 for v in ``sigmas_255`` (NIM). ``"mask"``: the MAE
    baseline, masking at γ = v/100 and no noise (official ``eval_attack.py`` sweeps the MAE's
    ``sigma/100``); levels v >= 100 are skipped. Accuracies are single forward draws per example.

    Args:
        classifier: [N, 3, H, W] in [0, 1] -> logits [N, K], in eval mode.
        denoiser: frozen autoencoder of the De³ defense.
        x: images [N, 3, H, W] in [0, 1]; y: labels [N].
        sigmas_255: levels (σ_test in 1/255 units, or γ in 1/100 units).
        eps: L∞ radius of the attack in pixel units.

    Returns:
        one row per level × ε: ``{"degradation", "sigma_255", "sigma", "mask_ratio", "eot_samples",
        "eps", "accuracy", "n_correct", "n_examples"}`` (ε = 0 rows are clean accuracy).
    """
    from robust_mim.evaluation.suite import run_suite

    rows = []
    for level in _sweep_levels(sigmas_255, degradation):
        defended = _sweep_defense(classifier, denoiser, level)
        k = eot_samples if defended.randomized else 1
        entry = sigma_sweep_entry(eps, steps, k, batch_size)
        (result,) = run_suite(defended, x, y, [entry], randomized=defended.randomized, generator=generator)
        rows += [{**level, "eot_samples": k, **r} for r in result["rows"]]
    return rows


SWEEP_DEGRADATIONS = ("noise", "mask")


def _sweep_levels(values: list[float], degradation: str) -> list[dict[str, Any]]:
    """Sweep values → ``{"degradation", "sigma_255", "sigma", "mask_ratio"}`` per level."""
    if degradation == "noise":
        return [{"degradation": "noise", "sigma_255": float(v), "sigma": v / 255.0, "mask_ratio": 0.0} for v in values]
    if degradation == "mask":
        return [{"degradation": "mask", "sigma_255": 0.0, "sigma": 0.0, "mask_ratio": v / 100.0} for v in values if v < 100]
    raise ConfigError(f"unknown De³ degradation '{degradation}' (known: {', '.join(SWEEP_DEGRADATIONS)})")


def _sweep_defense(classifier: nn.Module, denoiser: MaskedAutoencoder, level: dict[str, Any]) -> nn.Module:
    from robust_mim.defenses import De3

    return De3(classifier, denoiser, level["sigma"], level["mask_ratio"]).eval()
