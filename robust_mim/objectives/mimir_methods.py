"""Registered steps of MIMIR (Xu et al.): the pretraining objective and adversarial fine-tuning.

- PRETRAIN ``mimir``: the MAE encoder sees x′ (1-step L∞ PGD ascending the MAE loss,
  ε = 8/255, step 10/255, random start, a fresh mask per forward), the decoder reconstructs
  the clean x on the masked patches, plus λ · HSIC(latent, x′) (λ = 1e-5). The penalty uses
  the official estimator ``hsic_normalized_cca`` by default (training fidelity); the bounded
  kernel-alignment nHSIC ∈ [0, 1] is logged beside it as ``hsic_bounded`` because the CCA
  value mostly counts Gram eigenvalues and is a poor measure of dependence (see
  `robust_mim.objectives.mimir`). ``lam: 0`` is the ablation "adversarial MAE without HSIC".
- FINETUNE ``pgd_at`` (Madry PGD-AT: PGD-10, ε = 8/255, step 2/255, MIMIR's fine-tuning) and
  ``trades`` (β = 6), wrapping `robust_mim.objectives.adversarial`.

Settings arrive from the config in 1/255 units (``eps_255``, ``step_255``); the inner attack's
step count is a setting, so a profile that uses fewer steps says so in its config and every
record of the run (the run's ``method`` is copied into the records).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from robust_mim.errors import ConfigError
from robust_mim.models.mim import MaskedAutoencoder
from robust_mim.objectives import FINETUNE, PRETRAIN, Step
from robust_mim.objectives.adversarial import pgd_at_terms, trades_terms
from robust_mim.objectives.mimir import (
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
def _mimir(eps_255: float = 8.0, step_255: float = 10.0, attack_steps: int = 1, mask_ratio: float = 0.75,
           lam: float = 1e-5, sigma: float | None = OFFICIAL_SIGMA, hsic: str = "cca") -> Step:
    hsic_estimator(hsic)  # fail at build time on a bad name
    if lam < 0 or attack_steps < 0:
        raise ConfigError(f"mimir needs lam >= 0 and attack_steps >= 0, got {lam} and {attack_steps}")

    def step(mae: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        return mimir_objective(mae, x, eps=eps_255 / 255, step_size=step_255 / 255, attack_steps=attack_steps,
                               mask_ratio=mask_ratio, lam=lam, sigma=sigma, hsic=hsic)

    return step


def _floats(terms: dict[str, Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in terms.items() if k != "loss"}


@FINETUNE.register("pgd_at")
def _pgd_at(eps_255: float = 8.0, step_255: float = 2.0, steps: int = 10) -> Step:
    """Madry PGD-AT (MIMIR's fine-tuning): CE on PGD-``steps`` examples at ε, step in 1/255 units."""
    if steps < 1:
        raise ConfigError(f"pgd_at needs steps >= 1, got {steps}")

    def step(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        terms = pgd_at_terms(model, x, y, eps_255 / 255, step_255 / 255, steps)
        return terms["loss"], _floats(terms)

    return step


@FINETUNE.register("trades")
def _trades(beta: float = 6.0, eps_255: float = 8.0, step_255: float = 2.0, steps: int = 10) -> Step:
    """TRADES: CE(f(x)) + β · KL(f(x) ‖ f(x′)), x′ from ``steps`` KL-ascent steps at ε."""
    if steps < 1:
        raise ConfigError(f"trades needs steps >= 1, got {steps}")

    def step(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        terms = trades_terms(model, x, y, beta, eps_255 / 255, step_255 / 255, steps)
        return terms["loss"], _floats(terms)

    return step
