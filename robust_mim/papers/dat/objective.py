"""Discrete Adversarial Training, DAT (Mao et al., NeurIPS 2022).

DAT trains a classifier f on clean images and on adversarial images that live in the
discrete space of a VQ autoencoder Q (encode → nearest code → decode):

    x̂ = Q(x),   δ = one L2 ascent step on CE(f(x̂ + δ), y) with ‖δ‖₂ ≤ ε,
    x_adv = Q(x̂ + δ),   loss = CE(f(x), y) + CE(f(x_adv), y).

Details follow the official code (alibaba/easyrobust, ``examples/.../dat/main.py`` and
``easyrobust.attacks.pgd_generator``): the attack is taken at the *quantized* image x̂,
L2 ε = 0.1 with one step of size ε along the per-example unit gradient, projection onto
the ball and [0, 1], then re-quantization; the VQ model is frozen (eval mode, no
gradient) and the classifier is left in its current mode during the attack. Two
deliberate differences: the random start is uniform *inside* the L2 ball (official:
on the sphere, with probability 0.8), and the re-quantization uses the straight-through
estimator (`VQAutoencoder.quantize_image_st`), the paper's gradient rule for Q; since
x̂ + δ is detached, the training gradient reaches the classifier only either way.

Soft targets: with MixUp, CutMix or label smoothing the step receives soft targets [N, K]
(`robust_mim.engine.mix_batch`), and, as the official code (``attack_criterion='mixup'``, timm's
``SoftTargetCrossEntropy`` for both the attack and the loss), the attack and both loss terms are
the soft-target cross-entropy −Σ_k t_k log softmax(f(·))_k; with labels [N] they are the usual CE.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust_mim.attacks.core import ThreatBall, preserved_mode
from robust_mim.errors import ConfigError
from robust_mim.models.vq import VQAutoencoder
from robust_mim.objectives import FINETUNE, Step, _check_aux
from robust_mim.models.classifier import freeze

def dat_perturbation(model: nn.Module, x_hat: Tensor, y: Tensor, eps: float, random_start: bool = True,
                     generator: torch.Generator | None = None) -> Tensor:
    """One-step L2 attack at the quantized image: δ with ‖δ‖₂ ≤ ε and x̂ + δ ∈ [0, 1].

    Args:
        model: classifier [N, 3, H, W] in [0, 1] -> logits [N, K].
        x_hat: quantized images Q(x) [N, 3, H, W] in [0, 1].
        y: labels [N] or soft targets [N, K] (rows summing to 1; the attack then ascends the soft-target CE).
        eps: L2 radius in pixel units; the step size equals ε (official attack_lr).
        random_start: start from a point drawn uniformly in the ball around x̂.
        generator: optional generator for the random start.
    Returns:
        δ [N, 3, H, W], detached.
    """
    ball, x0 = ThreatBall(float(eps), "l2"), x_hat.detach()
    start = ball.random_start(x0, generator) if random_start else x0
    start = start.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(F.cross_entropy(model(start), y), start)
    x_adv = ball.project(start.detach() + ball.ascent(grad, eps), x0)
    return (x_adv - x0).detach()


@torch.no_grad()
def codes_changed(vq: VQAutoencoder, x_hat: Tensor, x_pert: Tensor) -> Tensor:
    """Fraction of VQ code positions a perturbation changes, per image: codes(x̂ + δ) vs codes(x̂).

    Args:
        vq: frozen VQ autoencoder (eval mode, so its codebook does not move).
        x_hat: quantized images Q(x) [N, 3, H, W]; x_pert: perturbed images x̂ + δ [N, 3, H, W].
    Returns:
        [N] fractions in [0, 1] (0: δ left every code as it was, so Q(x̂ + δ) = Q(x̂)).
    """
    _, before, _ = vq.encode(x_hat)  # [N, h, w]
    _, after, _ = vq.encode(x_pert)  # [N, h, w]
    return (before != after).flatten(1).float().mean(1)


def dat_loss(model: nn.Module, vq: VQAutoencoder, x: Tensor, y: Tensor, eps: float,
             random_start: bool = True, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """DAT objective CE(f(x), y) + CE(f(Q(Q(x) + δ)), y); gradients reach ``model`` only.

    Args:
        model: classifier being trained, [N, 3, H, W] in [0, 1] -> logits [N, K].
        vq: VQ autoencoder; run in eval mode without gradient (its mode is restored).
        x: clean images [N, 3, H, W] in [0, 1]; y: labels [N] or soft targets [N, K] (MixUp/CutMix/label
            smoothing: both CE terms and the attack are then soft-target CE; accuracies use argmax_k y).
        eps: L2 radius of δ in pixel units (paper: 0.1).
        random_start, generator: see `dat_perturbation`.
    Returns:
        (scalar loss, {"ce_clean", "ce_adv", "acc", "adv_acc", "delta_l2", "codes_changed",
        "images_codes_changed"}): the mean per-image fraction of VQ codes δ changes, and the
        fraction of images with at least one changed code (`codes_changed`).
    """
    if eps < 0:
        raise ConfigError(f"DAT eps must be >= 0, got {eps}")
    with preserved_mode(vq, training=False):
        with torch.no_grad():
            x_hat = vq.quantize_image(x)  # [N, 3, H, W]
        delta = dat_perturbation(model, x_hat, y, eps, random_start, generator)
        x_pert = (x_hat + delta).clamp(0, 1)
        changed = codes_changed(vq, x_hat, x_pert)  # [N]
        x_adv = vq.quantize_image_st(x_pert).clamp(0, 1)  # re-quantized
    logits, logits_adv = model(x), model(x_adv)
    ce_clean, ce_adv = F.cross_entropy(logits, y), F.cross_entropy(logits_adv, y)  # soft-target CE for y [N, K]
    labels = y.argmax(1) if y.ndim == 2 else y  # [N]: the dominant class of a mixed target
    return ce_clean + ce_adv, {
        "codes_changed": changed.mean().item(), "images_codes_changed": (changed > 0).float().mean().item(),
        "ce_clean": ce_clean.item(), "ce_adv": ce_adv.item(),
        "acc": (logits.argmax(1) == labels).float().mean().item(),
        "adv_acc": (logits_adv.argmax(1) == labels).float().mean().item(),
        "delta_l2": delta.flatten(1).norm(dim=1).mean().item(),
    }


@FINETUNE.register("dat")
def _dat(vq: VQAutoencoder | None, eps: float, random_start: bool) -> Step:
    """FINETUNE ``"dat"`` (ε in pixel units, L2): needs the run's trained ``vq`` autoencoder."""
    _check_aux("dat", vq=vq)
    if eps < 0:
        raise ConfigError(f"DAT eps must be >= 0, got {eps}")
    frozen = freeze(vq)
    return lambda model, x, y: dat_loss(model, frozen, x, y, eps, random_start)
