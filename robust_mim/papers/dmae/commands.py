"""``certify``: randomized-smoothing certification of one classifier at one σ (paper 3, DMAE).

Runs Cohen et al.'s CERTIFY on the first ``dmae.n_examples`` test images and writes one record:
rows = certified accuracy per radius (a fine grid that includes the table radii), ``images`` =
Cohen's per-image table, the certification parameters (σ, N0, N, α, number of images, the
largest radius N allows), and the empirical check: L2 PGD-EOT against the smoothed classifier at
each certified-correct image's own radius must not change PREDICT's answer.
"""
from __future__ import annotations

import argparse
import time

from robust_mim.certify import Smooth, certificate_check, certification_rows, certify_dataset, max_certifiable_radius
from robust_mim.cli import command
from robust_mim.cli import common
from robust_mim.errors import ConfigError
from robust_mim.papers.dmae.certification import certification_checks, certification_note, empirical_check
from robust_mim.progress import Progress
from robust_mim.records import make_record, provenance, write_record

def _certify_args(p: argparse.ArgumentParser) -> None:
    common.add_model_args(p, ("--out", "the certification record (.json)"))
    p.add_argument("--sigma", type=float, required=True, help="smoothing noise σ in [0, 1] pixel units")


@command("certify", _certify_args)
def certify(args: argparse.Namespace) -> None:
    """Certify a Gaussian-smoothed classifier (Cohen et al. 2019 CERTIFY) and check it with PGD-EOT."""
    spec, log = args.spec, common.make_logger(args.log)
    cfg, dev = spec["dmae"], common.device(spec)
    x, y, k = common.first_test_examples(spec, cfg["n_examples"])
    smooth = Smooth(common.load_classifier(spec, args.weights, k).to(dev), k, args.sigma)
    generator = common.seeded_generator(spec, dev)
    log(f"certify {args.model_id} at sigma={args.sigma}: {len(y)} images, N0={cfg['n0']}, N={cfg['n']}, "
        f"alpha={cfg['alpha']}")
    t0 = time.perf_counter()
    images = certify_dataset(smooth, x.to(dev), y.to(dev), cfg["n0"], cfg["n"], cfg["alpha"], cfg["batch_size"],
                             generator, Progress(len(y), log, "certify", "images"))
    t_cert = time.perf_counter() - t0
    attack_rows = empirical_check(smooth, x, images, cfg, generator)
    record = certification_record(args, spec, images, attack_rows, str(dev), t_cert, time.perf_counter() - t0)
    write_record(args.out, record)
    failed = common.failed_checks(record["sanity_checks"])
    log(f"certified accuracy {record['certified_accuracy']}; certify {t_cert:.1f}s, attack "
        f"{time.perf_counter() - t0 - t_cert:.1f}s; failed sanity checks: {', '.join(failed) or 'none'}")


def certification_record(args: argparse.Namespace, spec: dict, images: list[dict], attack_rows: list[dict],
                         dev: str, t_cert: float, wall: float) -> dict:
    """The record of one model × σ (see the module docstring)."""
    cfg, run = spec["dmae"], spec["run"]
    if not images:
        raise ConfigError("dmae.n_examples selected no test image")
    max_radius = max_certifiable_radius(args.sigma, cfg["n"], cfg["alpha"])
    rows = certification_rows(images, cfg["radii"], max_radius)
    summary = certificate_check(attack_rows, cfg["alpha"]) if attack_rows else []
    params = {k: cfg[k] for k in ("n0", "n", "alpha", "batch_size", "attack_examples", "attack_steps",
                                  "attack_noise_samples", "attack_eot_samples", "attack_factors")}
    model = {"init": run.get("init"), "pretrain_objective": spec.get("pretrain_objective"),
             "method": run["method"]["name"], "train_sigma": run["method"].get("sigma"),
             "train_epochs": run.get("epochs"), "paper": run.get("papers", [])}
    certification = {
        "sigma": args.sigma, "n0": cfg["n0"], "n": cfg["n"], "alpha": cfg["alpha"], "n_images": len(images),
        "max_radius": max_radius, "certify_time_s": round(t_cert, 3),
        "certification_note": certification_note(cfg, args.sigma, max_radius),
        "certified_accuracy": {f"{r['radius']:g}": r["certified_accuracy"] for r in rows if r["in_table"]},
        "abstain_fraction": sum(r["predict"] == Smooth.ABSTAIN for r in images) / len(images)}
    return make_record(
        args.model_id, "certify", spec["profile"], rows, n_examples=len(images),
        params={"sigma": args.sigma, **params, "attack": "pgd-l2-eot on GaussianNoiseEnsemble, then PREDICT"},
        provenance=provenance(spec, spec["seed"], dev, wall, common.evaluated_subset(spec, len(images))),
        scale_note=spec["scale_note"], **model,
        **certification, images=images, empirical_check={"summary": summary, "rows": attack_rows},
        sanity_checks=certification_checks(images, rows, summary, max_radius))
