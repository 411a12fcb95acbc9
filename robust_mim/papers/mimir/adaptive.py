"""MIMIR's adaptive attacks (Xu et al.) as per-example losses for the generic PGD, and their batched evaluation.

Each loss factory returns ``loss_fn(model, x_adv, y) -> Tensor[N]``, a per-example loss that
``robust_mim.attacks.core.pgd(..., loss=loss_fn)`` MAXIMIZES. Both attack the official
``model.forward_features(x)`` (`forward_features`): for a ViT classifier every token, class token
included, after the last block and BEFORE the final norm, ``[N, 1+L, D]``, flattened to
``(1+L)·D`` per example — not the pooled embedding.

- ``feature_distance_loss``: the official ``adaptive_attack/pgd_feature.py`` — push the
  adversarial features away from the clean ones.
- ``pgd_mi_loss``: the official ``adaptive_attack/pgd_mi.py`` ("PGD-MI") — cross-entropy PLUS
  λ · HSIC(F(x′), x′): the attacker knows MIMIR minimized the dependence between the latent
  and the adversarial input during pretraining and ascends it, i.e. looks for x′ whose
  features carry the perturbation (official λ = 1e-5, σ = 5 per dimension, so the kernel
  width of the features is 2σ²·(1+L)·D, ``hsic_normalized_cca``).

`adaptive_entries` turns the profile's ``mimir`` settings into suite entries (PGD-k, feature PGD,
PGD-MI), and `evaluate_batched` runs one per batch of ``mimir.batch_size`` images (HSIC is a
batch statistic; the official evaluation script attacks batches of 16).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from robust_mim.errors import AttackInputError
from robust_mim.evaluation.suite import run_evaluation
from robust_mim.evaluation.worst_case import decode_mask, encode_mask
from robust_mim.papers.mimir.hsic import HSICFn
from robust_mim.papers.mimir.methods import hsic_estimator
from robust_mim.progress import Progress

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
EntryFn = Callable[[Tensor], dict[str, Any]]  # clean batch [B, 3, H, W] -> suite entry


def _check_same_shape(x_adv: Tensor, x_clean: Tensor) -> None:
    if x_adv.shape != x_clean.shape:
        raise AttackInputError(f"x_adv {tuple(x_adv.shape)} does not match x_clean {tuple(x_clean.shape)}")


def features_and_logits(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(official ``forward_features(x)``, logits) of a project classifier in one forward pass.

    For a classifier whose ``backbone`` is a timm ``VisionTransformer``: the tokens entering the
    backbone's final norm, ``[N, 1+L, D]`` — what the official fine-tuned ViT's
    ``forward_features`` returns (its final norm is deleted or applied in ``forward_head``). For
    any other classifier (no token sequence, e.g. a ResNet): ``embed(x)`` ``[N, D]``.

    Args:
        model: ``forward(x) -> logits [N, K]`` on x [N, 3, H, W] in [0, 1].

    Returns:
        (features [N, 1+L, D] or [N, D], logits [N, K]), both in the autograd graph of x.
    """
    vit = getattr(model, "backbone", None)
    if not isinstance(vit, VisionTransformer):
        z = model.embed(x)  # [N, D]
        return z, model.head(z)
    captured: list[Tensor] = []
    hook = vit.norm.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    try:
        logits = model(x)  # [N, K]
    finally:
        hook.remove()
    return captured[-1], logits  # tokens [N, 1+L, D] before the final norm


def forward_features(model: nn.Module, x: Tensor) -> Tensor:
    """The official ``model.forward_features(x)``: ViT tokens before the final norm [N, 1+L, D] (see
    `features_and_logits`)."""
    return features_and_logits(model, x)[0]


def feature_distance_loss(x_clean: Tensor) -> LossFn:
    """Feature-space PGD: maximize ‖F(x′) − F(x)‖₂ per example, F = `forward_features` flattened.

    The official attack ascends the batch norm ‖F(x′) − F(x)‖ (one scalar); its gradient is
    the per-example one rescaled by a positive constant per example, so sign-gradient steps
    coincide. Clean features are computed once per model (no grad, detached) on first call.
    At x′ = x the norm's subgradient is 0: use a random start.

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
                cache[id(model)] = forward_features(model, x_clean).detach()  # [N, 1+L, D]
        diff = forward_features(model, x_adv) - cache[id(model)]  # [N, 1+L, D]
        return torch.linalg.vector_norm(diff.flatten(1), dim=1)  # [N]

    return loss_fn


def pgd_mi_loss(lam: float, x_clean: Tensor | None = None, *, sigma: float | None, hsic_fn: HSICFn) -> LossFn:
    """PGD-MI: maximize CE(f(x′), y)_i + λ · HSIC(F(x′), x′) for every example i.

    F = `forward_features` flattened to (1+L)·D per example, x′ flattened to 3HW; the estimator's
    Gaussian width per dimension σ scales with each dimension as in the official ``kernelmat``.
    HSIC is a batch statistic, so the same scalar is added (broadcast) to every example's
    cross-entropy. Summed over the batch this is N · (mean CE + λ · HSIC), the official cost
    up to a positive factor (identical sign gradients). With ``x_clean`` the HSIC is taken
    against the perturbation x′ − x instead of x′ (a variant, not in the official code).

    Args:
        lam: λ, weight of the HSIC term (official 1e-5); λ = 0 gives plain CE-PGD.
        x_clean: optional clean images [N, 3, H, W] for the perturbation variant.
        sigma: Gaussian width per dimension (official 5.0); None = median heuristic.
        hsic_fn: the estimator, ``hsic_normalized_cca`` (official) or ``hsic_normalized``.

    Returns:
        loss_fn(model, x_adv [N, 3, H, W], y [N]) -> [N].
    """
    x_ref = None if x_clean is None else x_clean.detach()

    def loss_fn(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
        features, logits = features_and_logits(model, x_adv)  # [N, 1+L, D], [N, K]
        ce = F.cross_entropy(logits, y, reduction="none")  # [N]
        if lam == 0:
            return ce
        if x_ref is not None:
            _check_same_shape(x_adv, x_ref)
        source = x_adv if x_ref is None else x_adv - x_ref
        return ce + lam * hsic_fn(features, source, sigma, sigma)  # [N], HSIC broadcast

    return loss_fn


def adaptive_entries(cfg: dict[str, Any]) -> list[tuple[EntryFn, dict[str, Any]]]:
    """The profile's ``mimir`` attacks as (clean batch → suite entry, descriptive params for the record).

    Args:
        cfg: the validated ``mimir`` section (eps_255, step_255, restarts, pgd_steps, feature_steps,
            mi_steps, mi_lams, hsic, sigma).
    """
    eps = [e / 255 for e in cfg["eps_255"]]
    pgd = {"attack": "pgd", "threat_model": "white-box", "eps": eps, "norm": "linf",
           "step_size": cfg["step_255"] / 255, "restarts": cfg["restarts"], "eot_samples": 1}
    out: list[tuple[EntryFn, dict[str, Any]]] = []
    for k in cfg["pgd_steps"]:
        out.append((lambda xb, k=k: {"name": f"pgd-{k}", **pgd, "steps": k}, {"loss": "ce"}))
    features = "forward_features: all 1+L tokens before the final norm"
    feature = {"loss": f"feature-distance: ||F(x') - F(x)||_2, F = {features}", "adaptive": True}
    out.append((lambda xb: {"name": "pgd-feature", **pgd, "steps": cfg["feature_steps"],
                            "loss": feature_distance_loss(xb)}, feature))
    hsic_fn = hsic_estimator(cfg["hsic"])
    for lam in cfg["mi_lams"]:
        mi = {"loss": f"PGD-MI: CE + lam * HSIC(F(x'), x'), F = {features}", "lam": lam, "hsic": cfg["hsic"],
              "sigma": cfg["sigma"], "adaptive": True}
        out.append((lambda xb, lam=lam: {"name": f"pgd-mi-lam{lam:g}", **pgd, "steps": cfg["mi_steps"],
                                         "loss": pgd_mi_loss(lam, sigma=cfg["sigma"], hsic_fn=hsic_fn)}, mi))
    return out


def evaluate_batched(model: nn.Module, x: Tensor, y: Tensor, entry_for: EntryFn, batch_size: int,
                     generator: torch.Generator | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """`run_evaluation` on each batch (``entry_for(x_batch)`` builds its entry); rows merged over batches.

    Args:
        x: images [N, 3, H, W] in [0, 1]; y: labels [N].
        progress: counts one unit per attacked batch and ε (the job's log lines), if given.

    Returns:
        the `run_evaluation` result with rows summed over batches (accuracy = n_correct / N).
    """
    parts = []
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        entry = {**entry_for(xb), "batch_size": batch_size}
        parts.append(run_evaluation(model, xb, yb, entry, generator=generator, progress=progress))
    rows = []
    for per_batch in zip(*(p["rows"] for p in parts)):
        n_correct, n = sum(r["n_correct"] for r in per_batch), sum(r["n_examples"] for r in per_batch)
        correct = torch.cat([decode_mask(r["correct"], r["n_examples"]) for r in per_batch])  # [N] per example
        rows.append({"eps": per_batch[0]["eps"], "accuracy": n_correct / n, "n_correct": n_correct, "n_examples": n,
                     "correct": encode_mask(correct)})
    return {**parts[0], "rows": rows, "wall_time_s": sum(p["wall_time_s"] for p in parts)}
