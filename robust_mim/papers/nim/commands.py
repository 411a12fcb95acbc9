"""``sigma-sweep``: the σ_test trade-off of a De³ model (paper 1, NIM / De³), one record."""
from __future__ import annotations

import argparse
import time

import torch

from robust_mim.cli import command
from robust_mim.cli import common
from robust_mim.errors import ConfigError
from robust_mim.defenses import de3_degradation
from robust_mim.papers.nim.objective import pretraining_label, sigma_tradeoff
from robust_mim.records import make_record, provenance, write_record


def _sweep_args(p: argparse.ArgumentParser) -> None:
    common.add_model_args(p)
    p.add_argument("--denoiser", required=True, help="MAE weights of the De³ denoiser")


@command("sigma-sweep", _sweep_args)
def sigma_sweep(args: argparse.Namespace) -> None:
    """Clean and PGD-EOT accuracy of De³ as the test-time noise σ_test varies (one record)."""
    spec, log = args.spec, common.make_logger(args.log)
    ev, nim, dev = spec["evaluation"], spec["nim"], common.device(spec)
    if not nim["sigma_sweep_255"]:
        raise ConfigError("nim.sigma_sweep_255 is empty: list the σ_test values (1/255 units) to sweep")
    x, y, k = common.first_test_examples(spec, nim["sweep_n_examples"])
    classifier = common.load_classifier(spec, args.weights, k).to(dev)
    denoiser = common.load_mae(spec, args.denoiser).to(dev).requires_grad_(False)
    generator = torch.Generator(device=dev).manual_seed(spec["seed"])
    log(f"sigma-sweep {args.model_id}: σ_test·255 in {nim['sigma_sweep_255']}, PGD-{ev['steps']} "
        f"EOT-{ev['eot_samples']} at ε={nim['sweep_eps_255']}/255 on {len(y)} test images")
    start = time.perf_counter()
    rows = sigma_tradeoff(classifier, denoiser, x.to(dev), y.to(dev), nim["sigma_sweep_255"], nim["sweep_eps_255"] / 255,
                          steps=ev["steps"], eot_samples=ev["eot_samples"], batch_size=ev["batch_size"],
                          generator=generator, degradation=de3_degradation(spec["run"].get("defense")))
    _write_sweep(args, spec, rows, len(y), str(dev), time.perf_counter() - start)


def _write_sweep(args: argparse.Namespace, spec: dict, rows: list[dict], n: int, dev: str, wall: float) -> None:
    ev, nim, run = spec["evaluation"], spec["nim"], spec["run"]
    params = {"attack": "pgd", "norm": "linf", "eps": nim["sweep_eps_255"] / 255, "steps": ev["steps"],
              "restarts": 1, "eot_samples": ev["eot_samples"], "sigma_sweep_255": nim["sigma_sweep_255"],
              "accuracy": "one forward draw per example", "defense": "de3",
              "degradation": de3_degradation(run.get("defense"))}
    write_record(args.out, make_record(
        args.model_id, "sigma-sweep", spec["profile"], rows, n_examples=n, params=params,
        provenance=provenance(spec, spec["seed"], dev, wall, common.evaluated_subset(spec, n)),
        paper=run.get("papers", []),
        scale_note=spec["scale_note"], threat_model="white-box", init=run.get("init"),
        denoiser=run.get("denoiser"), pretraining=pretraining_label(spec.get("denoiser_objective")),
        denoiser_objective=spec.get("denoiser_objective"), method=run.get("method", {}).get("name"),
        defense=run.get("defense")))
    common.make_logger(args.log)(f"wrote {len(rows)} rows to {args.out} in {wall:.1f}s")
