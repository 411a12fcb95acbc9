"""``attack``: the shared robustness evaluation of one model, one record per attack."""
from __future__ import annotations

import argparse

from robust_mim.cli import command
from robust_mim.cli import common
from robust_mim.cli.artifacts import attacked_model
from robust_mim.evaluation.suite import evaluation_suite, run_suite, sanity_checks, scoring_note
from robust_mim.evaluation.worst_case import decode_mask, worst_case_accuracy


def _attack_args(p: argparse.ArgumentParser) -> None:
    common.add_model_args(p, common.OUT_DIR)
    p.add_argument("--denoiser", default=None, help="MAE weights of a De³ denoiser, when the model uses one")
    p.add_argument("--vq", default=None, help="VQ weights of a model that quantizes its input (defense vq, paper 5)")
    p.add_argument("--state-dir", default=None,
                   help="where the official AutoAttack saves its progress, so a killed job resumes "
                        "(default: <log>.state next to --log; none without --log)")


@command("attack", _attack_args)
def attack(args: argparse.Namespace) -> None:
    """Attack one (possibly defended) classifier with the configured suite; write records."""
    spec, log = args.spec, common.make_logger(args.log)
    ev, dev = spec["evaluation"], common.device(spec)
    x, y, k = common.first_test_examples(spec, ev["n_examples"])
    defended, bare, randomized = attacked_model(spec, args.weights, k, args.denoiser, args.vq)
    defended, bare = defended.to(dev), bare.to(dev)
    surrogates = {"bare": bare} if defended is not bare else {}
    state_dir = args.state_dir or (f"{args.log}.state" if args.log else None)
    suite = evaluation_suite(ev, randomized=randomized, has_surrogate=bool(surrogates), state_dir=state_dir)
    generator = common.seeded_generator(spec, dev)
    draws = ev["score_draws"]
    log(f"attack {args.model_id}: {len(suite)} evaluations on {len(y)} test images, randomized={randomized}"
        f" ({scoring_note(randomized, draws)})")
    results = run_suite(defended, x.to(dev), y.to(dev), suite, surrogates=surrogates, randomized=randomized,
                        generator=generator, score_draws=draws, log=log)
    checks = sanity_checks(results, k, randomized)
    _write(args, spec, results, checks, len(y), str(dev))
    log(f"wrote {len(results)} records; failed sanity checks: {', '.join(common.failed_checks(checks)) or 'none'}")
    log(headline_line(results, ev["headline_eps_255"] / 255))


def headline_line(results: list[dict], eps: float) -> str:
    """The per-example worst case over every L∞ attack at ``eps`` (and below), as one log line."""
    rows = sorted(((r["evaluation"], row) for r in results if r["params"].get("norm", "linf") == "linf"
                   for row in r["rows"] if row["eps"] <= eps + 1e-9 and "correct" in row),
                  key=lambda er: (-er[1]["eps"], er[1]["accuracy"]))  # credit the strongest attack first
    masks = {f"{name}@{row['eps'] * 255:g}": decode_mask(row["correct"], row["n_examples"]) for name, row in rows}
    if not masks:
        return "robust accuracy (worst case): no L-inf attack rows"
    res = worst_case_accuracy(masks)
    return (f"robust accuracy (per-example worst case over {len(masks)} attack rows) at {eps * 255:g}/255: "
            f"{res['accuracy']:.3f}; most examples broken by {res['attack']}")


def _write(args: argparse.Namespace, spec: dict, results: list[dict], checks: list[dict], n: int, dev: str) -> None:
    run = spec["run"]
    shared = {"paper": run.get("papers", []), "scale_note": spec["scale_note"], "defense": run.get("defense"),
              "init": run.get("init"), "method": run.get("method", {}).get("name"), "sanity_checks": checks}
    common.write_attack_records(args, spec, results, checks, n, dev, shared=shared, fields=_result_fields,
                                sanity="sanity")


def _result_fields(result: dict) -> dict:
    """Everything a suite result says besides its name, rows, params and wall time (attack, threat model,
    scoring...); the official AutoAttack's package, version, attacks and check flags at the top level."""
    out = {k: v for k, v in result.items() if k not in ("evaluation", "rows", "params", "wall_time_s")}
    infos = [row["attack_info"] for row in result["rows"] if "package" in row.get("attack_info", {})]
    if infos:
        out.update(package=infos[0]["package"], package_version=infos[0]["package_version"],
                   autoattack_version=infos[0]["version"], autoattack_attacks=infos[0]["attacks"],
                   autoattack_flags=sorted({f for i in infos for f in i["flags"]}))
    return out
