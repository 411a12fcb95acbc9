"""Pretext losses of Chen et al. (CVPR 2020), standard and adversarial, single- and multi-task.

Each task has an *objective builder* ``(model, x, generator) -> (inputs, loss_fn)``: it samples
the pretext transform once (labels, permutations, masks) and returns the transformed inputs and
a closure ``loss_fn(z) -> (loss, metrics)`` that scores any input ``z`` of the same shape with
those labels fixed. Adversarial pretraining attacks ``inputs`` through ``loss_fn``; this is
what the official code does:

- Rotation / Jigsaw: PGD perturbs the *rotated / shuffled* image (``PGD_normal`` on the
  transformed batch), one δ per transformed sample;
- Selfie: PGD perturbs the *whole image* and the (fixed) mask is applied inside the loss
  (``PGD_attack``), so removed patches and candidates are perturbed too.

Adversarial pretraining minimises ``½ (L(x) + L(x_adv))`` with x_adv from PGD-10 (L∞,
ε = 8/255, step 2/255, random start) on the same pretext loss. Metrics are floats.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from robust_mim.errors import AttackInputError, ConfigError
from robust_mim.papers.chen.models import PretextModel
from robust_mim.papers.chen.pretext import jigsaw_batch, random_rotation_batch, rotation_batch, selfie_apply, selfie_mask
from robust_mim.registry import Registry

LossFn = Callable[[Tensor], tuple[Tensor, dict[str, float]]]
PRETEXT_OBJECTIVES: Registry = Registry("pretext task")
DIVERSITY_JITTER = 1e-5  # the official calculate_log_det adds 1e-5·I to the Gram matrix


def _classification(logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
    loss = F.cross_entropy(logits, labels)
    return loss, {"acc": (logits.argmax(-1) == labels).float().mean().item()}


# ----------------------------------------------------------------------------- task objectives
@PRETEXT_OBJECTIVES.register("rotation")
def rotation_objective(model: PretextModel, x: Tensor, generator: torch.Generator | None = None,
                       all_rotations: bool = False) -> tuple[Tensor, LossFn]:
    """Rotation: one balanced random quarter turn per image (official), or all four (RotNet).

    Returns ``(x_rot [N or 4N, C, H, H], loss_fn)``; the loss is 4-way cross-entropy.
    """
    x_rot, labels = rotation_batch(x) if all_rotations else random_rotation_batch(x, generator)
    return x_rot, lambda z: _classification(model.rotation_logits(z), labels)


@PRETEXT_OBJECTIVES.register("jigsaw")
def jigsaw_objective(model: PretextModel, x: Tensor, generator: torch.Generator | None = None,
                     identity_prob: float = 0.1) -> tuple[Tensor, LossFn]:
    """Jigsaw: shuffle tiles by a permutation of the head's set; P-way cross-entropy."""
    x_jig, labels = jigsaw_batch(x, model.head("jigsaw").perms, generator, identity_prob)
    return x_jig, lambda z: _classification(model.jigsaw_logits(z), labels)


@PRETEXT_OBJECTIVES.register("selfie")
def selfie_objective(model: PretextModel, x: Tensor,
                     generator: torch.Generator | None = None) -> tuple[Tensor, LossFn]:
    """Selfie: remove M patches; for each position pick its patch among the M candidates.

    The loss is the cross-entropy over candidates, averaged over the N·M positions (the
    official code sums the M per-position losses and applies cross-entropy to softmax
    outputs — a double softmax — which we do not copy). Inputs are ``x`` itself.
    """
    head = model.head("selfie")
    if x.shape[-1] != head.grid_size * head.patch_size:
        side = head.grid_size * head.patch_size
        raise ConfigError(f"selfie head expects {side}-pixel images, got {x.shape[-1]}")
    mask = selfie_mask(x.shape[0], head.grid_size ** 2, head.num_masked, generator, x.device)

    def loss_fn(z: Tensor) -> tuple[Tensor, dict[str, float]]:
        batch = selfie_apply(z, head.patch_size, mask)
        logits = model.selfie_logits(batch["context"], batch["candidates"], batch["masked"])  # [N, M, M]
        return _classification(logits.flatten(0, 1), batch["target"].flatten())

    return x, loss_fn


def rotation_loss(model: PretextModel, x: Tensor,
                  generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """Standard (clean) rotation loss on images x [N, C, H, H] → ``(loss, {"acc"})``."""
    inputs, loss_fn = rotation_objective(model, x, generator)
    return loss_fn(inputs)


def jigsaw_loss(model: PretextModel, x: Tensor,
                generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """Standard (clean) jigsaw loss → ``(loss, {"acc"})``."""
    inputs, loss_fn = jigsaw_objective(model, x, generator)
    return loss_fn(inputs)


def selfie_loss(model: PretextModel, x: Tensor,
                generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """Standard (clean) Selfie loss → ``(loss, {"acc"})`` (acc: fraction of positions right)."""
    inputs, loss_fn = selfie_objective(model, x, generator)
    return loss_fn(inputs)


# ----------------------------------------------------------------------------- adversarial
def pgd_linf_on_loss(loss_fn: Callable[[Tensor], Tensor], x: Tensor, eps: float = 8 / 255,
                     step_size: float = 2 / 255, steps: int = 10, generator: torch.Generator | None = None,
                     random_start: bool = True) -> Tensor:
    """L∞ PGD that maximises a scalar ``loss_fn(x_adv)`` within ``‖x_adv − x‖∞ ≤ eps``, in [0, 1].

    Uniform random start in the ε-ball, then ``steps`` signed-gradient steps, each followed by
    projection onto the ball and [0, 1]. The model's train/eval mode is left as the caller set
    it (the official pretraining attacks in train mode). Returns a detached tensor like x.
    """
    if eps < 0 or step_size < 0 or steps < 0:
        raise AttackInputError(f"PGD needs eps, step_size, steps >= 0, got {eps}, {step_size}, {steps}")
    x = x.detach()
    x_adv = x.clone()
    if random_start:
        dev = generator.device if generator is not None else x.device
        noise = torch.rand(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)
        x_adv = (x + (2 * noise - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            grad, = torch.autograd.grad(loss_fn(x_adv), x_adv)
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def adversarial_pretext_loss(loss_fn: LossFn, x: Tensor, eps: float = 8 / 255, step_size: float = 2 / 255,
                             steps: int = 10,
                             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """Adversarial pretext loss ``½ (L(x) + L(x_adv))``, x_adv = PGD on ``L`` (Chen et al. 2020).

    Args:
        loss_fn: ``z -> (loss, metrics)`` with the pretext labels fixed (an objective builder's
            closure).
        x: the inputs that ``loss_fn`` scores (the transformed batch, or the image for Selfie).
        eps, step_size, steps: L∞ PGD budget (8/255, 2/255, 10 in the paper).
        generator: RNG of the random start.

    Returns:
        ``(loss, metrics)`` with ``loss_clean``, ``loss_adv``, ``acc`` (clean) and ``acc_adv``.
    """
    loss_clean, clean = loss_fn(x)
    x_adv = pgd_linf_on_loss(lambda z: loss_fn(z)[0], x, eps, step_size, steps, generator)
    loss_adv, adv = loss_fn(x_adv)
    metrics = {"loss_clean": loss_clean.item(), "loss_adv": loss_adv.item(),
               "acc": clean["acc"], "acc_adv": adv["acc"]}
    return 0.5 * (loss_clean + loss_adv), metrics


def pretext_loss(model: PretextModel, task: str, x: Tensor, adversarial: bool = False, eps: float = 8 / 255,
                 step_size: float = 2 / 255, steps: int = 10,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """One task's loss by name (``rotation``, ``jigsaw``, ``selfie``), standard or adversarial."""
    inputs, loss_fn = PRETEXT_OBJECTIVES.get(task)(model, x, generator)
    if not adversarial:
        return loss_fn(inputs)
    return adversarial_pretext_loss(loss_fn, inputs, eps, step_size, steps, generator)


# ----------------------------------------------------------------------------- multi-task ensemble
def gradient_diversity(grads: Sequence[Tensor], jitter: float = DIVERSITY_JITTER) -> Tensor:
    """``mean_i log det(G_iᵀ G_i + jitter·I)`` of the tasks' input gradients (official form).

    G_i [D, T] stacks, for sample i, the T tasks' input gradients flattened and scaled to unit
    L2 norm, so ``G_iᵀ G_i`` is their cosine-similarity matrix: the log-determinant is 0 for
    orthogonal gradients and → log(jitter) as they align.

    Args:
        grads: T tensors [N, ...] of equal shape.
    """
    g = torch.stack([gr.flatten(1) for gr in grads], dim=2)  # [N, D, T]
    g = g / (g.norm(dim=1, keepdim=True) + 1e-10)
    eye = torch.eye(g.shape[2], device=g.device, dtype=g.dtype)
    return torch.logdet(g.transpose(1, 2) @ g + jitter * eye).mean()


def _joint_objective(loss_fns: Sequence[LossFn], diversity_weight: float,
                     z: Tensor) -> tuple[Tensor, list[Tensor], list[dict[str, float]], Tensor]:
    """Σ_t L_t(z[t]) + λ·diversity on stacked task inputs z [T, N, C, H, W]."""
    outs = [fn(z[t]) for t, fn in enumerate(loss_fns)]
    losses = [loss for loss, _ in outs]
    diversity = torch.zeros((), device=z.device)
    if diversity_weight:
        grads, = torch.autograd.grad(sum(losses), z, create_graph=True)  # [T, N, C, H, W]
        diversity = gradient_diversity(list(grads))
    return sum(losses) + diversity_weight * diversity, losses, [m for _, m in outs], diversity


def multitask_pretext_loss(model: PretextModel, x: Tensor,
                           tasks: Sequence[str] = ("selfie", "jigsaw", "rotation"), adversarial: bool = True, eps: float = 8 / 255, step_size: float = 2 / 255,
                           steps: int = 10, diversity_weight: float = 0.1,
                           generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """Ensemble pretraining (Chen et al. 2020, ``ensemble_pretrain.py``) on one shared backbone.

    Each task gets its own input (image / shuffled / rotated, one rotation per image so all are
    [N, C, H, W]). The inner maximisation is one joint L∞ PGD on the T inputs of
    ``Σ_t L_t + λ·logdet``, the outer loss is ``(Σ_t L_t(x_t) + Σ_t L_t(x_t^adv)) / (2T) +
    λ·logdet(x^adv)`` — i.e. the mean of the tasks' ½(clean + adv) losses plus the
    `gradient_diversity` regulariser with λ = 0.1, the same sign in both problems, as in the
    official code. As there, the gradients are compared in each task's own input coordinates
    (not rotated / un-shuffled back). ``adversarial=False`` gives the mean clean loss.

    Returns:
        ``(loss, metrics)``: ``<task>_acc`` (and ``<task>_acc_adv``), ``loss_clean``,
        ``loss_adv``, ``diversity`` (the log-det at the adversarial inputs).
    """
    built = [PRETEXT_OBJECTIVES.get(t)(model, x, generator) for t in tasks]
    inputs = torch.stack([b[0] for b in built])  # [T, N, C, H, W]
    loss_fns = [b[1] for b in built]
    clean = [fn(z) for fn, z in zip(loss_fns, inputs)]
    loss_clean = sum(loss for loss, _ in clean) / len(tasks)
    metrics = {f"{t}_acc": m["acc"] for t, (_, m) in zip(tasks, clean)} | {"loss_clean": loss_clean.item()}
    if not adversarial:
        return loss_clean, metrics
    x_adv = pgd_linf_on_loss(lambda z: _joint_objective(loss_fns, diversity_weight, z)[0],
                             inputs, eps, step_size, steps, generator).requires_grad_(True)
    _, adv_losses, adv_metrics, diversity = _joint_objective(loss_fns, diversity_weight, x_adv)
    loss_adv = sum(adv_losses) / len(tasks)
    metrics |= {f"{t}_acc_adv": m["acc"] for t, m in zip(tasks, adv_metrics)}
    metrics |= {"loss_adv": loss_adv.item(), "diversity": diversity.item()}
    return 0.5 * (loss_clean + loss_adv) + diversity_weight * diversity, metrics
