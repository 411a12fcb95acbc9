"""Gradient attacks on [0, 1] images: FGSM, PGD (L∞ / L2) with restarts, EOT and BPDA.

Conventions (shared by every attack here and in `robust_mim.attacks.art`):

- ``x`` is a batch ``[N, C, H, W]`` in ``[0, 1]``; ``y`` holds integer labels ``[N]`` (the
  *target* labels when ``targeted=True``); ε is in the same pixel units. The returned
  ``x_adv`` is detached, lies in ``[0, 1]`` and within ε of ``x`` in the chosen norm.
- The model maps ``[N, C, H, W]`` in ``[0, 1]`` to logits ``[N, K]`` (normalisation inside).
  Putting it in eval mode is the caller's job; nothing global (RNG, modes, ``.grad`` of the
  parameters) is changed: gradients are taken w.r.t. the input only, with the parameters'
  ``requires_grad`` switched off for the duration of each gradient computation (restored).
- A loss is a name (``"ce"``, ``"cw"``, ``"dlr"``) or a callable
  ``loss_fn(model, x_adv, y) -> Tensor[N]``, a per-example loss the attack MAXIMIZES, so
  adaptive attacks (feature-space PGD, PGD-MI: `robust_mim.papers.mimir.adaptive`) are just losses.
- EOT (expectation over transformation, Athalye et al. 2018): ``eot_samples=K`` averages the
  input gradient over K forward passes of a randomized model (its own randomness).
- BPDA (Athalye et al. 2018): `BPDA` / `straight_through` run a non-differentiable
  preprocessing forward and the identity backward.

``ATTACKS`` maps names to ``attack(model, x, y, eps=..., **params)``. Gradient attacks return
``x_adv``; ensembles (``"autoattack-style"``, the official ``"autoattack"``) return ``(x_adv, info)``; use
`split_attack_output` to handle both.
"""
from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust_mim.errors import AttackInputError, ConfigError
from robust_mim.registry import Registry

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
Loss = Union[str, LossFn]
NORMS = ("linf", "l2")


class AttackRegistry(Registry):
    """A `Registry` whose unknown names raise `AttackInputError` (still a one-line message)."""

    def get(self, name: str) -> Callable:
        try:
            return super().get(name)
        except ConfigError as err:
            raise AttackInputError(str(err)) from None


ATTACKS = AttackRegistry("attack")


# ----------------------------------------------------------------------------- losses


def logit_margin(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini–Wagner margin ``max_{j≠y} z_j − z_y`` per example ([N, K], [N] -> [N])."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)  # [N]
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.amax(dim=1) - z_y  # > 0 iff misclassified


def ce_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per-example cross-entropy of ``model(x)`` against ``y`` -> [N]."""
    return F.cross_entropy(model(x), y, reduction="none")


def cw_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per-example CW margin loss (`logit_margin`) -> [N]."""
    return logit_margin(model(x), y)


def dlr_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Difference-of-logits ratio (Croce & Hein 2020) to maximize: ``−(z_y − max_{j≠y} z_j) / (z_π1 − z_π3)``.

    Needs >= 3 classes; invariant to shifting and scaling the logits.
    """
    logits = model(x)  # [N, K]
    if logits.shape[1] < 3:
        raise AttackInputError(f"the DLR loss needs >= 3 classes, the model has {logits.shape[1]}")
    top = logits.sort(dim=1, descending=True).values  # [N, K]
    return logit_margin(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "cw": cw_loss, "dlr": dlr_loss}


def resolve_loss(loss: Loss, targeted: bool = False) -> LossFn:
    """Name or callable -> the per-example objective to MAXIMIZE (negated when targeted)."""
    if callable(loss):
        fn = loss
    elif loss in LOSSES:
        fn = LOSSES[loss]
    else:
        raise AttackInputError(f"unknown attack loss {loss!r} (known: {', '.join(LOSSES)} or a callable)")
    if not targeted:
        return fn
    return lambda model, x, y: -fn(model, x, y)


# ----------------------------------------------------------------------------- checks


def check_attack_inputs(x: Tensor, y: Tensor, eps: float, norm: str = "linf") -> None:
    """Raise `AttackInputError` (one line) for bad ε, norm, shapes, label dtype or range of x."""
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise AttackInputError("x must be a batched image tensor [N, C, H, W]")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise AttackInputError(f"y must hold {x.shape[0]} integer labels [N] to match x, got {shape}")
    if y.is_floating_point() or y.is_complex():
        raise AttackInputError(f"y must hold integer class labels, got dtype {y.dtype}")
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps >= 0 or math.isinf(eps):
        raise AttackInputError(f"eps must be a finite number >= 0, got {eps!r}")
    if norm not in NORMS:
        raise AttackInputError(f"unknown norm {norm!r} (known: {', '.join(NORMS)})")
    if x.numel() and (x.min() < 0 or x.max() > 1 or x.isnan().any()):
        raise AttackInputError(f"x must lie in [0, 1] (min {x.min().item():.3g}, max {x.max().item():.3g}); "
                               "normalisation belongs inside the model")


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if not isinstance(value, int) or value < 1:
            raise AttackInputError(f"{name} must be an integer >= 1, got {value!r}")


# ----------------------------------------------------------------------------- geometry


def _per_example_norm(t: Tensor) -> Tensor:
    """L2 norm of each example, shaped to broadcast: [N, ...] -> [N, 1, ..., 1] (floored at 1e-12)."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (t.dim() - 1))


@dataclass(frozen=True)
class ThreatBall:
    """The ε-ball of one norm intersected with the image box [0, 1]."""

    eps: float
    norm: str  # "linf" | "l2"

    def random_start(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A point drawn uniformly from the ball around ``x`` (then clipped to [0, 1])."""
        device = generator.device if generator is not None else x.device
        if self.norm == "linf":
            u = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
            return self.project(x + (2 * u - 1) * self.eps, x)
        g = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        u = torch.rand(x.shape[0], generator=generator, device=device, dtype=x.dtype).to(x.device)
        radius = self.eps * u ** (1.0 / x[0].numel())  # uniform in the ball: r ~ ε U^(1/d)
        return self.project(x + g / _per_example_norm(g) * radius.view(-1, *[1] * (x.dim() - 1)), x)

    def ascent(self, grad: Tensor, step_size: float) -> Tensor:
        """Steepest-ascent step of length ``step_size`` in this norm: sign (L∞) or unit gradient (L2)."""
        if self.norm == "linf":
            return step_size * grad.sign()
        return step_size * grad / _per_example_norm(grad)

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Project ``x_adv`` onto the ball around ``x``, then clamp to [0, 1]."""
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            delta = delta * (self.eps / _per_example_norm(delta)).clamp(max=1.0)
        return (x + delta).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- gradients


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily set ``requires_grad=False`` on the parameters that have it; restored on exit.

    Autograd then skips all weight-gradient work when differentiating w.r.t. the input
    (about 15% of a CNN's forward + backward on CPU). Graphs built before the call still
    back-propagate into the parameters afterwards.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)


def eot_gradient(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn,
                 samples: int = 1) -> tuple[Tensor, Tensor]:
    """Input gradient of ``Σ_i loss_fn(model, x, y)_i`` averaged over ``samples`` forward passes.

    With a randomized model each pass draws fresh randomness, so this is the EOT estimate of
    ∇ E[loss]. A loss that does not depend on ``x`` (a detached preprocessing) contributes a
    zero gradient instead of failing: that is what gradient masking looks like. The model's
    parameters are frozen meanwhile (`frozen_parameters`), so no weight gradient is computed.

    Args:
        x: images [N, C, H, W]; y: labels [N] (or whatever ``loss_fn`` expects).

    Returns:
        (gradient [N, C, H, W], mean per-example loss [N]), both detached.
    """
    x = x.detach().requires_grad_(True)
    grad, total = torch.zeros_like(x), x.new_zeros(x.shape[0])
    with torch.enable_grad(), frozen_parameters(model):
        for _ in range(samples):
            loss = loss_fn(model, x, y)  # [N]
            if loss.requires_grad:
                (g,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
                grad = grad if g is None else grad + g
            total = total + loss.detach()
    return grad / samples, total / samples


class ExpectationOverTransformation(nn.Module):
    """A randomized classifier averaged over draws: ``log (1/K) Σ_k softmax(model(x))``.

    Use it to give any attack (e.g. ART's APGD, which has no EOT option) the expectation over
    the model's randomness; output is log-probabilities, usable wherever logits are.
    """

    def __init__(self, model: nn.Module, samples: int) -> None:
        super().__init__()
        _check_counts(samples=samples)
        self.model, self.samples = model, samples

    def forward(self, x: Tensor) -> Tensor:
        """x [N, C, H, W] -> log mean probabilities [N, K]."""
        probs = torch.stack([F.softmax(self.model(x), dim=1) for _ in range(self.samples)])  # [K, N, C]
        return probs.mean(dim=0).clamp_min(1e-20).log()


def expectation_over_transformation(model: nn.Module, samples: int) -> nn.Module:
    """Wrap a randomized ``model`` as `ExpectationOverTransformation` with ``samples`` draws."""
    return ExpectationOverTransformation(model, samples)


def straight_through(x: Tensor, fx: Tensor) -> Tensor:
    """BPDA with the identity: forward value ``fx``, backward gradient passed straight to ``x``."""
    return x + (fx - x).detach()


class BPDA(nn.Module):
    """Backward-pass differentiable approximation of a preprocessing step.

    ``forward(x)`` returns ``preprocess(x)`` (computed without gradient, so it may be
    non-differentiable: rounding, quantization, JPEG); the backward pass is the identity.
    Put it in front of a classifier, ``nn.Sequential(BPDA(quantize), classifier)``, to attack
    the whole defended model with gradients.
    """

    def __init__(self, preprocess: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.preprocess = preprocess

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            fx = self.preprocess(x)
        return straight_through(x, fx)


@contextmanager
def preserved_mode(model: nn.Module, training: bool | None = None) -> Iterator[nn.Module]:
    """Temporarily set ``model.train(training)`` (None: leave as is); restore every submodule's flag after."""
    flags = [(m, m.training) for m in model.modules()]
    if training is not None:
        model.train(training)
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


# ----------------------------------------------------------------------------- attacks


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, loss: Loss = "ce",
         targeted: bool = False) -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one L∞ step of size ε.

    Args:
        model: classifier [N, C, H, W] in [0, 1] -> logits [N, K].
        x: images [N, C, H, W] in [0, 1]; y: labels [N] (targets if ``targeted``).
        eps: L∞ radius in pixel units.
        loss: "ce" | "cw" | "dlr" | callable ``(model, x, y) -> [N]`` to maximize.
        targeted: move toward ``y`` instead of away from it.

    Returns:
        x_adv [N, C, H, W] in [0, 1], ‖x_adv − x‖∞ <= ε, detached.
    """
    check_attack_inputs(x, y, eps)
    grad, _ = eot_gradient(model, x, y, resolve_loss(loss, targeted))
    return (x + eps * grad.sign()).clamp(0.0, 1.0).detach()


def _pgd_run(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, ball: ThreatBall, steps: int,
             step_size: float, random_start: bool, eot_samples: int,
             generator: torch.Generator | None) -> Tensor:
    """One PGD run (one restart): returns the last iterate [N, C, H, W]."""
    x_adv = ball.random_start(x, generator) if random_start else x.clone()
    for _ in range(steps):
        grad, _ = eot_gradient(model, x_adv, y, loss_fn, eot_samples)
        x_adv = ball.project(x_adv + ball.ascent(grad, step_size), x)
    return x_adv.detach()


@torch.no_grad()
def _restart_score(model: nn.Module, x_adv: Tensor, y: Tensor, loss_fn: LossFn, targeted: bool,
                   samples: int) -> tuple[Tensor, Tensor]:
    """(fraction of draws that are fooled [N], mean objective [N]) over ``samples`` forward passes."""
    fooled, value = x_adv.new_zeros(x_adv.shape[0]), x_adv.new_zeros(x_adv.shape[0])
    for _ in range(samples):
        pred = model(x_adv).argmax(dim=1)  # [N]
        fooled += (pred == y).float() if targeted else (pred != y).float()
        value += loss_fn(model, x_adv, y).float()
    return fooled / samples, value / samples


def _keep_worst_case(best: tuple[Tensor, Tensor, Tensor] | None,
                     new: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Per example keep the candidate that fools more often, ties broken by the higher objective."""
    if best is None:
        return new
    (xb, fb, lb), (xn, fn, ln) = best, new
    better = (fn > fb) | ((fn == fb) & (ln > lb))  # [N]
    mask = better.view(-1, *[1] * (xb.dim() - 1))
    return torch.where(mask, xn, xb), torch.where(better, fn, fb), torch.where(better, ln, lb)


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "linf", steps: int = 10,
        step_size: float | None = None, restarts: int = 1, random_start: bool = True, loss: Loss = "ce",
        targeted: bool = False, eot_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Projected gradient descent (Madry et al. 2018) in the L∞ or L2 ball, with restarts and EOT.

    Each restart starts uniformly in the ε-ball (``random_start``), takes ``steps`` ascent
    steps (sign of the gradient for L∞, per-example unit gradient for L2) of ``step_size``
    (default 2.5·ε/steps), projecting onto the ball and [0, 1] after each. Across restarts the
    per-example worst case is kept: the restart that fools the model (averaged over
    ``eot_samples`` draws for a randomized model), else the one with the highest objective.

    Args:
        model: classifier [N, C, H, W] in [0, 1] -> logits [N, K].
        x: images [N, C, H, W] in [0, 1]; y: labels [N] (targets if ``targeted``).
        eps: radius in pixel units (0 returns a copy of ``x``).
        norm: "linf" | "l2".
        loss: "ce" | "cw" | "dlr" | callable ``(model, x_adv, y) -> [N]`` to maximize.
        eot_samples: forward passes averaged per gradient (EOT for randomized models).
        generator: optional generator for the random starts (the model's own randomness uses
            torch's global RNG).

    Returns:
        x_adv [N, C, H, W] in [0, 1] within ε of ``x``, detached.
    """
    check_attack_inputs(x, y, eps, norm)
    _check_counts(steps=steps, restarts=restarts, eot_samples=eot_samples)
    loss_fn = resolve_loss(loss, targeted)
    if eps == 0:
        return x.detach().clone()
    ball, step_size = ThreatBall(float(eps), norm), 2.5 * eps / steps if step_size is None else step_size
    best = None
    for _ in range(restarts):
        x_adv = _pgd_run(model, x.detach(), y, loss_fn, ball, steps, step_size, random_start, eot_samples, generator)
        if restarts == 1:
            return x_adv
        best = _keep_worst_case(best, (x_adv, *_restart_score(model, x_adv, y, loss_fn, targeted, eot_samples)))
    return best[0]


@torch.no_grad()
def predict_labels(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """Arg-max predictions of ``model`` on ``x`` [N, C, H, W] in batches -> [N] (one forward draw each)."""
    preds = [model(x[i:i + batch_size]).argmax(dim=1) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=x.device)


def split_attack_output(out: Tensor | tuple[Tensor, dict[str, Any]]) -> tuple[Tensor, dict[str, Any]]:
    """Normalise a registered attack's return value to ``(x_adv, info)`` (info may be empty)."""
    if isinstance(out, Tensor):
        return out, {}
    x_adv, info = out
    return x_adv, dict(info)


ATTACKS.register("fgsm")(fgsm)
ATTACKS.register("pgd")(pgd)

__all__ = [
    "ATTACKS", "AttackRegistry", "LOSSES", "NORMS", "BPDA", "ExpectationOverTransformation", "ThreatBall",
    "ce_loss", "check_attack_inputs", "cw_loss", "dlr_loss", "eot_gradient", "expectation_over_transformation",
    "fgsm", "frozen_parameters", "logit_margin", "pgd", "predict_labels", "preserved_mode", "resolve_loss", "split_attack_output",
    "straight_through",
]
