"""Paper 5 (DAT, Mao et al., NeurIPS 2022): ``train-vq`` and ``corruption-eval``.

- ``train-vq`` trains the VQ autoencoder that defines DAT's discrete image space Q(x) on the
  profile's train split (`robust_mim.engine.fit`, loss `VQAutoencoder.vq_loss`), saves its
  weights with the architecture in the safetensors metadata (so ``finetune --vq`` can rebuild it,
  `load_vq`), writes a record of the reconstruction PSNR and codebook usage on the test split,
  and a PNG of test images (top row) above their reconstructions Q(x) (bottom row).
- ``corruption-eval`` measures a classifier on the corruption benchmark: the 15 corruptions of
  Hendrycks & Dietterich × the configured severities, generated on the fly from the evaluation
  subset of the test split (`robust_mim.corruptions.corrupt`), or read from the CIFAR-10-C ``.npy``
  files (``dat.corruption.cifar10c_root``) or the ImageNet-C folders (``dat.corruption.imagenet_c_root``).
  One record: per-cell error, clean error, error per corruption (mean over severities), their mean
  ``mean_corruption_error`` (unnormalised, a plain error rate) and, on ImageNet-C at severities 1–5,
  ``mCE_alexnet`` — the paper's mCE, each corruption's error divided by AlexNet's
  (`robust_mim.corruption_benchmark.alexnet_mce`). The error relative to the profile's standard model
  is computed from the records by `robust_mim.papers.dat.tables`.

A model that quantizes its input at test time (a run with ``defense: {name: vq}`` and ``vq: <id>``,
`robust_mim.defenses.QuantizedInput`) is evaluated behind Q here, and attacked by the shared
``attack`` command through `robust_mim.attacks.core.BPDA`: Q forward, the identity backward.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robust_mim.attacks.core import predict_labels
from robust_mim.cli import command
from robust_mim.cli import common
from robust_mim.corruptions import CORRUPTION_NAMES
from robust_mim.corruption_benchmark import SEVERITIES
from robust_mim.data import evaluation_subset, first_examples, num_classes
from robust_mim.defenses import build_defense
from robust_mim.engine import fit
from robust_mim.models.vq import VQ_ARCH_KEYS, build_vq, load_vq, save_vq
from robust_mim.papers.dat.checks import check_corruption
from robust_mim.papers.dat.measures import (benchmark_files, benchmark_name, corruption_error_rows,
                                            corruption_sanity_checks, error_summary, reconstruction_stats,
                                            save_reconstruction_grid, vq_sanity_checks)
from robust_mim.records import config_hash, make_record, provenance, write_record

# ----------------------------------------------------------------------------- train-vq


def _vq_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="VQ autoencoder weights (.safetensors)")
    p.add_argument("--run-dir", required=True, help="folder for checkpoint.pt and metrics.jsonl")
    p.add_argument("--record", required=True, help="record of reconstruction PSNR and codebook usage (.json)")
    p.add_argument("--figure", required=True, help="PNG of test images above their reconstructions")


@command("train-vq", _vq_args)
def train_vq(args: argparse.Namespace) -> None:
    """Train DAT's VQ autoencoder; record test PSNR / codebook usage; save a reconstruction grid."""
    spec, log = args.spec, common.make_logger(args.log)
    run, dev = spec["run"], common.device(spec)
    train_set, test_set = common.dataset(spec, "train"), common.dataset(spec, "test")
    torch.manual_seed(spec["seed"])  # initial weights (and k-means codebook init) are the same on every run
    vq = build_vq(run)
    log(f"train-vq {run['id']}: {_arch(run)} on {len(train_set)} images; {common.lr_rule(spec)}")
    start = time.perf_counter()
    history = fit(vq, lambda m, x, y: m.vq_loss(x), train_set, common.train_config(spec), Path(args.run_dir),
                  run_hash=common.run_hash(spec), device=dev, log=log)
    save_vq(vq, _arch(run), args.out, config_hash(spec))
    x, _ = first_examples(test_set, run.get("eval_examples"))
    stats = reconstruction_stats(vq.eval(), x.to(dev), run["batch_size"])
    save_reconstruction_grid(vq, x[: run["recon_examples"]].to(dev), args.figure)
    subset = evaluation_subset(test_set, run.get("eval_examples"))
    _write_vq_record(args, spec, stats, history, subset, str(dev), time.perf_counter() - start)
    log(f"test PSNR {stats['psnr']:.2f} dB, codebook usage {stats['usage']:.3f}, perplexity {stats['perplexity']:.1f}")


def _arch(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run[k] for k in VQ_ARCH_KEYS if k in run}


def _write_vq_record(args: argparse.Namespace, spec: dict, stats: dict[str, float], history: list[dict],
                     subset: dict, dev: str, wall: float) -> None:
    run = spec["run"]
    train_keys = ("epochs", "batch_size", "blr", "weight_decay", "warmup_epochs", "betas", "augment")
    params = {**_arch(run), **{k: run[k] for k in train_keys if k in run}}
    write_record(args.record, make_record(
        run["id"], "vq-reconstruction", spec["profile"], [{"split": "test", "n_images": subset["n"], **stats}],
        n_examples=subset["n"], params=params, provenance=provenance(spec, spec["seed"], dev, wall, subset),
        paper=["dat"], scale_note=spec["scale_note"], sanity_checks=vq_sanity_checks(stats),
        reconstructions=str(args.figure), train_final=history[-1] if history else {}))


# ----------------------------------------------------------------------------- corruption-eval


def _corruption_args(p: argparse.ArgumentParser) -> None:
    common.add_model_args(p)
    p.add_argument("--denoiser", default=None, help="MAE weights of a De³ denoiser, when the model's defense uses one")
    p.add_argument("--vq", default=None, help="the run's VQ weights (used when its defense is vq: test-time Q)")


@command("corruption-eval", _corruption_args)
def corruption_eval(args: argparse.Namespace) -> None:
    """Error of one classifier on 15 corruptions × the configured severities (one record)."""
    spec, log = args.spec, common.make_logger(args.log)
    cfg, dev = spec["dat"]["corruption"], common.device(spec)
    check_corruption(cfg, spec["data"]["image_size"], "dat.corruption")
    test_set = common.dataset(spec, "test")
    (x, y), k = first_examples(test_set, cfg["n_examples"]), num_classes(test_set)
    files = benchmark_files(cfg, cfg["n_examples"], list(getattr(test_set, "classes", [])))
    model = _evaluated_model(spec, args, k, dev)
    log(f"corruption-eval {args.model_id}: {len(CORRUPTION_NAMES)} corruptions x severities {cfg['severities']} "
        f"on {len(y)} images ({benchmark_name(cfg, spec['data']['image_size'])})")
    start = time.perf_counter()
    x, y = x.to(dev), y.to(dev)
    clean_correct = int((predict_labels(model, x, cfg["batch_size"]) == y).sum())
    rows = corruption_error_rows(model, x, y, cfg["severities"], cfg["seed"], cfg["batch_size"], files)
    subset = evaluation_subset(test_set, cfg["n_examples"])
    _write_corruption(args, spec, rows, 1 - clean_correct / len(y), len(y), subset, str(dev),
                      time.perf_counter() - start)


def _evaluated_model(spec: dict, args: argparse.Namespace, k: int, dev: torch.device) -> nn.Module:
    """The classifier as deployed: behind its defense (De³ with its denoiser, or Q with the run's VQ)."""
    model = common.load_classifier(spec, args.weights, k).to(dev)
    quantizes = (spec["run"].get("defense") or {}).get("name") == "vq"
    aux = common.load_mae(spec, args.denoiser) if args.denoiser else load_vq(args.vq) if args.vq and quantizes else None
    defended, _ = build_defense(spec["run"].get("defense"), model, aux.to(dev) if aux is not None else None)
    return defended.eval()


def _write_corruption(args: argparse.Namespace, spec: dict, rows: list[dict], clean_error: float, n: int,
                      subset: dict, dev: str, wall: float) -> None:
    """One record: the cells, the clean error, and `error_summary` — the unnormalised mean corruption error
    (``mean_corruption_error``, a fraction) and, on ImageNet-C at severities 1–5 only, the paper's
    AlexNet-normalised mCE (``mCE_alexnet``); errors relative to the standard model are left to the tables."""
    cfg, run = spec["dat"]["corruption"], spec["run"]
    benchmark = benchmark_name(cfg, spec["data"]["image_size"])
    alexnet = bool(cfg.get("imagenet_c_root")) and sorted(cfg["severities"]) == list(SEVERITIES)
    summary = error_summary(rows, alexnet)
    params = {"severities": cfg["severities"], "seed": cfg["seed"], "corruptions": list(CORRUPTION_NAMES),
              "source": benchmark, "root": cfg.get("cifar10c_root") or cfg.get("imagenet_c_root"),
              "quantized_input": (run.get("defense") or {}).get("name") == "vq"}
    write_record(args.out, make_record(
        args.model_id, "corruption", spec["profile"], rows, n_examples=n, params=params,
        provenance=provenance(spec, spec["seed"], dev, wall, subset), paper=run.get("papers", []),
        scale_note=spec["scale_note"], init=run.get("init"), method=run.get("method", {}).get("name"),
        method_settings=run.get("method", {}), vq=run.get("vq"), epochs=run.get("epochs"),
        defense=run.get("defense"), clean_error=clean_error, corruption_benchmark=benchmark, **summary,
        sanity_checks=corruption_sanity_checks(rows, clean_error, n)))
    alexnet_line = f", AlexNet-normalised mCE {summary['mCE_alexnet']:.3f}" if alexnet else ""
    common.make_logger(args.log)(f"clean error {clean_error:.3f}, mean corruption error (unnormalised) "
                                 f"{summary['mean_corruption_error']:.3f}{alexnet_line} ({len(rows)} cells) "
                                 f"in {wall:.1f}s")
