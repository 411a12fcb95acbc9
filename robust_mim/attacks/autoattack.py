"""The official AutoAttack (Croce & Hein 2020, PyPI package ``pyautoattack``) as one of our attacks.

``autoattack(model, x, y, eps, ...)`` runs ``version="standard"`` (APGD-CE, APGD-T, FAB-T,
Square) on deterministic models and ``version="rand"`` (APGD-CE and APGD-DLR, each with EOT
over 20 draws) on randomized ones; ``version="auto"`` (the default) chooses from
``randomized``. It returns ``(x_adv, info)``; ``info`` names the package and its version,
the attacks run, the budget (and whether it is the official one), the robust accuracy after
each attack and AutoAttack's own check flags (its ``checks`` module: randomized defense,
probabilities instead of logits, dynamic defense, too few classes, Square stronger than the
gradient attacks).

Resuming: pyautoattack 0.2.0's own ``state_path`` cannot resume (the reloaded state's attack
list is a list, compared with a set: every resume raises "The state was created with a
different set of attacks"; and ``y_adv`` is undefined on the resume path). So the attacks
of the version are run one at a time, each by ``run_standard_evaluation`` on the points still
robust (exactly what AutoAttack itself does between attacks), and after each one the
per-example robust flags and adversarial images are saved to ``state_path`` (a ``.pt``
file, written atomically). A killed evaluation called again with the same ``state_path``
skips the attacks already done.
"""
from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from robust_mim.attacks.core import ATTACKS, check_attack_inputs, predict_labels
from robust_mim.errors import AttackInputError
from robust_mim.io import atomic_torch_save

PACKAGE = "pyautoattack"
AA_NORMS = {"linf": "Linf", "l2": "L2"}
VERSIONS = ("auto", "standard", "rand")
OFFICIAL_BUDGET = {"apgd_steps": 100, "n_target_classes": 9, "fab_steps": 100, "square_queries": 5000,
                   "eot_iter": 20}
ATTACK_NAMES = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab-t": "FAB-T",
                "square": "Square", "fab": "FAB"}
FLAG_KEYS = (("randomized defense", "randomized"), ("probability distribution", "probabilities"),
             ("dynamic defense", "dynamic"), ("classes", "n_classes"), ("Square Attack", "square_stronger"),
             ("zero gradient", "zero_gradients"))


def package_version() -> str:
    """Installed version of ``pyautoattack`` (raises `AttackInputError` when it is missing)."""
    try:
        import pyautoattack
    except ImportError:
        raise AttackInputError("the official AutoAttack is not installed: pip install pyautoattack") from None
    return str(getattr(pyautoattack, "__version__", "unknown"))


def resolve_version(version: str, randomized: bool) -> str:
    """"auto" -> "rand" for randomized models, else "standard"; "standard" on a randomized model is an error."""
    if version not in VERSIONS:
        raise AttackInputError(f"unknown AutoAttack version {version!r} (known: {', '.join(VERSIONS)})")
    if version == "auto":
        return "rand" if randomized else "standard"
    if version == "standard" and randomized:
        raise AttackInputError("AutoAttack version 'standard' on a randomized model: use 'rand' (EOT) or 'auto'")
    return version


def min_classes(version: str) -> int:
    """Classes a version needs: 'standard' runs targeted DLR (APGD-T: >= 4), 'rand' untargeted DLR (>= 3)."""
    return 4 if version == "standard" else 3


def check_classes(version: str, k: int) -> None:
    """One-line `AttackInputError` when a model with ``k`` classes cannot be attacked by ``version``."""
    need = min_classes(version)
    if k < need:
        what = "APGD-T (targeted DLR)" if version == "standard" else "APGD-DLR"
        raise AttackInputError(f"AutoAttack {version} runs {what}, which needs >= {need} classes; "
                               f"the model has {k}")


def make_adversary(model: nn.Module, eps: float, norm: str, version: str, k: int, seed: int,
                   device: torch.device, budget: dict[str, int]) -> Any:
    """A configured ``pyautoattack.AutoAttack``; targets are capped at k − 1 (AutoAttack's own check)."""
    from pyautoattack import AutoAttack

    adversary = AutoAttack(model, norm=AA_NORMS[norm], eps=float(eps), version=version, seed=seed, device=device)
    adversary.verbose = False
    adversary.apgd.n_iter = adversary.apgd_targeted.n_iter = budget["apgd_steps"]
    adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = min(budget["n_target_classes"], k - 1)
    adversary.fab.n_iter = budget["fab_steps"]
    adversary.square.n_queries = budget["square_queries"]
    if version == "rand":
        adversary.apgd.eot_iter = budget["eot_iter"]
    return adversary


class _Flags(logging.Handler):
    """Collects AutoAttack's check warnings (logger ``auto-attack``) as ``"key: message"`` strings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.flags: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage().split(" See ")[0]
        key = next((k for marker, k in FLAG_KEYS if marker in msg), "other")
        if f"{key}: {msg}" not in self.flags:
            self.flags.append(f"{key}: {msg}")


@contextmanager
def captured_flags(adversary: Any) -> Iterator[_Flags]:
    """Route the adversary's logger into a `_Flags` collector (not to stderr) for the duration."""
    handler, logger = _Flags(), adversary.logger
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


@contextmanager
def checks_skipped(k: int, skip: bool = True) -> Iterator[None]:
    """Replace AutoAttack's per-call model checks by no-ops (``skip``): they ran on the first attack already.

    ``run_standard_evaluation`` checks the model (5 forward passes for randomness, a traced one for
    dynamic defenses...) on every call; run once per attack they would cost up to 4× what one
    AutoAttack run spends on them. Restored on exit.
    """
    import pyautoattack.autoattack as aa_module

    real = aa_module.checks
    if skip:
        aa_module.checks = SimpleNamespace(check_randomized=_noop, check_dynamic=_noop, check_n_classes=_noop,
                                           check_range_output=lambda *a, **kw: k, check_square_sr=_noop)
    try:
        yield
    finally:
        aa_module.checks = real


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


# ----------------------------------------------------------------------------- resumable state


def state_key(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str, version: str, seed: int,
              budget: dict[str, int]) -> str:
    """Fingerprint of an evaluation (model weights, images, labels, settings): another one's state is not resumed."""
    h = hashlib.sha256(repr((tuple(x.shape), eps, norm, version, seed, sorted(budget.items()))).encode())
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    h.update(x.detach().float().cpu().numpy().tobytes())
    h.update(y.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def load_state(path: str | Path | None, key: str) -> dict[str, Any] | None:
    """The saved state at ``path`` if it belongs to evaluation ``key``, else None."""
    if path is None or not Path(path).exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state if state.get("key") == key else None


def save_state(path: str | Path | None, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (no-op without a path)."""
    if path is not None:
        atomic_torch_save(state, path)  # umask mode, one line on a full disk, the previous state kept


# ----------------------------------------------------------------------------- the attack


def _run_one(adversary: Any, attack: str, x: Tensor, y: Tensor, robust: Tensor, x_adv: Tensor,
             batch_size: int) -> tuple[Tensor, Tensor]:
    """Run one AutoAttack attack on the robust points -> (mask [N] of the points it fooled, updated x_adv)."""
    idx = robust.nonzero().squeeze(1)
    fooled = torch.zeros_like(robust)
    if idx.numel() == 0:
        return fooled, x_adv
    adversary.attacks_to_run = [attack]
    x_c, _ = adversary.run_standard_evaluation(x[idx], y[idx], batch_size=batch_size)
    x_c = x_c.to(x.device, x.dtype)
    changed = (x_c != x[idx]).flatten(1).any(dim=1)  # AutoAttack returns x where it failed
    fooled[idx[changed]] = True
    x_adv = x_adv.clone()
    x_adv[idx[changed]] = x_c[changed]
    return fooled, x_adv


def autoattack(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str = "linf", *, version: str = "auto",
               randomized: bool = False, apgd_steps: int = 100, n_target_classes: int = 9, fab_steps: int = 100,
               square_queries: int = 5000, eot_iter: int = 20, batch_size: int = 256, seed: int | None = None,
               state_path: str | Path | None = None,
               generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Any]]:
    """Official AutoAttack (``pyautoattack``) on ``model`` at ``eps``; resumable through ``state_path``.

    Args:
        model: classifier [N, C, H, W] in [0, 1] -> logits [N, K] (eval mode); K >= 4 for
            'standard', >= 3 for 'rand'.
        x: images [N, C, H, W] in [0, 1]; y: true labels [N].
        version: "auto" (rand if ``randomized`` else standard) | "standard" | "rand".
        apgd_steps, n_target_classes, fab_steps, square_queries, eot_iter: the budget; the
            official values are the defaults (`OFFICIAL_BUDGET`); targets are capped at K − 1.
        seed: AutoAttack's seed (drawn from ``generator`` when None).
        state_path: a ``.pt`` file: progress is saved after each attack and resumed from.
        randomized: also chooses the version; every point is then passed to every attack (AutoAttack
            itself skips the points its one clean draw misclassifies, so a later attack, with a fresh
            draw, gets them again); the caller scores ``x_adv`` (e.g. majority over draws).

    Returns:
        (x_adv [N, C, H, W], info) with info = {"attack": display name, "package",
        "package_version", "version", "attacks", "budget", "official_budget",
        "robust_accuracy": {"clean": a, <attack>: fraction not yet fooled after it}, "flags",
        "resumed": attacks loaded from the state, "seed", "n_examples"}.
    """
    check_attack_inputs(x, y, eps, norm)
    pkg_version, version = package_version(), resolve_version(version, randomized)
    with torch.no_grad():
        k = int(model(x[:1]).shape[1])
    check_classes(version, k)
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator,
                                 device=generator.device if generator is not None else "cpu"))
    budget = {"apgd_steps": apgd_steps, "n_target_classes": min(n_target_classes, k - 1), "fab_steps": fab_steps,
              "square_queries": square_queries, "eot_iter": eot_iter}
    adversary = make_adversary(model, eps, norm, version, k, seed, x.device, budget)
    attacks = list(adversary.attacks_to_run)
    key = state_key(model, x, y, eps, norm, version, seed, budget) if state_path else ""
    state = load_state(state_path, key)
    resumed = list(state["done"]) if state else []
    if state is None:
        clean = predict_labels(model, x, batch_size) == y
        robust = torch.ones_like(clean) if randomized else clean  # one unlucky clean draw must not spare a point
        state = {"key": key, "done": [], "robust": robust.cpu(), "x_adv": x.detach().cpu().clone(), "flags": [],
                 "robust_accuracy": {"clean": clean.float().mean().item()}}
    x_adv, robust = state["x_adv"].to(x.device, x.dtype), state["robust"].to(x.device)
    checked = False
    with captured_flags(adversary) as flags:
        flags.flags += [f for f in state["flags"] if f not in flags.flags]
        for attack in attacks:
            if attack in state["done"]:
                continue
            with checks_skipped(k, skip=checked):  # AutoAttack's model checks: once per run, as its own
                fooled, x_adv = _run_one(adversary, attack, x, y, robust, x_adv, batch_size)
            checked = checked or bool(robust.any())
            robust &= ~fooled
            state.update(x_adv=x_adv.cpu(), robust=robust.cpu(), flags=list(flags.flags))
            state["done"].append(attack)
            state["robust_accuracy"][attack] = robust.float().mean().item()
            save_state(state_path, state)
        from pyautoattack import checks
        checks.check_square_sr(state["robust_accuracy"], logger=adversary.logger)
    adversary.attacks_to_run = attacks
    official = _official(budget, version, k)
    info = {"attack": f"AutoAttack {version} ({PACKAGE} {pkg_version}{'' if official else ', reduced budget'}): "
                      + ", ".join(ATTACK_NAMES.get(a, a) for a in attacks),
            "package": PACKAGE, "package_version": pkg_version, "version": version, "attacks": attacks,
            "budget": budget if version == "rand" else {k_: v for k_, v in budget.items() if k_ != "eot_iter"},
            "official_budget": official, "robust_accuracy": dict(state["robust_accuracy"]),
            "flags": list(flags.flags), "resumed": resumed, "seed": seed, "n_examples": int(x.shape[0])}
    return x_adv, info


def _official(budget: dict[str, int], version: str, k: int) -> bool:
    """True when the budget is AutoAttack's own for this version (targets capped at K − 1 count as official)."""
    official = {**OFFICIAL_BUDGET, "n_target_classes": min(OFFICIAL_BUDGET["n_target_classes"], k - 1)}
    keys = ("apgd_steps", "eot_iter") if version == "rand" else ("apgd_steps", "n_target_classes", "fab_steps",
                                                                 "square_queries")
    return all(budget[k_] == official[k_] for k_ in keys)


ATTACKS.register("autoattack")(autoattack)
autoattack.batches_itself = True  # `robust_mim.evaluation.suite.craft` passes all N examples in one call

__all__ = ["AA_NORMS", "OFFICIAL_BUDGET", "PACKAGE", "VERSIONS", "autoattack", "check_classes", "load_state",
           "make_adversary", "min_classes", "package_version", "resolve_version", "save_state", "state_key"]
