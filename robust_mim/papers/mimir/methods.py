"""Registered steps of MIMIR (Xu et al.): the pretraining objective and adversarial fine-tuning.

- PRETRAIN ``mimir``: the MAE encoder sees x′ (1-step L∞ PGD ascending the MAE loss,
  ε = 8/255, step 10/255, random start, a fresh mask per forward), the decoder reconstructs
  the clean x on the masked patches, plus λ · HSIC(latent, x′) (λ = 1e-5). The penalty uses
  the official estimator ``hsic_normalized_cca`` by default (training fidelity); the bounded
  kernel-alignment nHSIC ∈ [0, 1] is logged beside it as ``hsic_bounded`` because the CCA
  value mostly counts Gram eigenvalues and is a poor measure of dependence (see
  `robust_mim.papers.mimir.hsic`). ``lam: 0`` is the ablation "adversarial MAE without HSIC".
MIMIR's fine-tuning, PGD-AT (and TRADES), is shared: FINETUNE ``pgd_at`` / ``trades`` in
`robust_mim.objectives` (Chen et al. fine-tune with it too).

Settings arrive from the config in 1/255 units (``eps_255``, ``step_255``); the inner attack's
step count is a setting, so a profile that uses fewer steps says so in its config and every
record of the run (the run's ``method`` is copied into the records).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from robust_mim.errors import ConfigError
from robust_mim.models.mim import MaskedAutoencoder
from robust_mim.objectives import PRETRAIN, Step
from robust_mim.papers.mimir.hsic import (
    OFFICIAL_SIGMA,
    HSICFn,
    hsic_normalized,
    hsic_normalized_cca,
    mimir_adversarial_input,
    mimir_loss,
)

HSIC_ESTIMATORS: dict[str, HSICFn] = {"cca": hsic_normalized_cca, "normalized": hsic_normalized}


def hsic_estimator(name: str) -> HSICFn:
    """``"cca"`` (official training penalty) or ``"normalized"`` (bounded nHSIC); else ConfigError."""
    if name not in HSIC_ESTIMATORS:
        raise ConfigError(f"unknown HSIC estimator '{name}' (known: {', '.join(HSIC_ESTIMATORS)})")
    return HSIC_ESTIMATORS[name]


def mimir_adversarial_example(mae: MaskedAutoencoder, x: Tensor, eps: float = 8 / 255, step_size: float = 10 / 255,
                              attack_steps: int = 1, mask_ratio: float = 0.75) -> Tensor:
    """MIMIR's pretraining attack on ``mae``: x′ ascending the MAE loss of reconstructing the clean x.

    Each loss evaluation draws a fresh random mask (torch's global RNG); random start in the
    ε-ball; parameter gradients are not touched.

    Args:
        mae: the masked autoencoder (its mode is left as is).
        x: clean images [N, 3, H, W] in [0, 1].

    Returns:
        Detached x′ [N, 3, H, W] in [0, 1] with ‖x′ − x‖∞ ≤ ε.
    """
    def mae_loss_of_input(x_in: Tensor) -> Tensor:
        return mae(x_in, x, mask_ratio=mask_ratio, loss_on="masked")[0]  # fresh mask, clean target

    return mimir_adversarial_input(mae_loss_of_input, x, eps, step_size, random_start=True, steps=attack_steps)


def mimir_objective(mae: MaskedAutoencoder, x: Tensor, *, eps: float = 8 / 255, step_size: float = 10 / 255,
                    attack_steps: int = 1, mask_ratio: float = 0.75, lam: float = 1e-5,
                    sigma: float | None = OFFICIAL_SIGMA, hsic: str = "cca") -> tuple[Tensor, dict[str, float]]:
    """MIMIR: L_MAE(x′ → x) + λ · HSIC(z(x′), x′), with x′ from `mimir_adversarial_example`.

    The attack's loss evaluations and the final forward each draw a fresh random mask (torch's
    global RNG, which the engine seeds and checkpoints); the target is always the clean x.

    Args:
        mae: the masked autoencoder being trained (its mode is left as is).
        x: clean images [N, 3, H, W] in [0, 1].
        eps, step_size: the pretraining attack's L∞ radius and step (pixel units).
        attack_steps: PGD steps of the pretraining attack (MIMIR: 1).
        mask_ratio: fraction of patches removed (MAE: 0.75).
        lam: λ, weight of the HSIC penalty; 0 trains adversarial MAE without it.
        sigma: Gaussian kernel width per feature dimension (official 5.0); None = median.
        hsic: estimator of the penalty, "cca" (official) or "normalized".

    Returns:
        (loss, {"recon", "hsic" (the penalty's estimator), "hsic_bounded" (nHSIC ∈ [0, 1]),
        "total"}).
    """
    x_adv = mimir_adversarial_example(mae, x, eps, step_size, attack_steps, mask_ratio)
    recon, _, _, latent = mae(x_adv, x, mask_ratio=mask_ratio, loss_on="masked")  # latent [N, 1+L_keep, D]
    total, parts = mimir_loss(recon, latent, x_adv, lam, sigma=sigma, hsic_fn=hsic_estimator(hsic))
    if hsic != "normalized":
        with torch.no_grad():
            parts["hsic_bounded"] = float(hsic_normalized(latent.detach(), x_adv, sigma, sigma))
    else:
        parts["hsic_bounded"] = parts["hsic"]
    return total, parts


@PRETRAIN.register("mimir")
def _mimir(eps_255: float, step_255: float, attack_steps: int, mask_ratio: float, lam: float, sigma: float | None,
           hsic: str) -> Step:
    hsic_estimator(hsic)  # fail at build time on a bad name
    if lam < 0 or attack_steps < 0:
        raise ConfigError(f"mimir needs lam >= 0 and attack_steps >= 0, got {lam} and {attack_steps}")

    def step(mae: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        return mimir_objective(mae, x, eps=eps_255 / 255, step_size=step_255 / 255, attack_steps=attack_steps,
                               mask_ratio=mask_ratio, lam=lam, sigma=sigma, hsic=hsic)

    return step


def pretraining_role(objective: dict[str, Any] | None) -> str:
    """Role of the encoder's pretraining in MIMIR's comparison: scratch, mae, mimir-lam0, mimir."""
    if not objective:
        return "scratch"
    if objective["name"] == "mimir":
        return "mimir-lam0" if float(objective.get("lam", 1e-5)) == 0 else "mimir"
    return objective["name"]
