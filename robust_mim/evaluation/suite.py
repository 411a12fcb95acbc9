"""Honest robustness evaluation: threat models as data, attack suites, and sanity checks.

``run_suite`` runs a list of suite entries (plain dicts, so the pipeline can configure them)
against a defended classifier and returns one result dict per entry. Each entry names an
attack from `robust_mim.attacks.core.ATTACKS`, a threat model from ``THREAT_MODELS`` and an ε grid;
every other key is an attack parameter::

    {"name": "pgd-linf", "attack": "pgd", "threat_model": "white-box",
     "eps": [0, 2/255, 4/255, 8/255, 64/255], "steps": 10, "restarts": 1, "eot_samples": 1}

Gray-box and transfer entries add ``"surrogate": <key of the surrogates dict>``; ``"eot_wrap": K``
runs an attack without its own EOT option (ART's APGD, Square, the official AutoAttack's
standard components) on `ExpectationOverTransformation` of the model (K draws averaged).
Every row records which examples stayed correct (``"correct"``, `robust_mim.evaluation.worst_case`), so
the headline robust accuracy can be the per-example worst case over all attacks.
``sanity_checks`` then tests the results for the usual signs of a broken evaluation
(gradient masking, a too-weak attack), with tolerances derived from the number of examples.
"""
from __future__ import annotations

import inspect
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from robust_mim.attacks.core import (ATTACKS, ExpectationOverTransformation, check_attack_inputs, predict_labels,
                                split_attack_output)
from robust_mim.attacks.autoattack import min_classes, resolve_version
from robust_mim.errors import AttackInputError
from robust_mim.progress import Progress, progress_or_none
from robust_mim.evaluation.verdict import tolerance
from robust_mim.evaluation.worst_case import encode_mask

RESERVED_KEYS = ("name", "attack", "threat_model", "eps", "surrogate", "batch_size", "eot_wrap")
LARGE_EPS_LINF = 32 / 255


@dataclass(frozen=True)
class ThreatModel:
    """What the attacker knows: which model it crafts on and whether it may use gradients."""

    name: str
    crafts_on: str  # "defended" | "surrogate"
    query_only: bool  # True: only the defended model's outputs (score-based attacks)
    description: str


THREAT_MODELS: dict[str, ThreatModel] = {tm.name: tm for tm in (
    ThreatModel("white-box", "defended", False, "gradients through the whole defended model"),
    ThreatModel("gray-box", "surrogate", False,
                "crafted on the bare classifier without the defense, evaluated on the defended model"),
    ThreatModel("black-box", "defended", True, "score-based queries to the defended model only (Square)"),
    ThreatModel("transfer", "surrogate", False, "crafted on another model, evaluated on the defended model"),
)}
QUERY_ONLY_ATTACKS = ("square",)


# ----------------------------------------------------------------------------- accuracy


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on images ``x`` [N, C, H, W] with labels ``y`` [N] (no grad, batched)."""
    if x.shape[0] == 0:
        return float("nan")
    return (predict_labels(model, x, batch_size) == y).float().mean().item()


@contextmanager
def seeded_rng(generator: torch.Generator | None, device: torch.device) -> Iterator[None]:
    """Fork torch's global RNG and seed it from ``generator`` (no-op when None); restored on exit."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# ----------------------------------------------------------------------------- suite entries


@dataclass(frozen=True)
class SuiteEntry:
    """A validated suite entry."""

    name: str
    attack: str
    threat_model: ThreatModel
    eps: tuple[float, ...]
    surrogate: str | None
    batch_size: int
    params: dict[str, Any]  # attack keyword arguments given in the entry
    eot_wrap: int = 1  # > 1: craft on ExpectationOverTransformation(model, eot_wrap)


def _accepts(fn: Callable, key: str) -> bool:
    params = inspect.signature(fn).parameters
    return key in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def parse_entry(entry: Mapping[str, Any], surrogates: Mapping[str, nn.Module]) -> SuiteEntry:
    """Validate one suite entry; every problem raises `AttackInputError` with one line."""
    missing = [k for k in ("name", "attack", "threat_model", "eps") if k not in entry]
    if missing:
        raise AttackInputError(f"suite entry {dict(entry)!r} lacks {', '.join(missing)}")
    name, fn = entry["name"], ATTACKS.get(entry["attack"])
    if entry["threat_model"] not in THREAT_MODELS:
        raise AttackInputError(f"{name}: unknown threat model {entry['threat_model']!r} "
                               f"(known: {', '.join(THREAT_MODELS)})")
    tm, surrogate = THREAT_MODELS[entry["threat_model"]], entry.get("surrogate")
    if tm.crafts_on == "surrogate" and surrogate not in surrogates:
        raise AttackInputError(f"{name}: {tm.name} needs a surrogate; {surrogate!r} is not among "
                               f"{sorted(surrogates) or 'none given'}")
    if tm.query_only and entry["attack"] not in QUERY_ONLY_ATTACKS:
        raise AttackInputError(f"{name}: black-box allows only {', '.join(QUERY_ONLY_ATTACKS)}, "
                               f"not {entry['attack']!r}")
    params = {k: v for k, v in entry.items() if k not in RESERVED_KEYS}
    unknown = [k for k in params if k == "generator" or not _accepts(fn, k)]
    if unknown:
        raise AttackInputError(f"{name}: attack {entry['attack']!r} has no parameter(s) {', '.join(unknown)}")
    eps = tuple(float(e) for e in (entry["eps"] if isinstance(entry["eps"], (list, tuple)) else [entry["eps"]]))
    if any(not e >= 0 for e in eps):
        raise AttackInputError(f"{name}: eps values must be >= 0, got {list(eps)}")
    eot_wrap = entry.get("eot_wrap", 1)
    if not isinstance(eot_wrap, int) or isinstance(eot_wrap, bool) or eot_wrap < 1:
        raise AttackInputError(f"{name}: eot_wrap must be an integer >= 1, got {eot_wrap!r}")
    return SuiteEntry(name, entry["attack"], tm, eps, surrogate, int(entry.get("batch_size", 256)), params, eot_wrap)


def required_classes(spec: SuiteEntry, randomized: bool) -> tuple[int, str]:
    """(classes the entry's attack needs, what needs them): DLR losses, APGD-T and AutoAttack need 3 or 4."""
    p = spec.params
    if spec.attack == "autoattack":
        version = resolve_version(p.get("version", "auto"), randomized and spec.threat_model.crafts_on == "defended")
        return min_classes(version), f"AutoAttack {version}"
    if spec.attack == "apgd-dlr-targeted" or (spec.attack == "apgd" and p.get("loss") == "dlr" and p.get("targeted")):
        return 4, "targeted APGD-DLR"
    if spec.attack == "apgd-dlr" or p.get("loss") == "dlr":
        return 3, "the DLR loss"
    return 1, ""


GRADIENT_FREE_ATTACKS = ("square",)  # black-box: they need no gradient from the model


def preflight(specs: list[SuiteEntry], defended: nn.Module, surrogates: Mapping[str, nn.Module], x: Tensor,
              randomized: bool) -> None:
    """Raise one `AttackInputError` line, before any work, for an attack its model cannot support:
    too few classes (DLR, targeted attacks), or a gradient attack on a model that passes no gradient
    to its input (a non-differentiable step without BPDA)."""
    classes: dict[int, int] = {}
    flows: dict[int, bool] = {}
    for spec in specs:
        need, what = required_classes(spec, randomized)
        model = defended if spec.threat_model.crafts_on == "defended" else surrogates[spec.surrogate]
        if need > 1 and id(model) not in classes:
            with torch.no_grad():
                classes[id(model)] = int(model(x[:1]).shape[1])
        if need > 1 and classes[id(model)] < need:
            raise AttackInputError(f"{spec.name}: {what} needs >= {need} classes; the model has {classes[id(model)]}")
    for spec in specs:
        model = defended if spec.threat_model.crafts_on == "defended" else surrogates[spec.surrogate]
        if spec.attack not in GRADIENT_FREE_ATTACKS and not flows.setdefault(id(model), input_gradient_flows(model, x)):
            raise AttackInputError(f"{spec.name}: the model passes no gradient to its input (a non-differentiable "
                                   "step without BPDA?): wrap that step in robust_mim.attacks.core.BPDA")


def input_gradient_flows(model: nn.Module, x: Tensor) -> bool:
    """Whether a weighted sum of the logits of ``x[:2]`` has a non-zero gradient w.r.t. the input.

    False for a model whose forward pass has a step without a gradient (argmin, rounding, ``.detach()``)
    and no BPDA; a saturated model (huge logits, vanishing cross-entropy) still passes. Torch's RNG
    is restored afterwards, so a randomized model's later draws do not change.
    """
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        probe = x[:2].detach().clone().requires_grad_(True)
        out = model(probe)  # [2, K]
        if not out.requires_grad:
            return False
        weights = torch.arange(1, out.shape[1] + 1, dtype=out.dtype, device=out.device)  # [K]
        (grad,) = torch.autograd.grad((out * weights).sum(), probe, allow_unused=True)
    return grad is not None and bool(grad.abs().sum() > 0)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return getattr(value, "__name__", repr(value))


def full_params(spec: SuiteEntry) -> dict[str, Any]:
    """The attack's parameters as run: its signature defaults overridden by the entry (JSON-safe)."""
    skip = {"model", "x", "y", "eps", "generator", "verbose", "randomized", "state_path"}
    sig = inspect.signature(ATTACKS.get(spec.attack)).parameters
    defaults = {k: p.default for k, p in sig.items() if k not in skip and p.default is not inspect.Parameter.empty}
    wrap = {"eot_wrap": spec.eot_wrap} if spec.eot_wrap > 1 else {}
    return {k: _jsonable(v) for k, v in {**defaults, **spec.params, "batch_size": spec.batch_size, **wrap}.items()}


# ----------------------------------------------------------------------------- running


def _merge_info(infos: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """Merge per-batch attack info: dicts of numbers become size-weighted means, lists are united."""
    merged: dict[str, Any] = {}
    for key in infos[0] if infos else []:
        values = [info[key] for info in infos]
        if isinstance(values[0], dict):
            merged[key] = {k: sum(v[k] * n for v, n in zip(values, sizes)) / sum(sizes) for k in values[0]}
        elif isinstance(values[0], list):
            merged[key] = list(dict.fromkeys(item for v in values for item in v))
        elif key == "n_examples":
            merged[key] = sum(values)
        else:
            merged[key] = values[0]
    return merged


def craft(spec: SuiteEntry, model: nn.Module, x: Tensor, y: Tensor, eps: float,
          generator: torch.Generator | None = None, randomized: bool = False,
          progress: Progress | None = None) -> tuple[Tensor, dict[str, Any]]:
    """Run the entry's attack on ``model`` at ``eps`` in batches -> (x_adv [N, C, H, W], merged info).

    Attacks marked ``batches_itself`` (the official AutoAttack) get all N examples in one call;
    ``randomized`` reaches attacks that take it (AutoAttack chooses its version from it);
    ``progress`` counts one unit per attacked batch of ``spec.batch_size`` examples.
    """
    fn = ATTACKS.get(spec.attack)
    extra = {"generator": generator} if _accepts(fn, "generator") else {}
    if "randomized" in inspect.signature(fn).parameters:
        extra["randomized"] = randomized
    if spec.eot_wrap > 1:
        model = ExpectationOverTransformation(model, spec.eot_wrap)
    if getattr(fn, "batches_itself", False):
        out = split_attack_output(fn(model, x, y, eps=eps, **spec.params, batch_size=spec.batch_size, **extra))
        if progress is not None:
            progress.update(math.ceil(x.shape[0] / spec.batch_size))
        return out
    outs, infos, sizes = [], [], []
    for i in range(0, x.shape[0], spec.batch_size):
        xb, yb = x[i:i + spec.batch_size], y[i:i + spec.batch_size]
        x_adv, info = split_attack_output(fn(model, xb, yb, eps=eps, **spec.params, **extra))
        outs.append(x_adv.detach())
        infos.append(info)
        sizes.append(xb.shape[0])
        if progress is not None:
            progress.update()
    return torch.cat(outs), (infos[0] if len(infos) == 1 else _merge_info(infos, sizes))


def score_correct(model: nn.Module, x: Tensor, y: Tensor, *, randomized: bool = False, draws: int = 1,
                  batch_size: int = 256) -> Tensor:
    """Per-example correctness [N] bool of ``model`` on ``x`` [N, C, H, W], ``y`` [N].

    Deterministic models: one forward pass. Randomized models: correct iff the label wins more
    than half of ``draws`` independent forward draws (``draws=1``: one draw, whose mean over
    examples estimates the expected accuracy of a single draw).
    """
    if not randomized or draws == 1:
        return predict_labels(model, x, batch_size) == y
    votes = sum((predict_labels(model, x, batch_size) == y).int() for _ in range(draws))
    return votes * 2 > draws


def scoring_note(randomized: bool, draws: int) -> str:
    """How `score_correct` scored a model, in words (recorded beside every accuracy)."""
    if not randomized:
        return "deterministic model: one forward pass"
    return "randomized model: one forward draw" if draws == 1 else f"randomized model: majority over {draws} draws"


def run_evaluation(defended: nn.Module, x: Tensor, y: Tensor, entry: Mapping[str, Any], *,
                   surrogates: Mapping[str, nn.Module] | None = None, randomized: bool = False,
                   generator: torch.Generator | None = None, score_draws: int = 1,
                   progress: Progress | None = None) -> dict[str, Any]:
    """One suite entry -> one result dict (see `run_suite`); ``progress`` counts attacked batches."""
    surrogates = surrogates or {}
    spec = parse_entry(entry, surrogates)
    on_defended = spec.threat_model.crafts_on == "defended"
    attacker = defended if on_defended else surrogates[spec.surrogate]
    start, rows = time.perf_counter(), []
    for eps in spec.eps:
        with seeded_rng(generator, x.device):
            x_adv, info = (x, {}) if eps == 0 else craft(spec, attacker, x, y, eps, generator,
                                                         randomized and on_defended, progress)
        with seeded_rng(generator, x.device) if randomized else nullcontext():
            correct = score_correct(defended, x_adv, y, randomized=randomized, draws=score_draws,
                                    batch_size=spec.batch_size)
        n_correct = int(correct.sum())
        rows.append({"eps": eps, "accuracy": n_correct / max(1, x.shape[0]), "n_correct": n_correct,
                     "n_examples": int(x.shape[0]), "correct": encode_mask(correct),
                     **({"attack_info": info} if info else {})})
    return {"evaluation": spec.name, "attack": spec.attack, "threat_model": spec.threat_model.name,
            "surrogate": spec.surrogate, "params": full_params(spec), "rows": rows,
            "scoring": scoring_note(randomized, score_draws), "wall_time_s": time.perf_counter() - start}


def run_suite(defended: nn.Module, x: Tensor, y: Tensor, suite: list[dict[str, Any]], *,
              surrogates: Mapping[str, nn.Module] | None = None, randomized: bool = False,
              generator: torch.Generator | None = None, score_draws: int = 1,
              log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Evaluate ``defended`` under every entry of ``suite`` (all entries are validated first).

    Adversarial examples are crafted on the defended model (white-box, black-box) or on
    ``surrogates[entry["surrogate"]]`` (gray-box, transfer), always evaluated on ``defended``.
    With ``randomized=True`` each accuracy is one forward draw per example under a global RNG
    seeded from ``generator`` (forked, so torch's RNG is left as it was); crafting is seeded the
    same way; with ``score_draws`` = K > 1 an example counts as correct when it is classified
    correctly in more than half of K draws (`score_correct`; recorded as ``"scoring"``). ε = 0
    rows are clean accuracy. Every entry is validated, and checked against the number of classes
    its model has (`preflight`), before any attack runs.

    Args:
        defended: the whole defended classifier [N, C, H, W] in [0, 1] -> logits [N, K], in eval mode.
        x: images [N, C, H, W] in [0, 1]; y: labels [N].
        suite: entries ``{"name", "attack", "threat_model", "eps": float | list, ["surrogate"],
            ["batch_size"], **attack params}``.
        log: where to write progress lines (every few percent of the attacked batches), if anywhere.

    Returns:
        one dict per entry: ``{"evaluation", "attack", "threat_model", "surrogate", "params",
        "rows": [{"eps", "accuracy", "n_correct", "n_examples", "correct" (hex bitstring of the [N]
        correctness mask), ["attack_info"]}], "scoring", "wall_time_s"}``.
    """
    check_attack_inputs(x, y, 0.0)
    if not isinstance(score_draws, int) or score_draws < 1:
        raise AttackInputError(f"score_draws must be an integer >= 1, got {score_draws!r}")
    specs = [parse_entry(entry, surrogates or {}) for entry in suite]
    preflight(specs, defended, surrogates or {}, x, randomized)
    batches = sum(sum(e != 0 for e in s.eps) * math.ceil(x.shape[0] / s.batch_size) for s in specs)
    progress = progress_or_none(batches, log, "attack", "batches")
    return [run_evaluation(defended, x, y, entry, surrogates=surrogates, randomized=randomized, generator=generator,
                           score_draws=score_draws, progress=progress) for entry in suite]


# ----------------------------------------------------------------------------- the profile's suite

# the official AutoAttack's budget: its parameter -> the evaluation key that sets it
AUTOATTACK_KEYS = {"apgd_steps": "aa_apgd_steps", "n_target_classes": "aa_target_classes",
                   "fab_steps": "aa_fab_steps", "square_queries": "aa_square_queries", "eot_iter": "aa_eot_iter"}


def evaluation_suite(ev: Mapping[str, Any], *, randomized: bool, has_surrogate: bool, state_dir: str | None = None,
                     transfer_surrogates: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The evaluation suite as data, built from the profile's ``evaluation`` values (ε in 1/255 → pixels).

    In order: FGSM and PGD L∞ over the ε grid (PGD also at ``large_eps_255``, the "accuracy reaches
    chance" check); strong PGD (``strong_steps_factor``× steps, ``strong_restarts``) at the headline ε,
    the "more steps do not raise accuracy" check; PGD with EOT (``eot_samples`` gradients) on a
    randomized model, the "EOT not weaker" check; black-box Square over ``square_eps_255`` (null: the
    ε grid); gray-box PGD on the bare classifier (``has_surrogate``) and transfer PGD from each of
    ``transfer_surrogates``, the "not stronger than white-box" check; the official AutoAttack
    (``autoattack_official``: standard, or rand on a randomized model; budget ``aa_*``; its progress
    under ``state_dir``) and the ART AutoAttack-style ensemble (``autoattack``, the second opinion) at
    the headline ε; PGD L2 over ``l2_eps``. On a randomized model every attack is EOT: PGD averages
    ``eot_samples`` gradients, the ensemble and Square attack the ``eot_samples``-draw average
    (``eot_wrap``), AutoAttack runs its rand version.
    """
    grid, headline, bs = [e / 255 for e in ev["eps_255"]], [ev["headline_eps_255"] / 255], ev["batch_size"]
    wide = sorted(set(grid + ([ev["large_eps_255"] / 255] if ev["large_eps_255"] else [])))
    eot = {"eot_wrap": ev["eot_samples"]} if randomized and ev["eot_samples"] > 1 else {}
    pgd = {"attack": "pgd", "threat_model": "white-box", "norm": "linf", "batch_size": bs}
    plain = {"steps": ev["steps"], "restarts": ev["restarts"]}
    suite = [{"name": "fgsm-linf", "attack": "fgsm", "threat_model": "white-box", "eps": grid, "batch_size": bs},
             {"name": "pgd-linf", **pgd, "eps": wide, **plain, "eot_samples": 1},
             {"name": "pgd-linf-strong", **pgd, "eps": headline, "steps": ev["steps"] * ev["strong_steps_factor"],
              "restarts": ev["strong_restarts"], "eot_samples": 1}]
    if randomized:
        suite.append({"name": "pgd-linf-eot", **pgd, "eps": wide, **plain, "eot_samples": ev["eot_samples"]})
    suite.append({"name": "square-linf", "attack": "square", "threat_model": "black-box", "norm": "linf",
                  "eps": [e / 255 for e in ev["square_eps_255"] or ev["eps_255"]], "queries": ev["square_queries"],
                  "batch_size": bs, **eot})
    if has_surrogate:
        suite.append({"name": "pgd-linf-gray-box", **pgd, "threat_model": "gray-box", "surrogate": "bare",
                      "eps": sorted(set(grid)), **plain})
    suite += [{"name": f"pgd-linf-transfer-{s}", **pgd, "threat_model": "transfer", "surrogate": s,
               "eps": sorted(set(grid)), **plain} for s in transfer_surrogates]
    if ev["autoattack_official"]:
        suite.append(autoattack_entry(ev, state_dir))
    if ev["autoattack"]:
        suite.append({"name": "autoattack-style-linf", "attack": "autoattack-style", "threat_model": "white-box",
                      "eps": headline, "norm": "linf", "steps": ev["apgd_steps"],
                      "n_target_classes": ev["apgd_target_classes"], "queries": ev["square_queries"],
                      "batch_size": bs, **eot})
    if ev["l2_eps"]:
        suite.append({"name": "pgd-l2", **pgd, "norm": "l2", "eps": [0.0, *ev["l2_eps"]], "steps": ev["steps"],
                      "eot_samples": ev["eot_samples"] if randomized else 1})
    return suite


def autoattack_entry(ev: Mapping[str, Any], state_dir: str | None = None) -> dict[str, Any]:
    """The official AutoAttack at the headline ε (version auto: standard, or rand for randomized models).

    Its budget is ``aa_*`` of the evaluation values (the schema's defaults are AutoAttack's own,
    `robust_mim.attacks.autoattack.OFFICIAL_BUDGET`); records say whether it was the official budget.
    """
    budget = {param: ev[key] for param, key in AUTOATTACK_KEYS.items()}
    state = {"state_path": str(Path(state_dir) / "autoattack-linf.pt")} if state_dir else {}
    return {"name": "autoattack-linf", "attack": "autoattack", "threat_model": "white-box",
            "eps": [ev["headline_eps_255"] / 255], "norm": "linf", "version": "auto", **budget,
            "batch_size": ev["batch_size"], **state}


# ----------------------------------------------------------------------------- sanity checks


def _norm(result: dict[str, Any]) -> str:
    return result["params"].get("norm", "linf")


def _rows(result: dict[str, Any]) -> dict[float, dict[str, Any]]:
    return {round(r["eps"], 9): r for r in result["rows"]}


def _verdict(name: str, comparisons: list[dict[str, Any]], reason: str, **details: Any) -> dict[str, Any]:
    """Check dict: passed = all comparisons ok (None with ``reason`` when there is nothing to compare)."""
    if not comparisons:
        return {"check": name, "passed": None, "details": {"reason": reason, **details}}
    failed = sum(not c["ok"] for c in comparisons)
    return {"check": name, "passed": failed == 0,
            "details": {"n_comparisons": len(comparisons), "n_failed": failed, **details, "comparisons": comparisons}}


def _compare(evaluation: str, eps: float, value: float, bound: float, tol: float, **extra: Any) -> dict[str, Any]:
    """One comparison: ok iff ``value <= bound + tol``."""
    return {"evaluation": evaluation, "eps": eps, "accuracy": value, "bound": bound, "tolerance": tol,
            "ok": value <= bound + tol, **extra}


def check_monotone_in_eps(results: list[dict[str, Any]], z: float, slack: int) -> dict[str, Any]:
    """(1) Accuracy at each ε is not above the lowest accuracy at any smaller ε (+ tolerance)."""
    comps = []
    for res in results:
        rows, best = sorted(res["rows"], key=lambda r: r["eps"]), None
        for row in rows:
            if best is not None:
                tol = tolerance(best, row["n_examples"], z, slack)
                comps.append(_compare(res["evaluation"], row["eps"], row["accuracy"], best, tol))
            best = row["accuracy"] if best is None else min(best, row["accuracy"])
    return _verdict("accuracy_non_increasing_in_eps", comps, "no evaluation has two or more eps values")


def check_large_eps_reaches_chance(results: list[dict[str, Any]], num_classes: int, large_eps: float,
                                   z: float, slack: int) -> dict[str, Any]:
    """(2) At ε >= ``large_eps`` (L∞) the strongest white-box attack leaves accuracy <= chance + margin."""
    chance, best = 1.0 / num_classes, {}
    for res in results:
        if res["threat_model"] == "white-box" and _norm(res) == "linf":
            for row in res["rows"]:
                if row["eps"] >= large_eps - 1e-9 and row["accuracy"] <= best.get(row["eps"], (2.0,))[0]:
                    best[row["eps"]] = (row["accuracy"], row["n_examples"], res["evaluation"])
    comps = [_compare(ev, eps, acc, chance, tolerance(chance, n, z, slack))
             for eps, (acc, n, ev) in sorted(best.items())]
    return _verdict("large_eps_accuracy_at_chance", comps, f"no white-box L-inf row with eps >= {large_eps:.4f}",
                    chance=chance, large_eps=large_eps)


def _family(res: dict[str, Any], *drop: str) -> tuple:
    """Key of results that differ only in the ``drop``-ped parameters."""
    params = {k: v for k, v in res["params"].items() if k not in drop + ("batch_size",)}
    return (res["attack"], res["threat_model"], res.get("surrogate"),
            tuple(sorted((k, repr(v)) for k, v in params.items())))


def _paired(results, drop: tuple[str, ...], stronger: Callable[[dict, dict], bool], z: float, slack: int):
    """Comparisons 'stronger result's accuracy <= weaker's + tol' over result pairs in one family."""
    comps = []
    for a in results:
        for b in results:
            if a is b or _family(a, *drop) != _family(b, *drop) or not stronger(a, b):
                continue
            rows_b = _rows(b)
            for key, row in _rows(a).items():
                if key in rows_b and key > 0:
                    ref = rows_b[key]["accuracy"]
                    comps.append(_compare(a["evaluation"], row["eps"], row["accuracy"], ref,
                                          tolerance(ref, row["n_examples"], z, slack), against=b["evaluation"]))
    return comps


def check_strong_attack_not_weaker(results: list[dict[str, Any]], z: float, slack: int) -> dict[str, Any]:
    """(3) More steps × restarts never RAISE accuracy: strong accuracy <= plain accuracy + tol."""
    def budget(r):
        return r["params"].get("steps", 1) * r["params"].get("restarts", 1)

    comps = _paired(results, ("steps", "restarts", "step_size"), lambda a, b: budget(a) > budget(b), z, slack)
    return _verdict("more_steps_restarts_not_weaker", comps,
                    "no two evaluations differ only in steps/restarts")


def check_white_box_strongest(results: list[dict[str, Any]], z: float, slack: int) -> dict[str, Any]:
    """(4) Black-box, gray-box and transfer accuracy >= best white-box accuracy − tol (same ε, norm)."""
    white: dict[tuple[str, float], tuple[float, str]] = {}
    for res in results:
        if res["threat_model"] == "white-box":
            for key, row in _rows(res).items():
                if row["accuracy"] < white.get((_norm(res), key), (2.0,))[0]:
                    white[(_norm(res), key)] = (row["accuracy"], res["evaluation"])
    comps = []
    for res in results:
        if res["threat_model"] in ("black-box", "gray-box", "transfer"):
            for key, row in _rows(res).items():
                if key > 0 and (_norm(res), key) in white:
                    wb, wb_name = white[(_norm(res), key)]
                    # white-box accuracy must not exceed this weaker attack's accuracy (+ tol)
                    comps.append(_compare(wb_name, row["eps"], wb, row["accuracy"],
                                          tolerance(row["accuracy"], row["n_examples"], z, slack),
                                          against=res["evaluation"], threat_model=res["threat_model"]))
    return _verdict("white_box_strongest", comps, "no black-box/gray-box/transfer result with a white-box "
                    "result at the same eps and norm")


def check_eot_not_weaker(results: list[dict[str, Any]], randomized: bool, z: float, slack: int) -> dict[str, Any]:
    """(5) For randomized models: EOT accuracy <= single-draw accuracy + tol (same attack otherwise)."""
    if not randomized:
        return _verdict("eot_not_weaker_than_single_draw", [], "model is deterministic: EOT is not needed")
    white = [r for r in results if r["threat_model"] == "white-box" and "eot_samples" in r["params"]]
    def eot_vs_single(a: dict, b: dict) -> bool:
        return a["params"]["eot_samples"] > 1 and b["params"]["eot_samples"] == 1

    comps = _paired(white, ("eot_samples",), eot_vs_single, z, slack)
    return _verdict("eot_not_weaker_than_single_draw", comps,
                    "no pair of white-box evaluations differing only in eot_samples (> 1 vs 1)")


def sanity_checks(results: list[dict[str, Any]], num_classes: int, randomized: bool, *,
                  large_eps: float = LARGE_EPS_LINF, z: float = 2.0, slack_examples: int = 2) -> list[dict[str, Any]]:
    """Automatic checks of an evaluation (Carlini et al. 2019; Athalye et al. 2018).

    1. accuracy is non-increasing in ε; 2. at ε >= ``large_eps`` (L∞) white-box accuracy is
    at most chance + margin; 3. more steps/restarts do not raise accuracy; 4. black-box,
    gray-box and transfer attacks are not stronger than white-box; 5. for randomized models
    EOT is not weaker than a single draw. Each comparison allows ``tolerance(p, n)`` =
    z·√(p(1−p)/n) + slack_examples/n, recorded in the details.

    Returns:
        five dicts ``{"check", "passed": bool | None, "details"}``; ``passed`` is None (with
        ``details["reason"]``) when the results contain nothing to compare.
    """
    settings = {"z": z, "slack_examples": slack_examples}
    checks = [check_monotone_in_eps(results, z, slack_examples),
              check_large_eps_reaches_chance(results, num_classes, large_eps, z, slack_examples),
              check_strong_attack_not_weaker(results, z, slack_examples),
              check_white_box_strongest(results, z, slack_examples),
              check_eot_not_weaker(results, randomized, z, slack_examples)]
    for check in checks:
        check["details"].update(settings)
    return checks


__all__ = ["AUTOATTACK_KEYS", "THREAT_MODELS", "QUERY_ONLY_ATTACKS", "LARGE_EPS_LINF", "SuiteEntry", "ThreatModel",
           "accuracy", "autoattack_entry", "craft", "evaluation_suite", "full_params", "parse_entry", "preflight",
           "required_classes", "run_evaluation",
           "run_suite", "sanity_checks", "score_correct", "scoring_note", "seeded_rng", "tolerance"]
