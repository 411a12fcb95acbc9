"""``attack``: the shared robustness evaluation of one model, one record per attack."""
from __future__ import annotations

import argparse

from robust_mim.cli import command
from robust_mim.cli import common
from robust_mim.cli.artifacts import attacked_model
from robust_mim.evaluation import default_suite, run_suite, sanity_checks


def _attack_args(p: argparse.ArgumentParser) -> None:
    common.add_model_args(p, common.OUT_DIR)
    p.add_argument("--denoiser", default=None, help="MAE weights of a De³ denoiser, when the model uses one")
    p.add_argument("--vq", default=None, help="VQ weights of a model that quantizes its input (defense vq, paper 5)")


def suite_from_spec(ev: dict, randomized: bool, has_bare: bool) -> list[dict]:
    """The configured evaluation suite as data (ε in 1/255 units in the config → pixel units).

    FGSM and PGD L∞ over the ε grid, the sanity-check attacks of `default_suite` (large ε,
    strong PGD at the headline ε, EOT for randomized models, Square, gray-box), the ART
    AutoAttack-style ensemble at the headline ε, and PGD L2.
    """
    grid, bs = [e / 255 for e in ev["eps_255"]], ev["batch_size"]
    suite = [{"name": "fgsm-linf", "attack": "fgsm", "threat_model": "white-box", "eps": grid, "batch_size": bs}]
    suite += default_suite(
        grid, large_eps=ev["large_eps_255"] / 255, steps=ev["steps"], randomized=randomized, has_surrogate=has_bare,
        restarts=ev["restarts"], strong_steps_factor=ev["strong_steps_factor"], strong_restarts=ev["strong_restarts"],
        eot_samples=ev["eot_samples"], autoattack=False, square_queries=ev["square_queries"], batch_size=bs)
    headline = [ev["headline_eps_255"] / 255]
    square_eps = [e / 255 for e in ev.get("square_eps_255") or ev["eps_255"]]
    for entry in suite:  # the 5x-steps PGD needs only the headline ε for its sanity check; Square its own grid
        if entry["name"].endswith("-strong"):
            entry["eps"] = headline
        elif entry["attack"] == "square":
            entry["eps"] = square_eps
    if ev["autoattack"]:
        suite.append({"name": "autoattack-style-linf", "attack": "autoattack-style", "threat_model": "white-box",
                      "eps": headline, "norm": "linf", "steps": ev["apgd_steps"],
                      "n_target_classes": ev["apgd_target_classes"], "queries": ev["square_queries"],
                      "batch_size": bs})
    if ev["l2_eps"]:
        suite.append({"name": "pgd-l2", "attack": "pgd", "threat_model": "white-box", "norm": "l2",
                      "eps": [0.0, *ev["l2_eps"]], "steps": ev["steps"], "eot_samples": ev["eot_samples"] if randomized else 1,
                      "batch_size": bs})
    return suite


@command("attack", _attack_args)
def attack(args: argparse.Namespace) -> None:
    """Attack one (possibly defended) classifier with the configured suite; write records."""
    spec, log = args.spec, common.make_logger(args.log)
    ev, dev = spec["evaluation"], common.device(spec)
    x, y, k = common.first_test_examples(spec, ev["n_examples"])
    defended, bare, randomized = attacked_model(spec, args.weights, k, args.denoiser, args.vq)
    defended, bare = defended.to(dev), bare.to(dev)
    surrogates = {"bare": bare} if defended is not bare else {}
    suite = suite_from_spec(ev, randomized, bool(surrogates))
    generator = common.seeded_generator(spec, dev)
    log(f"attack {args.model_id}: {len(suite)} evaluations on {len(y)} test images, randomized={randomized}")
    results = run_suite(defended, x.to(dev), y.to(dev), suite, surrogates=surrogates, randomized=randomized,
                        generator=generator, log=log)
    checks = sanity_checks(results, k, randomized)
    _write(args, spec, results, checks, len(y), str(dev))
    log(f"wrote {len(results)} records; failed sanity checks: {', '.join(common.failed_checks(checks)) or 'none'}")


def _write(args: argparse.Namespace, spec: dict, results: list[dict], checks: list[dict], n: int, dev: str) -> None:
    run = spec["run"]
    shared = {"paper": run.get("papers", []), "scale_note": spec["scale_note"], "defense": run.get("defense"),
              "init": run.get("init"), "method": run.get("method", {}).get("name"), "sanity_checks": checks}
    common.write_attack_records(args, spec, results, checks, n, dev, shared=shared, fields=_result_fields,
                                sanity="sanity")


def _result_fields(result: dict) -> dict:
    """Everything a suite result says besides its name, rows, params and wall time (attack, threat model...)."""
    return {k: v for k, v in result.items() if k not in ("evaluation", "rows", "params", "wall_time_s")}
