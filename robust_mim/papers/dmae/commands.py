"""``certify``: randomized-smoothing certification of one classifier at one σ (paper 3, DMAE).

Runs Cohen et al.'s CERTIFY on the first ``dmae.n_examples`` test images and writes one record:
rows = certified accuracy per radius (a fine grid that includes the table radii), ``images`` =
Cohen's per-image table, the certification parameters (σ, N0, N, α, number of images, the
largest radius N allows), and the empirical check: L2 PGD-EOT against the smoothed classifier at
each certified-correct image's own radius must not change PREDICT's answer.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from robust_mim.certify import Smooth, certificate_check, certification_rows, certify_dataset, max_certifiable_radius
from robust_mim.cli import command
from robust_mim.cli import common
from robust_mim.errors import ConfigError
from robust_mim.io import atomic_write_text
from robust_mim.papers.dmae.certification import certification_checks, certification_note, empirical_check
from robust_mim.progress import Progress
from robust_mim.records import make_record, provenance, write_record

def _certify_args(p: argparse.ArgumentParser) -> None:
    common.add_model_args(p, ("--out", "the certification record (.json)"))
    p.add_argument("--sigma", type=float, required=True, help="smoothing noise σ in [0, 1] pixel units")
    p.add_argument("--state-dir", default=None,
                   help="where certification saves its progress after each image, so a killed job resumes with "
                        "the same result (default: <log>.state next to --log; none without --log)")


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
    state_dir = args.state_dir or (f"{args.log}.state" if args.log else None)
    state = Path(state_dir) / "certify.json" if state_dir else None
    key = certify_state_key(args, spec, len(y), dev)
    done, before_s = resume_certification(state, key, generator, log)
    t0 = time.perf_counter()
    images = certify_dataset(smooth, x.to(dev), y.to(dev), cfg["n0"], cfg["n"], cfg["alpha"], cfg["batch_size"],
                             generator, Progress(len(y) - len(done), log, "certify", "images"), done,
                             lambda rows: save_certification(state, key, rows, generator) if state else None)
    t_cert = before_s + time.perf_counter() - t0
    attack_rows = empirical_check(smooth, x, images, cfg, generator)
    record = certification_record(args, spec, images, attack_rows, str(dev), t_cert, time.perf_counter() - t0)
    write_record(args.out, record)
    if state is not None:
        state.unlink(missing_ok=True)
    failed = common.failed_checks(record["sanity_checks"])
    log(f"certified accuracy {record['certified_accuracy']}; certify {t_cert:.1f}s, attack "
        f"{time.perf_counter() - t0 - t_cert:.1f}s; failed sanity checks: {', '.join(failed) or 'none'}")


def certify_state_key(args: argparse.Namespace, spec: dict, n_images: int, dev: torch.device) -> dict[str, Any]:
    """What a saved certification state must match to be resumed: the model's weights (sha256), σ, the
    certification parameters, the seed, the number of images and the device type (its generator state)."""
    cfg = spec["dmae"]
    weights = hashlib.sha256(Path(args.weights).read_bytes()).hexdigest()
    return {"model_id": args.model_id, "weights_sha256": weights, "sigma": args.sigma, "seed": spec["seed"],
            "n_images": n_images, "device": dev.type, **{k: cfg[k] for k in ("n0", "n", "alpha", "batch_size")}}


def save_certification(state: Path, key: dict[str, Any], rows: list[dict], generator: torch.Generator) -> None:
    """Atomically save the rows certified so far and the generator's state after the last of them."""
    blob = base64.b64encode(generator.get_state().numpy().tobytes()).decode()
    atomic_write_text(state, json.dumps({"key": key, "rows": rows, "generator_state": blob}))


def resume_certification(state: Path | None, key: dict[str, Any], generator: torch.Generator,
                         log: Callable[[str], None]) -> tuple[list[dict], float]:
    """(rows certified before, their seconds) from a saved state that matches ``key``, with ``generator``
    restored to its state after them, so the resumed run certifies exactly as an uninterrupted one;
    ([], 0.0) without one. A state that does not match or cannot be read is set aside, and said so."""
    if state is None or not state.is_file():
        return [], 0.0
    try:
        saved = json.loads(state.read_text(encoding="utf-8"))
        matches = saved["key"] == key
        if matches:
            raw = torch.frombuffer(bytearray(base64.b64decode(saved["generator_state"])), dtype=torch.uint8)
            generator.set_state(raw)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        log(f"certification state {state} unreadable ({exc}): starting from the first image")
        return [], 0.0
    if not matches:
        log(f"certification state {state} is of another model or setting: starting from the first image")
        return [], 0.0
    rows = saved["rows"]
    log(f"resumed certification from {state}: {len(rows)} of {key['n_images']} images done")
    return rows, sum(r["time_s"] for r in rows)


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
