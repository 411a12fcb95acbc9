"""MIMIR's adaptive attacks (Xu et al.) as per-example losses for the generic PGD.

Each factory returns ``loss_fn(model, x_adv, y) -> Tensor[N]``, a per-example loss that
``robust_mim.attacks.core.pgd(..., loss=loss_fn)`` MAXIMIZES. ``model`` is a project classifier
with ``embed(x) -> [N, D]`` (pooled features, the analogue of the official
``forward_features``) and ``forward(x) -> logits [N, K]``.

- ``feature_distance_loss``: the official ``adaptive_attack/pgd_feature.py`` — push the
  adversarial features away from the clean ones.
- ``pgd_mi_loss``: the official ``adaptive_attack/pgd_mi.py`` ("PGD-MI") — cross-entropy PLUS
  λ · nHSIC(z(x′), x′): the attacker knows MIMIR minimized the dependence between the latent
  and the adversarial input during pretraining and ascends it, i.e. looks for x′ whose
  features carry the perturbation (official λ = 1e-5, σ = 5, ``hsic_normalized_cca``).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust_mim.errors import AttackInputError
from robust_mim.papers.mimir.hsic import OFFICIAL_SIGMA, HSICFn, hsic_normalized

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def _check_same_shape(x_adv: Tensor, x_clean: Tensor) -> None:
    if x_adv.shape != x_clean.shape:
        raise AttackInputError(f"x_adv {tuple(x_adv.shape)} does not match x_clean {tuple(x_clean.shape)}")


def feature_distance_loss(x_clean: Tensor) -> LossFn:
    """Feature-space PGD: maximize ‖embed(x′) − embed(x)‖₂ per example.

    The official attack ascends the batch norm ‖F(x′) − F(x)‖ (one scalar); its gradient is
    the per-example one rescaled by a positive constant, so sign-gradient steps coincide.
    Clean features are computed once per model (no grad, detached) on first call. At
    x′ = x the norm's subgradient is 0: use a random start.

    Args:
        x_clean: the clean images [N, 3, H, W] the attack starts from.

    Returns:
        loss_fn(model, x_adv [N, 3, H, W], y [N]) -> distances [N] (y unused).
    """
    x_clean = x_clean.detach()
    cache: dict[int, Tensor] = {}

    def loss_fn(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
        _check_same_shape(x_adv, x_clean)
        if id(model) not in cache:
            with torch.no_grad():
                cache[id(model)] = model.embed(x_clean).detach()  # [N, D]
        diff = model.embed(x_adv) - cache[id(model)]  # [N, D]
        return torch.linalg.vector_norm(diff.flatten(1), dim=1)  # [N]

    return loss_fn


def pgd_mi_loss(lam: float = 1e-5, x_clean: Tensor | None = None, *,
                sigma: float | None = OFFICIAL_SIGMA, hsic_fn: HSICFn = hsic_normalized) -> LossFn:
    """PGD-MI: maximize CE(f(x′), y)_i + λ · nHSIC(embed(x′), x′) for every example i.

    nHSIC is a batch statistic, so the same scalar is added (broadcast) to every example's
    cross-entropy. Summed over the batch this is N · (mean CE + λ · nHSIC), the official cost
    up to a positive factor (identical sign gradients); averaged it is the official cost.
    With ``x_clean`` the HSIC is taken against the perturbation x′ − x instead of x′ (a
    variant, not in the official code: dependence of the features on the perturbation).

    Args:
        lam: λ, weight of the HSIC term (official 1e-5); λ = 0 gives plain CE-PGD.
        x_clean: optional clean images [N, 3, H, W] for the perturbation variant.
        sigma: Gaussian width per dimension (official 5.0); None = median heuristic.
        hsic_fn: ``hsic_normalized`` (default) or ``hsic_normalized_cca`` (official).

    Returns:
        loss_fn(model, x_adv [N, 3, H, W], y [N]) -> [N].
    """
    x_ref = None if x_clean is None else x_clean.detach()

    def loss_fn(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
        z = model.embed(x_adv)  # [N, D]
        ce = F.cross_entropy(model.head(z), y, reduction="none")  # [N]
        if lam == 0:
            return ce
        if x_ref is not None:
            _check_same_shape(x_adv, x_ref)
        source = x_adv if x_ref is None else x_adv - x_ref
        return ce + lam * hsic_fn(z, source, sigma, sigma)  # [N], HSIC broadcast

    return loss_fn
