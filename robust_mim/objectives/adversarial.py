"""Adversarial fine-tuning losses: PGD-AT (Madry et al., ICLR 2018) and TRADES (Zhang et al., ICML 2019).

Both craft their inner adversarial examples with the model in eval mode by default (as the
official TRADES code and MIMIR's torchattacks PGD do: ``model.eval()`` for the attack,
``model.train()`` for the loss), so batch norm statistics are not updated by attack iterations,
then compute the outer loss in the model's own mode; every submodule's mode is restored. PGD-AT's
``attack_mode="train"`` attacks in train mode instead (Chen et al.'s official ``finetune/main.py``
calls ``PGD_normal`` after ``model.train()``: BatchNorm normalises each attack step with batch
statistics and updates its running statistics, dropout and drop path stay active). The inner attack takes gradients w.r.t.
the input only, so parameter ``.grad`` is untouched until the caller's ``backward()``.

ε and step sizes are in [0, 1] pixel units (8/255, 2/255: the CIFAR-10 settings of both papers;
TRADES' official 0.031 / 0.007 round to these).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust_mim.attacks.core import LossFn, ThreatBall, eot_gradient, pgd, preserved_mode
from robust_mim.errors import ConfigError


ATTACK_MODES = ("eval", "train")  # the model's mode while PGD-AT crafts its examples


def pgd_at_terms(model: nn.Module, x: Tensor, y: Tensor, eps: float = 8 / 255, step_size: float = 2 / 255,
                 steps: int = 10, generator: torch.Generator | None = None,
                 attack_mode: str = "eval") -> dict[str, Tensor]:
    """Madry PGD-AT: cross-entropy on L∞ PGD examples (uniform random start, ``steps`` sign steps).

    With label-smoothed targets [N, K] the attack ascends the cross-entropy of their arg-max, the
    integer label, and the loss is the cross-entropy against the smoothed targets — the official
    MIMIR fine-tuning (torchattacks PGD on the labels, timm ``LabelSmoothingCrossEntropy``).

    Args:
        model: classifier [N, 3, H, W] in [0, 1] -> logits [N, K] (any mode; restored).
        x: images [N, 3, H, W] in [0, 1]; y: labels [N] or label-smoothed targets [N, K].
        generator: optional generator for the random start.
        attack_mode: the model's mode during the attack, ``eval`` (TRADES, MIMIR) or ``train``
            (Chen et al.: BatchNorm uses and updates batch statistics at every attack step).

    Returns:
        {"loss": scalar to backprop, "adv_ce": detached copy, "adv_acc": accuracy on x_adv}.
    """
    if attack_mode not in ATTACK_MODES:
        raise ConfigError(f"pgd_at attack_mode must be one of {', '.join(ATTACK_MODES)}, got '{attack_mode}'")
    labels = y.argmax(dim=1) if y.ndim == 2 else y  # [N]
    with preserved_mode(model, training=attack_mode == "train"):
        x_adv = pgd(model, x, labels, eps, norm="linf", steps=steps, step_size=step_size, random_start=True,
                    generator=generator)
    logits = model(x_adv)  # [N, K], in the caller's mode
    loss = F.cross_entropy(logits, y)  # soft-target CE for [N, K] targets
    return {"loss": loss, "adv_ce": loss.detach(), "adv_acc": (logits.argmax(1) == labels).float().mean().detach()}


def pgd_at_loss(model: nn.Module, x: Tensor, y: Tensor, eps: float = 8 / 255, step_size: float = 2 / 255,
                steps: int = 10, generator: torch.Generator | None = None, attack_mode: str = "eval") -> Tensor:
    """Scalar PGD-AT loss; see `pgd_at_terms`."""
    return pgd_at_terms(model, x, y, eps, step_size, steps, generator, attack_mode)["loss"]


def _kl_to_clean(p_clean: Tensor) -> LossFn:
    """Per-example KL(p_clean ‖ softmax(model(x_adv))) as a loss ``(model, x_adv, _) -> [N]``."""
    def loss_fn(model: nn.Module, x_adv: Tensor, _: Tensor) -> Tensor:
        log_p_adv = F.log_softmax(model(x_adv), dim=1)  # [N, K]
        return F.kl_div(log_p_adv, p_clean, reduction="none").sum(dim=1)  # [N]
    return loss_fn


def trades_perturb(model: nn.Module, x: Tensor, eps: float = 8 / 255, step_size: float = 2 / 255,
                   steps: int = 10, generator: torch.Generator | None = None) -> Tensor:
    """TRADES inner maximization: L∞ sign ascent on KL(f(x) ‖ f(x′)) from x + 0.001·N(0, I).

    Call with the model in eval mode (`trades_terms` does). The start is clipped to [0, 1]
    (the official code clips only after the first step).

    Returns:
        x_adv [N, 3, H, W] in [0, 1] within ε of x (L∞), detached.
    """
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)  # [N, K], fixed target of the KL
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    ball, loss_fn = ThreatBall(float(eps), "linf"), _kl_to_clean(p_clean)
    x_adv = ball.project(x + 0.001 * noise, x)
    for _ in range(steps):
        grad, _ = eot_gradient(model, x_adv, p_clean, loss_fn)
        x_adv = ball.project(x_adv + ball.ascent(grad, step_size), x)
    return x_adv.detach()


def trades_terms(model: nn.Module, x: Tensor, y: Tensor, beta: float = 6.0, eps: float = 8 / 255,
                 step_size: float = 2 / 255, steps: int = 10,
                 generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """TRADES: CE(f(x), y) + β · KL(f(x) ‖ f(x′)), x′ from `trades_perturb` (official ``criterion_kl``
    = KLDivLoss(log_softmax(f(x′)), softmax(f(x))), batch-mean; gradients flow through both terms).

    Args:
        model: classifier [N, 3, H, W] in [0, 1] -> logits [N, K] (any mode; restored).
        x: images [N, 3, H, W] in [0, 1]; y: labels [N].
        beta: β, the robustness weight (official CIFAR-10 setting 6.0).

    Returns:
        {"loss": scalar, "natural_ce": detached CE(f(x), y), "robust_kl": detached KL term}.
    """
    with preserved_mode(model, training=False):
        x_adv = trades_perturb(model, x, eps, step_size, steps, generator)
    logits = model(x)  # [N, K]
    natural = F.cross_entropy(logits, y)
    robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
    return {"loss": natural + beta * robust, "natural_ce": natural.detach(), "robust_kl": robust.detach()}


def trades_loss(model: nn.Module, x: Tensor, y: Tensor, beta: float = 6.0, eps: float = 8 / 255,
                step_size: float = 2 / 255, steps: int = 10, generator: torch.Generator | None = None) -> Tensor:
    """Scalar TRADES loss; see `trades_terms`."""
    return trades_terms(model, x, y, beta, eps, step_size, steps, generator)["loss"]


__all__ = ["ATTACK_MODES", "pgd_at_loss", "pgd_at_terms", "trades_loss", "trades_perturb", "trades_terms"]
