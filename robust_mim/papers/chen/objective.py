"""Chen et al. (CVPR 2020), "Adversarial Robustness: From Self-Supervised Pre-Training to Fine-Tuning".

The paper's grid crosses three pretraining settings with four fine-tuning settings:

- P1 no pretraining; P2 standard pretext pretraining; P3 adversarial pretext pretraining
  (PGD-10 on the pretext loss, ε = 8/255, step 2/255, loss ½(clean + adversarial));
- F1 partial standard, F2 partial adversarial (the pretrained first blocks frozen), F3 full
  standard, F4 full adversarial (Madry PGD-10 AT) fine-tuning.

This module holds what the pipeline needs beyond the pretext library
(`robust_mim.papers.chen.pretext`, `robust_mim.papers.chen.models`, `robust_mim.papers.chen.pretext_losses`):

- ``PRETEXT_PRETRAIN``: step factories for pretext pretraining (``pretext`` — one task,
  standard or adversarial; ``pretext_multitask`` — the paper's ensemble pretraining);
- ``BACKBONES``: the classifier backbones a run may choose instead of the profile's ViT;
- partial fine-tuning (`freeze_pretrained_blocks`) and the encoder export that `finetune
  --init` loads (`pretext_encoder_state`);
- `evaluate_pretext`: held-out pretext accuracy, clean and under PGD on the pretext loss;
- `grid_cell` / `ensemble_cell`: the P/F label of a fine-tuning run (or ensemble) for its records;

F1–F4 need no methods of their own: F1/F3 use ``standard`` and F2/F4 ``pgd_at`` (registered in
`robust_mim.papers.mimir.methods`); a run is *partial* when it sets ``frozen_blocks``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from robust_mim.attacks.core import preserved_mode
from robust_mim.errors import ConfigError
from robust_mim.models.classifier import ImageClassifier
from robust_mim.papers.chen.models import PRETEXT_TASKS, PretextModel
from robust_mim.models.resnet import ResNetBackbone, freeze_prefix
from robust_mim.objectives import Step
from robust_mim.papers.chen.pretext_losses import multitask_pretext_loss, pretext_loss
from robust_mim.papers.chen.tasks import task_label
from robust_mim.registry import Registry

PRETEXT_PRETRAIN: Registry[Callable[..., Step]] = Registry("pretext pretraining objective")
ENCODER_PREFIX = "encoder."  # `robust_mim.models.classifier.load_encoder` reads these keys
VIT_EMBEDDINGS = ("patch_embed", "cls_token", "pos_embed")


# ----------------------------------------------------------------------------- pretraining steps
def _check_attack(eps_255: float, step_255: float, steps: int) -> None:
    if eps_255 < 0 or step_255 < 0 or steps < 1:
        raise ConfigError(f"pretext PGD needs eps_255, step_255 >= 0 and steps >= 1, "
                          f"got {eps_255}, {step_255}, {steps}")


def _check_tasks(tasks: Sequence[str]) -> None:
    unknown = [t for t in tasks if t not in PRETEXT_TASKS]
    if unknown or not tasks:
        raise ConfigError(f"unknown pretext tasks {unknown or '[]'} (known: {', '.join(PRETEXT_TASKS)})")


@PRETEXT_PRETRAIN.register("pretext")
def _pretext(task: str, adversarial: bool, eps_255: float, step_255: float, steps: int) -> Step:
    """One pretext task: P2 (clean loss) or P3 (½(clean + PGD-``steps``) loss); labels ``y`` unused."""
    _check_tasks([task])
    _check_attack(eps_255, step_255, steps)

    def step(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        return pretext_loss(model, task, x, adversarial, eps_255 / 255, step_255 / 255, steps)

    return step


@PRETEXT_PRETRAIN.register("pretext_multitask")
def _pretext_multitask(tasks: Sequence[str], adversarial: bool, eps_255: float, step_255: float, steps: int,
                       diversity_weight: float) -> Step:
    """Ensemble pretraining: the mean of the tasks' ½(clean + adv) losses on one backbone (+ λ·diversity, λ = 0.1)."""
    _check_tasks(tasks)
    _check_attack(eps_255, step_255, steps)

    def step(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        return multitask_pretext_loss(model, x, tuple(tasks), adversarial, eps_255 / 255, step_255 / 255, steps,
                                      diversity_weight)

    return step


def objective_tasks(objective: dict[str, Any]) -> list[str]:
    """The pretext tasks a run's ``objective`` trains (its model needs one head per task; [] if not pretext)."""
    if objective["name"] == "pretext":
        return [objective["task"]] if "task" in objective else []
    if objective["name"] == "pretext_multitask":
        return list(objective.get("tasks", ("selfie", "jigsaw", "rotation")))
    return []


def evaluate_pretext(model: PretextModel, x: Tensor, eps: float, step_size: float, steps: int,
                     batch_size: int = 256, generator: torch.Generator | None = None) -> list[dict[str, Any]]:
    """Pretext accuracy of every head on held-out images, clean and under PGD on the pretext loss.

    Args:
        model: a trained `PretextModel` (put in eval mode here, then restored).
        x: images [N, C, H, W] in [0, 1].
        eps, step_size, steps: the L∞ PGD of the robust pretext accuracy (pixel units).
        generator: RNG of the pretext transforms and the random start.

    Returns:
        one row per task: ``{"task", "accuracy", "adv_accuracy", "eps", "n_examples"}``.
    """
    rows = []
    with preserved_mode(model, training=False):
        for task in model.tasks:
            sums = {"acc": 0.0, "acc_adv": 0.0}
            for i in range(0, x.shape[0], batch_size):
                xb = x[i:i + batch_size]
                _, m = pretext_loss(model, task, xb, True, eps, step_size, steps, generator)
                sums = {k: v + m[k] * xb.shape[0] for k, v in sums.items()}
            n = x.shape[0]
            rows.append({"task": task, "accuracy": sums["acc"] / n, "adv_accuracy": sums["acc_adv"] / n, "eps": eps,
                         "n_examples": int(n)})
    return rows


# ----------------------------------------------------------------------------- encoder export
def pretext_encoder_state(model: PretextModel) -> dict[str, Tensor]:
    """The pretrained backbone as ``encoder.*`` keys, the layout `finetune --init` loads strictly.

    ``model.backbone`` is an `ImageClassifier`; its feature extractor ``backbone.backbone``
    (weights *and* batch-norm statistics) is exported, its unused classification head is not.
    """
    inner = model.backbone.backbone
    return {ENCODER_PREFIX + k: v.detach().clone() for k, v in inner.state_dict().items()}


# ----------------------------------------------------------------------------- partial fine-tuning
def pretrained_block_prefixes(classifier: ImageClassifier, num_blocks: int) -> list[str]:
    """Parameter prefixes of the first ``num_blocks`` stages of a classifier's backbone.

    ResNet: stem, layer1, … (`ResNetBackbone.stage_prefixes`); ViT: the embeddings (patch
    embedding, class token, position embedding) count as the first stage, then one stage per
    transformer block. ``num_blocks = 4`` freezes ResNet's stem + layer1–3, as in the paper's
    partial fine-tuning, and a ViT's embeddings + blocks 0–2.
    """
    if isinstance(classifier, ResNetBackbone):
        return classifier.stage_prefixes(num_blocks)
    depth = len(getattr(classifier.backbone, "blocks", []))
    if not 0 <= num_blocks <= depth + 1:
        raise ConfigError(f"frozen_blocks must be in [0, {depth + 1}] for this ViT, got {num_blocks}")
    stages = [[f"backbone.{n}" for n in VIT_EMBEDDINGS if hasattr(classifier.backbone, n)]]
    stages += [[f"backbone.blocks.{i}"] for i in range(depth)]
    return [p for stage in stages[:num_blocks] for p in stage]


def freeze_pretrained_blocks(classifier: ImageClassifier, num_blocks: int) -> list[str]:
    """F1/F2 partial fine-tuning: freeze the first ``num_blocks`` stages (weights and BN statistics).

    Call after loading the pretrained encoder and before building the optimizer (the engine's
    AdamW takes only parameters that require gradients). Returns the frozen parameter names.
    """
    return freeze_prefix(classifier, pretrained_block_prefixes(classifier, num_blocks)) if num_blocks else []


# ----------------------------------------------------------------------------- grid labels
def pretraining_setting(objective: dict[str, Any] | None) -> str:
    """P1 (none), P2 (standard), P3 (adversarial) or ``ensemble-P2``/``ensemble-P3`` (multi-task)."""
    if objective is None:
        return "P1"
    if objective["name"] not in PRETEXT_PRETRAIN:
        return objective["name"]  # another project objective (mae, nim, ...)
    multitask = objective["name"] == "pretext_multitask"
    level = "P3" if objective.get("adversarial", multitask) else "P2"  # the factories' defaults
    return f"ensemble-{level}" if multitask else level


def finetuning_label(method: str, frozen_blocks: int) -> str:
    """F1 partial standard, F2 partial adversarial, F3 full standard, F4 full adversarial."""
    adversarial = method != "standard"
    return ("F2" if adversarial else "F1") if frozen_blocks else ("F4" if adversarial else "F3")


def grid_cell(run: dict[str, Any], objective: dict[str, Any] | None) -> dict[str, str]:
    """The paper-grid cell of a fine-tuning run: ``{"task", "pretraining", "finetuning"}``.

    ``task`` is the record label of the pretext task(s) (`task_label`: our Selfie is ``selfie-like``).

    Args:
        run: the resolved fine-tuning run (``method``, optional ``frozen_blocks``).
        objective: the pretext objective of its ``init`` run, or None (P1).
    """
    task = "+".join(map(task_label, objective_tasks(objective))) if objective else ""
    return {"task": task or "none", "pretraining": pretraining_setting(objective),
            "finetuning": finetuning_label(run["method"]["name"], int(run.get("frozen_blocks") or 0))}


def ensemble_cell(cells: Sequence[dict[str, str]]) -> dict[str, str]:
    """Grid cell of a softmax ensemble: its members' tasks joined, shared labels kept (else ``mixed``)."""
    def shared(key: str) -> str:
        values = sorted({c[key] for c in cells})
        return values[0] if len(values) == 1 else "mixed"
    return {"task": "+".join(c["task"] for c in cells), "pretraining": shared("pretraining"),
            "finetuning": shared("finetuning")}


__all__ = ["ENCODER_PREFIX", "PRETEXT_PRETRAIN", 
           "ensemble_cell",
           "evaluate_pretext", "finetuning_label",
           "freeze_pretrained_blocks", "grid_cell", "objective_tasks", "pretext_encoder_state",
           "pretrained_block_prefixes", "pretraining_setting"]
