"""What DAT's commands measure, as functions of tensors: VQ reconstruction statistics and the corruption benchmark.

- `reconstruction_stats` / `vq_sanity_checks` / `save_reconstruction_grid`: how well Q(x) keeps the image
  (the ``train-vq`` record);
- `benchmark_files` / `corrupted_batches` / `corruption_error_rows` / `error_summary` /
  `corruption_sanity_checks`: top-1 error on the 15 corruptions × severities (the ``corruption-eval``
  record), generated (seeded) or read from the CIFAR-10-C or ImageNet-C files.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from robust_mim.attacks.core import predict_labels
from robust_mim.corruption_benchmark import (alexnet_mce, load_cifar10c, load_imagenet_c,
                                             unnormalised_corruption_error)
from robust_mim.corruptions import CORRUPTION_NAMES, corrupt
from robust_mim.evaluation.verdict import tolerance
from robust_mim.models.vq import VQAutoencoder, codebook_usage, psnr

BlockLoader = Callable[[str, int], tuple[Tensor, Tensor]]  # (corruption, severity) -> images [n, 3, H, W], labels [n]


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


def corruption_seed(seed: int, name: str, severity: int) -> int:
    """Seed of one corruption × severity cell (independent streams, the same for every model)."""
    return seed * 1000 + CORRUPTION_NAMES.index(name) * 10 + severity


def benchmark_files(cfg: dict[str, Any], n: int | None, classes: list[str]) -> BlockLoader | None:
    """Where the corrupted images come from: ``(name, severity) -> (x_c, y_c)`` of the published files the
    ``dat.corruption`` section names (CIFAR-10-C: the first ``n`` of each block, the clean test split's
    first ``n``; ImageNet-C: the evaluation subset of each folder), or None to generate them from the clean
    images (`robust_mim.corruptions.corrupt`)."""
    if cfg.get("cifar10c_root"):
        return lambda name, s: tuple(t[:n] for t in load_cifar10c(cfg["cifar10c_root"], name, s))
    if cfg.get("imagenet_c_root"):
        return lambda name, s: load_imagenet_c(cfg["imagenet_c_root"], name, s, n, classes)
    return None


def benchmark_name(cfg: dict[str, Any], image_size: int) -> str:
    """The corruption benchmark in words, as tables and claims label it."""
    if cfg.get("cifar10c_root"):
        return "CIFAR-10-C files"
    if cfg.get("imagenet_c_root"):
        return "ImageNet-C files"
    return f"generated {image_size}x{image_size} corruptions (CIFAR-10-C style)"


def corrupted_batches(x: Tensor | None, severities: list[int], seed: int, files: BlockLoader | None = None):
    """Yield ``(name, severity, x_c, y_c_or_None)`` for the 15 corruptions × ``severities``.

    Generated from ``x`` [N, 3, H, W] with `corrupt` (labels unchanged: None), or read by ``files``
    (`benchmark_files`: the published images of each cell, with their labels).
    """
    for name in CORRUPTION_NAMES:
        for s in severities:
            if files is not None:
                xc, yc = files(name, s)
                yield name, s, xc, yc
            else:
                yield name, s, corrupt(x, name, s, corruption_seed(seed, name, s)), None


def corruption_error_rows(model: nn.Module, x: Tensor, y: Tensor, severities: list[int], seed: int = 0,
                          batch_size: int = 500, files: BlockLoader | None = None) -> list[dict[str, Any]]:
    """Top-1 error of ``model`` on every corruption × severity cell.

    Args:
        model: classifier [N, 3, H, W] in [0, 1] -> logits [N, K] (eval mode).
        x, y: clean test images [N, 3, H, W] and labels [N] (ignored when ``files`` reads the published
            images and labels of each cell, `benchmark_files`).
        severities: subset of 1..5. seed: seeds the generated corruptions.
    Returns:
        one row per cell: {"corruption", "severity", "error", "accuracy", "n_correct", "n_examples"}.
    """
    rows = []
    for name, s, xc, yc in corrupted_batches(x, severities, seed, files):
        labels = (y if yc is None else yc).to(x.device)
        correct = int((predict_labels(model, xc.to(x.device), batch_size) == labels).sum())
        rows.append({"corruption": name, "severity": s, "error": 1 - correct / len(labels),
                     "accuracy": correct / len(labels), "n_correct": correct, "n_examples": len(labels)})
    return rows


def error_summary(rows: list[dict[str, Any]], reports_alexnet: bool) -> dict[str, Any]:
    """The record's summary of the cells: error per corruption (mean over severities), the unnormalised
    mean corruption error, and — only for ImageNet-C files at severities 1–5 (``reports_alexnet``) — the
    AlexNet-normalised mCE of Hendrycks & Dietterich, the number the paper reports (fractions)."""
    table: dict[str, dict[int, float]] = {}
    for r in rows:
        table.setdefault(r["corruption"], {})[r["severity"]] = r["error"]
    return {"error_by_corruption": {c: sum(per.values()) / len(per) for c, per in table.items()},
            "mean_corruption_error": unnormalised_corruption_error(table),
            "mCE_alexnet": alexnet_mce(table) if reports_alexnet else None,
            "mean_error": sum(r["error"] for r in rows) / len(rows)}


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
