"""``attack-adaptive``: MIMIR's extra evaluations of one classifier (paper 2, Xu et al.).

White-box L∞ attacks at the configured ε (8/255), on the same first test images as the shared
suite, one record per attack under ``--out-dir`` plus ``sanity.json``:

- ``pgd-<k>``: plain cross-entropy PGD with k steps (the paper's PGD-20 and PGD-100; the step
  count in the name and in ``params.steps`` is the one that ran);
- ``pgd-feature``: feature-space PGD, maximize ‖F(x′) − F(x)‖₂ on the official
  ``forward_features`` (all tokens before the final norm; ``adaptive_attack/pgd_feature.py``);
- ``pgd-mi-lam<λ>``: PGD-MI, maximize CE + λ·HSIC(F(x′), x′) (official ``pgd_mi.py``).

Each attack runs per batch of ``mimir.batch_size`` images (HSIC is a batch statistic). The
attacks and their batching are `robust_mim.papers.mimir.adaptive`; this module only reads the
job spec, loads the model and writes the records.
"""
from __future__ import annotations

import argparse
import math

from robust_mim.cli import command
from robust_mim.cli import common
from robust_mim.errors import ConfigError
from robust_mim.evaluation.suite import sanity_checks
from robust_mim.papers.mimir.adaptive import adaptive_entries, evaluate_batched
from robust_mim.papers.mimir.methods import pretraining_role
from robust_mim.progress import progress_or_none


def _adaptive_args(p: argparse.ArgumentParser) -> None:
    common.add_model_args(p, common.OUT_DIR)


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
