"""Training objectives as registries of step factories.

A *step* is ``step(model, x, y) -> (loss, metrics)`` — what `robust_mim.engine.fit` calls each
batch. ``PRETRAIN`` builds steps for a `MaskedAutoencoder` (or pretext model); ``FINETUNE``
builds steps for a classifier. Factories take the run's ``objective``/``method`` settings as
keyword arguments (ε in 1/255 units where the name ends in ``_255``) plus auxiliary frozen
modules (``denoiser``, ``vq``) that the CLI loads.

The shared objectives live here (the MAE family's ``mae``/``nim``/``dmae`` corruptions, ``standard``,
``pgd_at``, ``trades``); a paper registers its own in its folder (``robust_mim/papers/<key>/``), and
`robust_mim.papers.register_objectives` imports them before a step is built.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch.nn.functional as F
from torch import Tensor, nn

from robust_mim.errors import ConfigError
from robust_mim.registry import Registry

Step = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, dict[str, float]]]
PRETRAIN: Registry[Callable[..., Step]] = Registry("pretraining objective")
FINETUNE: Registry[Callable[..., Step]] = Registry("fine-tuning method")


AUX_MODULES = ("denoiser", "vq")  # frozen modules a run names (its `denoiser`, `vq`), loaded by the CLI


def build_step(registry: Registry, settings: dict[str, Any], **aux: Any) -> Step:
    """``settings = {"name": ..., **kwargs}`` → step; a missing or unknown argument is one ConfigError line.

    ``settings`` carries every argument of the factory: `robust_mim.config.validate_config` fills the
    unset ones from the schema (``$defs.pretrain_objective``, ``finetune_method``, ...), the only place
    their defaults are written. ``aux``: the run's frozen modules; a factory that names one of
    ``AUX_MODULES`` receives it (None where the run has none), a module it does not take is an error.
    """
    kwargs = {k: v for k, v in settings.items() if k != "name"}
    factory = registry.get(settings["name"])
    takes = inspect.signature(factory).parameters
    modules = {k: None for k in AUX_MODULES if k in takes}
    try:
        return factory(**kwargs, **{**modules, **{k: v for k, v in aux.items() if v is not None}})
    except TypeError as exc:
        raise ConfigError(f"{registry.kind} '{settings['name']}': {exc}") from None


@PRETRAIN.register("mae")
def _mae(mask_ratio: float) -> Step:
    from robust_mim.objectives.mim import mae_objective
    return lambda mae, x, y: mae_objective(mae, x, mask_ratio)


@PRETRAIN.register("nim")
def _nim(sampler: str, concentration: float, scale_255: float, high_255: float, sigma_255: float,
         mask_ratio: float) -> Step:
    from robust_mim.objectives.mim import SIGMA_SAMPLERS, nim_objective
    if sampler not in SIGMA_SAMPLERS:
        raise ConfigError(f"unknown sigma sampler '{sampler}' (known: {', '.join(SIGMA_SAMPLERS)})")
    args = {"concentration": concentration, "scale_255": scale_255, "high_255": high_255, "sigma_255": sigma_255}
    return lambda mae, x, y: nim_objective(mae, x, sampler, mask_ratio, **args)


@PRETRAIN.register("dmae")
def _dmae(sigma: float, mask_ratio: float) -> Step:
    from robust_mim.objectives.mim import dmae_objective
    return lambda mae, x, y: dmae_objective(mae, x, sigma, mask_ratio)


def cross_entropy_step(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Standard training: cross-entropy on clean images; reports batch accuracy."""
    logits = model(x)
    loss = F.cross_entropy(logits, y)  # y: labels [N] or soft targets [N, K] (MixUp/CutMix)
    labels = y.argmax(1) if y.ndim == 2 else y
    return loss, {"acc": (logits.argmax(1) == labels).float().mean().item()}


@FINETUNE.register("standard")
def _standard(denoiser: nn.Module | None) -> Step:
    """Cross-entropy on clean images. A run's ``denoiser`` serves only its test-time De³ defense
    (the MAE baseline of paper 1 fine-tunes on original images, official ``--on_original``)."""
    return cross_entropy_step


def _check_aux(name: str, **aux: Any) -> None:
    missing = [k for k, v in aux.items() if v is None]
    if missing:
        raise ConfigError(f"fine-tuning method '{name}' needs {', '.join(missing)} (set it in the run's config)")


def _floats(terms: dict[str, Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in terms.items() if k != "loss"}


@FINETUNE.register("pgd_at")
def _pgd_at(eps_255: float, step_255: float, steps: int, attack_mode: str) -> Step:
    """Madry PGD-AT (MIMIR's and Chen et al.'s fine-tuning): CE on PGD-``steps`` examples at ε, step in
    1/255 units, crafted with the model in ``attack_mode`` (eval: MIMIR, TRADES; train: Chen et al.)."""
    from robust_mim.objectives.adversarial import ATTACK_MODES, pgd_at_terms

    if steps < 1 or attack_mode not in ATTACK_MODES:
        raise ConfigError(f"pgd_at needs steps >= 1 and attack_mode in {ATTACK_MODES}, got {steps}, '{attack_mode}'")

    def step(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        terms = pgd_at_terms(model, x, y, eps_255 / 255, step_255 / 255, steps, attack_mode=attack_mode)
        return terms["loss"], _floats(terms)

    return step


@FINETUNE.register("trades")
def _trades(beta: float, eps_255: float, step_255: float, steps: int) -> Step:
    """TRADES: CE(f(x)) + β · KL(f(x) ‖ f(x′)), x′ from ``steps`` KL-ascent steps at ε."""
    if steps < 1:
        raise ConfigError(f"trades needs steps >= 1, got {steps}")
    from robust_mim.objectives.adversarial import trades_terms

    def step(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        terms = trades_terms(model, x, y, beta, eps_255 / 255, step_255 / 255, steps)
        return terms["loss"], _floats(terms)

    return step
