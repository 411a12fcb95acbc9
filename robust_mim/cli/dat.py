"""Paper 5 (DAT, Mao et al., NeurIPS 2022): ``train-vq`` and ``corruption-eval``.

- ``train-vq`` trains the VQ autoencoder that defines DAT's discrete image space Q(x) on the
  profile's train split (`robust_mim.engine.fit`, loss `VQAutoencoder.vq_loss`), saves its
  weights with the architecture in the safetensors metadata (so ``finetune --vq`` can rebuild it,
  `load_vq`), writes a record of the reconstruction PSNR and codebook usage on the test split,
  and a PNG of test images (top row) above their reconstructions Q(x) (bottom row).
- ``corruption-eval`` measures a classifier on the corruption benchmark: the 15 corruptions of
  Hendrycks & Dietterich × the configured severities, generated on the fly from the first n
  test images (`robust_mim.corruptions.corrupt`), or read from the CIFAR-10-C ``.npy`` files
  when ``dat.corruption.cifar10c_root`` is set. One record: per-cell error, clean error, error per
  corruption (mean over severities) and their mean ``mCE`` (unnormalised); mCE relative to the
  standard-training model is computed from the records by `robust_mim.tables_dat`.

A model that quantizes its input at test time (a run with ``defense: {name: vq}`` and ``vq: <id>``,
`robust_mim.defenses.QuantizedInput`) is evaluated behind Q here, and attacked by the shared
``attack`` command through `robust_mim.attacks.BPDA`: Q forward, the identity backward.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robust_mim.attacks import predict_labels
from robust_mim.checkpoints import check_kind
from robust_mim.cli import command
from robust_mim.cli import common
from robust_mim.corruptions import CORRUPTION_NAMES, corrupt, load_cifar10c
from robust_mim.data import first_examples
from robust_mim.defenses import build_defense
from robust_mim.engine import fit
from robust_mim.errors import CheckpointError, ConfigError
from robust_mim.evaluation import tolerance
from robust_mim.io import load_weights, save_weights
from robust_mim.models.vq import VQAutoencoder, codebook_usage, psnr
from robust_mim.records import config_hash, make_record, provenance, write_record

# keys of the `dat.vq` settings that build the autoencoder (the rest are optimisation settings)
VQ_ARCH_KEYS = ("downsample", "codebook_size", "codebook_dim", "hidden", "commitment_weight", "decay",
                "kmeans_init", "dead_code_threshold")


# ----------------------------------------------------------------------------- VQ weights


def build_vq(run: dict[str, Any]) -> VQAutoencoder:
    """The VQ autoencoder of a ``dat.vq`` run (its architecture keys; others ignored)."""
    return VQAutoencoder(**{k: run[k] for k in VQ_ARCH_KEYS if k in run})


def save_vq(vq: VQAutoencoder, arch: dict[str, Any], path: str | Path, spec_hash: str) -> None:
    """Weights + architecture (JSON in the safetensors metadata) of a trained VQ autoencoder."""
    save_weights(vq.state_dict(), path, {"kind": "vq", "config_hash": spec_hash, "vq_arch": json.dumps(arch)})


def load_vq(path: str | Path) -> VQAutoencoder:
    """Rebuild a VQ autoencoder saved by `save_vq` (eval mode); a file without the metadata is a CheckpointError."""
    from safetensors import safe_open

    state = load_weights(path)  # raises CheckpointError for missing / corrupt files
    check_kind(state, str(path), "vq")  # MAE or classifier weights given as --vq: say what the file holds
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("kind") != "vq" or "vq_arch" not in meta:
        raise CheckpointError(f"'{path}' is not a VQ autoencoder written by train-vq (no vq_arch metadata)")
    vq = VQAutoencoder(**json.loads(meta["vq_arch"]))
    vq.load_state_dict(state, strict=True)
    return vq.eval()


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
    _write_vq_record(args, spec, stats, history, len(x), str(dev), time.perf_counter() - start)
    log(f"test PSNR {stats['psnr']:.2f} dB, codebook usage {stats['usage']:.3f}, perplexity {stats['perplexity']:.1f}")


def _arch(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run[k] for k in VQ_ARCH_KEYS if k in run}


@torch.no_grad()
def reconstruction_stats(vq: VQAutoencoder, x: Tensor, batch_size: int) -> dict[str, float]:
    """PSNR of Q(x) against x, codebook usage, and the PSNR of the constant mean image (a floor).

    Args:
        vq: VQ autoencoder in eval mode. x: images [N, 3, H, W] in [0, 1].
    Returns:
        {"psnr", "mse", "usage", "perplexity", "codes_used", "mean_image_psnr"} (PSNR in dB, per-image mean).
    """
    recons, codes = [], []
    for xb in x.split(batch_size):
        x_hat, indices, _ = vq(xb)  # [B, 3, H, W], [B, h, w]
        recons.append(x_hat)
        codes.append(indices)
    x_hat, indices = torch.cat(recons), torch.cat(codes)
    usage = codebook_usage(indices, vq.codebook_size)
    mean_image = x.mean(0, keepdim=True).expand_as(x)
    return {"psnr": psnr(x, x_hat).item(), "mse": (x - x_hat).pow(2).mean().item(), **usage,
            "codes_used": int(indices.unique().numel()), "mean_image_psnr": psnr(x, mean_image).item()}


@torch.no_grad()
def save_reconstruction_grid(vq: VQAutoencoder, x: Tensor, path: str | Path, min_side: int = 64) -> None:
    """PNG: originals (top row) above Q(x) (bottom row), upscaled (nearest) to at least ``min_side`` px."""
    from torchvision.utils import make_grid, save_image

    scale = max(1, math.ceil(min_side / x.shape[-1]))
    pair = torch.cat([x, vq.eval().quantize_image(x)]).cpu()  # [2n, 3, H, W]
    pair = torch.nn.functional.interpolate(pair, scale_factor=scale, mode="nearest")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(pair, nrow=len(x), padding=2, pad_value=1.0), str(path), format="png")


def vq_sanity_checks(stats: dict[str, float]) -> list[dict[str, Any]]:
    """The reconstruction must beat the constant mean image, and more than one code must be used."""
    return [
        {"check": "reconstruction_beats_mean_image", "passed": stats["psnr"] > stats["mean_image_psnr"],
         "details": {"psnr": stats["psnr"], "mean_image_psnr": stats["mean_image_psnr"]}},
        {"check": "codebook_not_collapsed", "passed": stats["codes_used"] >= 2,
         "details": {"codes_used": stats["codes_used"], "perplexity": stats["perplexity"]}},
    ]


def _write_vq_record(args: argparse.Namespace, spec: dict, stats: dict[str, float], history: list[dict], n: int,
                     dev: str, wall: float) -> None:
    run = spec["run"]
    train_keys = ("epochs", "batch_size", "blr", "weight_decay", "warmup_epochs", "betas", "augment")
    params = {**_arch(run), **{k: run[k] for k in train_keys if k in run}}
    write_record(args.record, make_record(
        run["id"], "vq-reconstruction", spec["profile"], [{"split": "test", "n_images": n, **stats}],
        n_examples=n, params=params, provenance=provenance(spec, spec["seed"], dev, wall), paper=["dat"],
        scale_note=spec["scale_note"], sanity_checks=vq_sanity_checks(stats), reconstructions=str(args.figure),
        train_final=history[-1] if history else {}))


# ----------------------------------------------------------------------------- corruption-eval


def _corruption_args(p: argparse.ArgumentParser) -> None:
    common.add_model_args(p)
    p.add_argument("--denoiser", default=None, help="MAE weights of a De³ denoiser, when the model's defense uses one")
    p.add_argument("--vq", default=None, help="the run's VQ weights (used when its defense is vq: test-time Q)")


def corruption_seed(seed: int, name: str, severity: int) -> int:
    """Seed of one corruption × severity cell (independent streams, the same for every model)."""
    return seed * 1000 + CORRUPTION_NAMES.index(name) * 10 + severity


def corrupted_batches(x: Tensor | None, severities: list[int], seed: int, cifar10c_root: str | None = None,
                      n: int | None = None):
    """Yield ``(name, severity, x_c, y_c_or_None)`` for the 15 corruptions × ``severities``.

    Generated from ``x`` [N, 3, H, W] with `corrupt` (labels unchanged: None), or the first ``n``
    images of each CIFAR-10-C block when ``cifar10c_root`` is given (with their labels).
    """
    for name in CORRUPTION_NAMES:
        for s in severities:
            if cifar10c_root:
                xc, yc = load_cifar10c(cifar10c_root, name, s)
                yield name, s, xc[:n], yc[:n]
            else:
                yield name, s, corrupt(x, name, s, corruption_seed(seed, name, s)), None


def corruption_error_rows(model: nn.Module, x: Tensor, y: Tensor, severities: list[int], seed: int = 0,
                          batch_size: int = 500, cifar10c_root: str | None = None) -> list[dict[str, Any]]:
    """Top-1 error of ``model`` on every corruption × severity cell.

    Args:
        model: classifier [N, 3, H, W] in [0, 1] -> logits [N, K] (eval mode).
        x, y: clean test images [N, 3, H, W] and labels [N] (ignored for CIFAR-10-C, whose own
            first N images and labels are used).
        severities: subset of 1..5. seed: seeds the generated corruptions.
    Returns:
        one row per cell: {"corruption", "severity", "error", "accuracy", "n_correct", "n_examples"}.
    """
    rows = []
    for name, s, xc, yc in corrupted_batches(x, severities, seed, cifar10c_root, len(y)):
        labels = (y if yc is None else yc).to(x.device)
        correct = int((predict_labels(model, xc.to(x.device), batch_size) == labels).sum())
        rows.append({"corruption": name, "severity": s, "error": 1 - correct / len(labels),
                     "accuracy": correct / len(labels), "n_correct": correct, "n_examples": len(labels)})
    return rows


def corruption_sanity_checks(rows: list[dict[str, Any]], clean_error: float, n: int) -> list[dict[str, Any]]:
    """Corrupted images are not easier than clean ones; the strongest severity is not easier than the mildest."""
    mean_error = sum(r["error"] for r in rows) / len(rows)
    by_sev = {s: [r["error"] for r in rows if r["severity"] == s] for s in sorted({r["severity"] for r in rows})}
    lo, hi = min(by_sev), max(by_sev)
    mild, strong = sum(by_sev[lo]) / len(by_sev[lo]), sum(by_sev[hi]) / len(by_sev[hi])
    return [
        {"check": "corruption_not_easier_than_clean", "passed": mean_error >= clean_error - tolerance(clean_error, n),
         "details": {"mean_error": mean_error, "clean_error": clean_error}},
        {"check": "error_not_falling_with_severity", "passed": strong >= mild - tolerance(mild, n),
         "details": {f"severity_{lo}": mild, f"severity_{hi}": strong}},
    ]


@command("corruption-eval", _corruption_args)
def corruption_eval(args: argparse.Namespace) -> None:
    """Error of one classifier on 15 corruptions × the configured severities (one record)."""
    spec, log = args.spec, common.make_logger(args.log)
    cfg, dev = spec["dat"]["corruption"], common.device(spec)
    root = cfg.get("cifar10c_root")
    x, y, k = common.first_test_examples(spec, cfg["n_examples"])
    if root and spec["data"]["image_size"] != 32:
        raise ConfigError(f"dat.corruption.cifar10c_root needs 32x32 images, the profile has {spec['data']['image_size']}")
    model = _evaluated_model(spec, args, k, dev)
    log(f"corruption-eval {args.model_id}: {len(CORRUPTION_NAMES)} corruptions x severities {cfg['severities']} "
        f"on {len(y)} images ({'CIFAR-10-C files' if root else 'generated'})")
    start = time.perf_counter()
    x, y = x.to(dev), y.to(dev)
    clean_correct = int((predict_labels(model, x, cfg["batch_size"]) == y).sum())
    rows = corruption_error_rows(model, x, y, cfg["severities"], cfg["seed"], cfg["batch_size"], root)
    _write_corruption(args, spec, rows, 1 - clean_correct / len(y), len(y), str(dev), time.perf_counter() - start)


def _evaluated_model(spec: dict, args: argparse.Namespace, k: int, dev: torch.device) -> nn.Module:
    """The classifier as deployed: behind its defense (De³ with its denoiser, or Q with the run's VQ)."""
    model = common.load_classifier(spec, args.weights, k).to(dev)
    quantizes = (spec["run"].get("defense") or {}).get("name") == "vq"
    aux = common.load_mae(spec, args.denoiser) if args.denoiser else load_vq(args.vq) if args.vq and quantizes else None
    defended, _ = build_defense(spec["run"].get("defense"), model, aux.to(dev) if aux is not None else None)
    return defended.eval()


def _write_corruption(args: argparse.Namespace, spec: dict, rows: list[dict], clean_error: float, n: int, dev: str,
                      wall: float) -> None:
    """One record; ``mCE`` is the unnormalised mean corruption error (mean over corruptions of the error
    averaged over severities, a fraction); mCE relative to a baseline model is left to the tables."""
    from robust_mim.corruptions import corruption_errors

    cfg, run = spec["dat"]["corruption"], spec["run"]
    table: dict[str, dict[int, float]] = {}
    for r in rows:
        table.setdefault(r["corruption"], {})[r["severity"]] = r["error"]
    by_corruption = {c: ce / len(table[c]) for c, ce in corruption_errors(table).items()}  # mean over severities
    mce = sum(by_corruption.values()) / len(by_corruption)
    source = (f"CIFAR-10-C files in {cfg['cifar10c_root']}" if cfg.get("cifar10c_root") else
              "generated on the fly by robust_mim.corruptions (frost uses a procedural texture)")
    params = {"severities": cfg["severities"], "seed": cfg["seed"], "corruptions": list(CORRUPTION_NAMES),
              "source": source, "quantized_input": (run.get("defense") or {}).get("name") == "vq"}
    write_record(args.out, make_record(
        args.model_id, "corruption", spec["profile"], rows, n_examples=n, params=params,
        provenance=provenance(spec, spec["seed"], dev, wall), paper=run.get("papers", []),
        scale_note=spec["scale_note"], init=run.get("init"), method=run.get("method", {}).get("name"),
        method_settings=run.get("method", {}), vq=run.get("vq"), epochs=run.get("epochs"),
        defense=run.get("defense"), clean_error=clean_error, mCE=mce,
        mean_error=sum(r["error"] for r in rows) / len(rows), error_by_corruption=by_corruption,
        sanity_checks=corruption_sanity_checks(rows, clean_error, n)))
    common.make_logger(args.log)(f"clean error {clean_error:.3f}, mean corruption error {mce:.3f} "
                                 f"({len(rows)} cells) in {wall:.1f}s")
