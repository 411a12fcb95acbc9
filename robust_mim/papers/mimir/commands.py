"""``attack-adaptive``: MIMIR's extra evaluations of one classifier (paper 2, Xu et al.).

White-box L∞ attacks at the configured ε (8/255), on the same first test images as the shared
suite, one record per attack under ``--out-dir`` plus ``sanity.json``:

- ``pgd-<k>``: plain cross-entropy PGD with k steps (the paper's PGD-20 and PGD-100; the step
  count in the name and in ``params.steps`` is the one that ran);
- ``pgd-feature``: feature-space PGD, maximize ‖embed(x′) − embed(x)‖₂ (official
  ``adaptive_attack/pgd_feature.py``);
- ``pgd-mi-lam<λ>``: PGD-MI, maximize CE + λ·HSIC(embed(x′), x′) (official ``pgd_mi.py``).

Each attack runs per batch of ``mimir.batch_size`` images (HSIC is a batch statistic).
"""
from __future__ import annotations

import argparse
import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from robust_mim.papers.mimir.adaptive import feature_distance_loss, pgd_mi_loss
from robust_mim.papers.mimir.methods import pretraining_role
from robust_mim.cli import command
from robust_mim.cli import common
from robust_mim.errors import ConfigError
from robust_mim.evaluation.suite import run_evaluation, sanity_checks
from robust_mim.progress import Progress, progress_or_none
from robust_mim.evaluation.worst_case import decode_mask, encode_mask
from robust_mim.papers.mimir.methods import hsic_estimator

EntryFn = Callable[[Tensor], dict[str, Any]]  # clean batch [B, 3, H, W] -> suite entry


def _adaptive_args(p: argparse.ArgumentParser) -> None:
    common.add_model_args(p, common.OUT_DIR)


def adaptive_entries(cfg: dict[str, Any]) -> list[tuple[EntryFn, dict[str, Any]]]:
    """The configured attacks as (batch → suite entry, descriptive params for the record)."""
    eps = [e / 255 for e in cfg["eps_255"]]
    pgd = {"attack": "pgd", "threat_model": "white-box", "eps": eps, "norm": "linf",
           "step_size": cfg["step_255"] / 255, "restarts": cfg["restarts"], "eot_samples": 1}
    out: list[tuple[EntryFn, dict[str, Any]]] = []
    for k in cfg["pgd_steps"]:
        out.append((lambda xb, k=k: {"name": f"pgd-{k}", **pgd, "steps": k}, {"loss": "ce"}))
    feature = {"loss": "feature-distance: ||embed(x') - embed(x)||_2", "adaptive": True}
    out.append((lambda xb: {"name": "pgd-feature", **pgd, "steps": cfg["feature_steps"],
                            "loss": feature_distance_loss(xb)}, feature))
    hsic_fn = hsic_estimator(cfg["hsic"])
    for lam in cfg["mi_lams"]:
        mi = {"loss": "PGD-MI: CE + lam * HSIC(embed(x'), x')", "lam": lam, "hsic": cfg["hsic"],
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


@command("attack-adaptive", _adaptive_args)
def attack_adaptive(args: argparse.Namespace) -> None:
    """MIMIR's PGD-k, feature-space PGD and PGD-MI against one classifier; one record per attack."""
    spec, log = args.spec, common.make_logger(args.log)
    cfg, run, dev = spec["mimir"], spec["run"], common.device(spec)
    if run.get("defense"):
        raise ConfigError(f"attack-adaptive targets undefended classifiers; '{run['id']}' has a defense")
    x, y, k = common.first_test_examples(spec, cfg["n_examples"])
    model = common.load_classifier(spec, args.weights, k).to(dev)
    x, y = x.to(dev), y.to(dev)
    generator = common.seeded_generator(spec, dev)
    entries, results = adaptive_entries(cfg), []
    batches = math.ceil(len(y) / cfg["batch_size"]) * len(entries) * sum(e != 0 for e in cfg["eps_255"])
    progress = progress_or_none(batches, log, "attack-adaptive", "batches")
    for entry_for, described in entries:
        res = evaluate_batched(model, x, y, entry_for, cfg["batch_size"], generator, progress)
        res["params"].update(described)
        results.append(res)
        log(f"{args.model_id} {res['evaluation']}: " + ", ".join(
            f"eps={r['eps'] * 255:g}/255 acc={r['accuracy']:.3f}" for r in res["rows"]))
    checks = sanity_checks(results, k, randomized=False)
    _write(args, spec, results, checks, len(y), str(dev))
    log(f"wrote {len(results)} records; failed sanity checks: {', '.join(common.failed_checks(checks)) or 'none'}")


def _write(args: argparse.Namespace, spec: dict, results: list[dict], checks: list[dict], n: int, dev: str) -> None:
    run = spec["run"]
    shared = {"paper": run.get("papers", []), "scale_note": spec["scale_note"], "init": run.get("init"),
              "method": run.get("method", {}).get("name"), "method_params": run.get("method", {}),
              "pretraining": pretraining_role(spec.get("pretrain_objective")),
              "pretrain_objective": spec.get("pretrain_objective"), "sanity_checks": checks}
    common.write_attack_records(args, spec, results, checks, n, dev, shared=shared, sanity="sanity-adaptive",
                                fields=lambda r: {"attack": r["attack"], "threat_model": r["threat_model"]})
