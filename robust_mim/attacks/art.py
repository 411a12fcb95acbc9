"""Adapters to adversarial-robustness-toolbox (ART): PGD, APGD, Square and an AutoAttack-style
ensemble, with the conventions of `robust_mim.attacks.core` (torch tensors in [0, 1] in and out).

The model is wrapped in ART's ``PyTorchClassifier`` with ``clip_values=(0, 1)`` and no
preprocessing (normalisation lives inside our models). The official AutoAttack package is not
on PyPI, so the standard evaluation is an *AutoAttack-style* ensemble of ART's components,
named by them everywhere: "APGD-CE + APGD-DLR-T + Square (ART)". It keeps, per example, the
first component that fools the model (the worst case) and reports the robust accuracy after
each component, as AutoAttack does.

ART draws its random numbers from numpy's global RNG; when a ``generator`` is given, numpy is
seeded from it for the call and its previous state restored afterwards. ART also sets the
model's train/eval mode and fills ``.grad`` of the parameters; both are restored.
ART is imported lazily, so importing this module is cheap.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from robust_mim.attacks.core import ATTACKS, check_attack_inputs, predict_labels
from robust_mim.errors import AttackInputError

ART_NORMS: dict[str, float] = {"linf": np.inf, "l2": 2}
COMPONENT_NAMES = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-dlr-targeted": "APGD-DLR-T",
                   "square": "Square", "art-pgd": "PGD"}
DEFAULT_COMPONENTS = ("apgd-ce", "apgd-dlr-targeted", "square")


def ensemble_name(components: tuple[str, ...] | list[str]) -> str:
    """Display name of an ensemble, e.g. ``"APGD-CE + APGD-DLR-T + Square (ART)"``."""
    return " + ".join(COMPONENT_NAMES.get(c, c) for c in components) + " (ART)"


# ----------------------------------------------------------------------------- plumbing


def num_classes(model: nn.Module, x: Tensor) -> int:
    """K, read from one forward pass on the first example."""
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


def art_classifier(model: nn.Module, x: Tensor, nb_classes: int | None = None):
    """ART ``PyTorchClassifier`` for a [0, 1] → logits model on the device of ``x``."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                             nb_classes=nb_classes or num_classes(model, x), clip_values=(0.0, 1.0),
                             device_type="gpu" if x.is_cuda else "cpu")


@contextmanager
def art_scope(model: nn.Module, x: Tensor, generator: torch.Generator | None = None) -> Iterator[None]:
    """Run ART on ``x``'s device; restore module modes, parameter grads and (if seeded) numpy's RNG."""
    flags = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    np_state = np.random.get_state() if generator is not None else None
    if generator is not None:
        np.random.seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device)))
    try:
        with torch.cuda.device(x.device) if x.is_cuda else nullcontext():
            yield
    finally:
        for module, flag in flags:
            module.training = flag
        for param, grad in grads:
            param.grad = grad
        if np_state is not None:
            np.random.set_state(np_state)


def _generate(attack: Any, x: Tensor, y: Tensor) -> Tensor:
    """Run an ART evasion attack on torch tensors; returns x_adv on x's device, clipped to [0, 1]."""
    x_np = x.detach().cpu().numpy().astype(np.float32)
    out = attack.generate(x=x_np, y=y.detach().cpu().numpy().astype(np.int64))
    return torch.from_numpy(np.asarray(out)).to(device=x.device, dtype=x.dtype).clamp(0.0, 1.0)


def _art_norm(norm: str) -> float:
    if norm not in ART_NORMS:
        raise AttackInputError(f"unknown norm {norm!r} (known: {', '.join(ART_NORMS)})")
    return ART_NORMS[norm]


# ----------------------------------------------------------------------------- single attacks


def art_pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "linf", steps: int = 10,
            step_size: float | None = None, restarts: int = 1, targeted: bool = False, batch_size: int = 256,
            verbose: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """ART's ``ProjectedGradientDescentPyTorch`` (random start, CE loss): the reference for our `pgd`.

    Args:
        x: images [N, C, H, W] in [0, 1]; y: labels [N] (targets if ``targeted``).
        eps: radius; step_size: default 2.5·ε/steps (as `robust_mim.attacks.core.pgd`).
        restarts: ART's ``num_random_init`` (later restarts replace only on success).

    Returns:
        x_adv [N, C, H, W].
    """
    from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_pytorch import (
        ProjectedGradientDescentPyTorch)

    check_attack_inputs(x, y, eps, norm)
    if eps == 0:
        return x.detach().clone()
    with art_scope(model, x, generator):
        attack = ProjectedGradientDescentPyTorch(
            art_classifier(model, x), norm=_art_norm(norm), eps=float(eps),
            eps_step=float(step_size or 2.5 * eps / steps), max_iter=steps, targeted=targeted,
            num_random_init=restarts, batch_size=batch_size, verbose=verbose)
        return _generate(attack, x, y)


def apgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str = "linf", *, loss: str = "ce",
         targeted: bool = False, steps: int = 100, restarts: int = 1, batch_size: int = 256,
         verbose: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """Auto-PGD (Croce & Hein 2020) from ART, initial step 2ε as in AutoAttack.

    Args:
        x: images [N, C, H, W] in [0, 1]; y: labels [N] (targets if ``targeted``).
        loss: "ce" (cross-entropy) | "dlr" (difference of logits ratio, needs >= 3 classes;
            targeted DLR as in AutoAttack needs >= 4).
        steps: iterations per restart; restarts: ART's ``nb_random_init``.

    Returns:
        x_adv [N, C, H, W].
    """
    from art.attacks.evasion import AutoProjectedGradientDescent

    check_attack_inputs(x, y, eps, norm)
    losses = {"ce": "cross_entropy", "dlr": "difference_logits_ratio"}
    if loss not in losses:
        raise AttackInputError(f"unknown APGD loss {loss!r} (known: {', '.join(losses)})")
    k = num_classes(model, x)
    if loss == "dlr" and k < (4 if targeted else 3):
        raise AttackInputError(f"{'targeted ' if targeted else ''}DLR needs >= {4 if targeted else 3} classes, got {k}")
    if eps == 0 or x.shape[0] == 0:
        return x.detach().clone()
    with art_scope(model, x, generator):
        attack = AutoProjectedGradientDescent(
            art_classifier(model, x, k), norm=_art_norm(norm), eps=float(eps), eps_step=2.0 * float(eps),
            max_iter=steps, targeted=targeted, nb_random_init=restarts, batch_size=batch_size,
            loss_type=losses[loss], verbose=verbose)
        return _generate(attack, x, y)


def apgd_ce(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str = "linf", *, steps: int = 100,
            restarts: int = 1, batch_size: int = 256, verbose: bool = False,
            generator: torch.Generator | None = None) -> Tensor:
    """APGD on the cross-entropy (AutoAttack's first component); see `apgd`."""
    return apgd(model, x, y, eps, norm, loss="ce", steps=steps, restarts=restarts, batch_size=batch_size,
                verbose=verbose, generator=generator)


def apgd_dlr(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str = "linf", *, steps: int = 100,
             restarts: int = 1, batch_size: int = 256, verbose: bool = False,
             generator: torch.Generator | None = None) -> Tensor:
    """Untargeted APGD on the DLR loss (needs >= 3 classes); see `apgd`."""
    return apgd(model, x, y, eps, norm, loss="dlr", steps=steps, restarts=restarts, batch_size=batch_size,
                verbose=verbose, generator=generator)


def apgd_targeted(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str = "linf", *,
                  n_target_classes: int = 9, steps: int = 100, batch_size: int = 256, verbose: bool = False,
                  generator: torch.Generator | None = None) -> Tensor:
    """APGD-DLR-T as in AutoAttack: targeted APGD-DLR toward each of the top non-true classes in turn.

    For t = 1..``n_target_classes`` the target is the t-th highest clean logit other than
    ``y``; each round attacks only the examples not yet misclassified.

    Args:
        x: images [N, C, H, W] in [0, 1]; y: TRUE labels [N]; needs K >= 4 classes.

    Returns:
        x_adv [N, C, H, W] (misclassified where any target round succeeded).
    """
    check_attack_inputs(x, y, eps, norm)
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])  # [N, K]
    order = logits.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)  # [N, K], y last
    x_adv, fooled = x.detach().clone(), predict_labels(model, x, batch_size) != y
    for rank in range(min(n_target_classes, logits.shape[1] - 1)):
        idx = (~fooled).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        x_t = apgd(model, x[idx], order[idx, rank], eps, norm, loss="dlr", targeted=True, steps=steps,
                   batch_size=batch_size, verbose=verbose, generator=generator)
        success = predict_labels(model, x_t, batch_size) != y[idx]
        x_adv[idx[success]], fooled[idx[success]] = x_t[success], True
    return x_adv


def square(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str = "linf", *, queries: int = 5000,
           p_init: float = 0.8, restarts: int = 1, batch_size: int = 256, verbose: bool = False,
           generator: torch.Generator | None = None) -> Tensor:
    """Square Attack (Andriushchenko et al. 2020) from ART: score-based, no gradients (black-box).

    Args:
        x: images [N, C, H, W] in [0, 1]; y: labels [N].
        queries: iterations (≈ queries per example; AutoAttack uses 5000); p_init: initial
            fraction of pixels changed per square (AutoAttack: 0.8).

    Returns:
        x_adv [N, C, H, W].
    """
    from art.attacks.evasion import SquareAttack

    check_attack_inputs(x, y, eps, norm)
    if eps == 0 or x.shape[0] == 0:
        return x.detach().clone()
    with art_scope(model, x, generator):
        attack = SquareAttack(art_classifier(model, x), norm=_art_norm(norm), max_iter=queries, eps=float(eps),
                              p_init=p_init, nb_restarts=restarts, batch_size=batch_size, verbose=verbose)
        return _generate(attack, x, y)


# ----------------------------------------------------------------------------- ensemble


def _component(name: str, k: int) -> tuple[str, str | None]:
    """(component actually run, note) — APGD-DLR-T falls back to untargeted APGD-DLR when K < 4."""
    if name not in COMPONENT_NAMES:
        raise AttackInputError(f"unknown ensemble component {name!r} (known: {', '.join(COMPONENT_NAMES)})")
    if name in ("apgd-dlr", "apgd-dlr-targeted") and k < 3:
        return "apgd-ce", f"{COMPONENT_NAMES[name]} needs >= 3 classes (model has {k}): ran APGD-CE instead"
    if name == "apgd-dlr-targeted" and k < 4:
        return "apgd-dlr", f"APGD-DLR-T needs >= 4 classes (model has {k}): ran untargeted APGD-DLR instead"
    return name, None


def _run_component(name: str, model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str,
                   opts: dict[str, Any]) -> Tensor:
    common = {"batch_size": opts["batch_size"], "verbose": opts["verbose"], "generator": opts["generator"]}
    if name == "square":
        return square(model, x, y, eps, norm, queries=opts["queries"], **common)
    if name == "apgd-dlr-targeted":
        return apgd_targeted(model, x, y, eps, norm, n_target_classes=opts["n_target_classes"],
                             steps=opts["steps"], **common)
    if name == "art-pgd":
        return art_pgd(model, x, y, eps, norm=norm, steps=opts["steps"], **common)
    return {"apgd-ce": apgd_ce, "apgd-dlr": apgd_dlr}[name](model, x, y, eps, norm, steps=opts["steps"], **common)


def autoattack_style(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str = "linf", *,
                     components: tuple[str, ...] | list[str] = DEFAULT_COMPONENTS, steps: int = 100,
                     n_target_classes: int = 9, queries: int = 5000, batch_size: int = 256,
                     verbose: bool = False, generator: torch.Generator | None = None
                     ) -> tuple[Tensor, dict[str, Any]]:
    """AutoAttack-style ensemble from ART components, run in sequence on the still-robust examples.

    Not the official AutoAttack (not on PyPI): it is named by its components, e.g.
    "APGD-CE + APGD-DLR-T + Square (ART)". Per example the first successful component's
    output is kept (worst case across components).

    Args:
        x: images [N, C, H, W] in [0, 1]; y: true labels [N].
        components: any of "apgd-ce", "apgd-dlr", "apgd-dlr-targeted", "square", "art-pgd".
        steps: APGD iterations; n_target_classes: targets of APGD-DLR-T; queries: Square's.

    Returns:
        (x_adv [N, C, H, W], info) with info = {"attack": display name of what ran,
        "components": names run, "robust_accuracy": {"clean": a, <component>: robust accuracy
        after that component (cumulative)}, "notes": fallbacks, "n_examples": N}.
    """
    check_attack_inputs(x, y, eps, norm)
    k, opts = num_classes(model, x), {"steps": steps, "n_target_classes": n_target_classes, "queries": queries,
                                      "batch_size": batch_size, "verbose": verbose, "generator": generator}
    x_adv, robust = x.detach().clone(), predict_labels(model, x, batch_size) == y  # [N]
    info: dict[str, Any] = {"components": [], "notes": [], "n_examples": int(x.shape[0]),
                            "robust_accuracy": {"clean": robust.float().mean().item()}}
    for requested in components:
        name, note = _component(requested, k)
        info["components"].append(name)
        info["notes"] += [note] if note else []
        idx = robust.nonzero().squeeze(1)
        if idx.numel() and eps > 0:
            x_c = _run_component(name, model, x[idx], y[idx], eps, norm, opts)
            fooled = predict_labels(model, x_c, batch_size) != y[idx]
            x_adv[idx[fooled]], robust[idx[fooled]] = x_c[fooled], False
        info["robust_accuracy"][name] = robust.float().mean().item()
    info["attack"] = ensemble_name(info["components"])
    return x_adv, info


ATTACKS.register("art-pgd")(art_pgd)
ATTACKS.register("apgd")(apgd)
ATTACKS.register("apgd-ce")(apgd_ce)
ATTACKS.register("apgd-dlr")(apgd_dlr)
ATTACKS.register("apgd-dlr-targeted")(apgd_targeted)
ATTACKS.register("square")(square)
ATTACKS.register("autoattack-style")(autoattack_style)

__all__ = ["ART_NORMS", "COMPONENT_NAMES", "DEFAULT_COMPONENTS", "apgd", "apgd_ce", "apgd_dlr", "apgd_targeted",
           "art_classifier",
           "art_pgd", "art_scope", "autoattack_style", "ensemble_name", "num_classes", "square"]
