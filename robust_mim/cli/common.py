"""Spec → objects: the only place where configuration values become library calls."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from robust_mim import distributed
from robust_mim.data import load_dataset, num_classes
from robust_mim.distributed import DistContext
from robust_mim.engine import TrainConfig, pick_device
from robust_mim.io import load_weights
from robust_mim.models.classifier import ImageClassifier
from robust_mim.models.mim import MaskedAutoencoder
from robust_mim.models.vit import build_vit_encoder, vit_spec
from robust_mim.records import config_hash


def make_logger(path: str | None) -> Callable[[str], None]:
    """A ``log(line)`` that appends timestamped lines to ``path`` (stdout when None)."""
    def log(line: str) -> None:
        stamped = f"[{time.strftime('%H:%M:%S')}] {line}"
        if path is None:
            print(stamped, flush=True)
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(stamped + "\n")
    return log


def dataset(spec: dict[str, Any], split: str) -> Dataset:
    d = spec["data"]
    return load_dataset(d["name"], d["root"], split, d["image_size"], d.get("download", False))


def device(spec: dict[str, Any]) -> torch.device:
    return pick_device(spec.get("device", "auto"))


def build_classifier(spec: dict[str, Any], n_classes: int) -> ImageClassifier:
    """The profile's ViT classifier (normalisation from ``data.mean``/``data.std``), or the
    registered ResNet that the run names in ``backbone`` (paper 4, `robust_mim.objectives.chen`)."""
    if spec.get("run", {}).get("backbone"):
        from robust_mim.objectives.chen import build_backbone_classifier
        d = spec["data"]
        return build_backbone_classifier(spec["run"]["backbone"], n_classes, d["image_size"], d["mean"], d["std"])
    arch = vit_spec(spec["model"]["arch"])
    backbone = build_vit_encoder(arch, drop_path_rate=spec["model"].get("drop_path", 0.0))
    return ImageClassifier(backbone, arch.embed_dim, n_classes, spec["data"]["mean"], spec["data"]["std"])


def build_mae(spec: dict[str, Any]) -> MaskedAutoencoder:
    run = spec.get("run", {})
    return MaskedAutoencoder(vit_spec(spec["model"]["arch"]), spec["data"]["mean"], spec["data"]["std"],
                             norm_pix_loss=run.get("norm_pix_loss", False))


def load_classifier(spec: dict[str, Any], weights: str, n_classes: int) -> ImageClassifier:
    model = build_classifier(spec, n_classes)
    model.load_state_dict(load_weights(weights), strict=True)
    return model.eval()


def load_mae(spec: dict[str, Any], weights: str) -> MaskedAutoencoder:
    mae = build_mae(spec)
    mae.load_state_dict(load_weights(weights), strict=True)
    return mae.eval()


def train_config(spec: dict[str, Any], num_classes: int | None = None) -> TrainConfig:
    """Run settings → TrainConfig; the learning rate follows MAE's rule lr = blr · batch / 256.

    ``batch_size`` is the global batch (all processes together); ``num_classes`` enables the
    fine-tuning label options (MixUp, CutMix, label smoothing).
    """
    run = spec["run"]
    return TrainConfig(
        epochs=run["epochs"], batch_size=run["batch_size"], lr=run["blr"] * run["batch_size"] / 256,
        weight_decay=run["weight_decay"], warmup_epochs=run["warmup_epochs"], min_lr=run.get("min_lr", 0.0),
        betas=tuple(run.get("betas", (0.9, 0.95))), grad_clip=run.get("grad_clip"), seed=spec["seed"],
        augment=run.get("augment", "none"), amp=run.get("amp", False),
        num_workers=spec["data"].get("num_workers", 0), tf32=run.get("tf32", True),
        compile=run.get("compile", False), layer_decay=run.get("layer_decay", 1.0),
        mixup_alpha=run.get("mixup_alpha", 0.0), cutmix_alpha=run.get("cutmix_alpha", 0.0),
        label_smoothing=run.get("label_smoothing", 0.0), num_classes=num_classes,
    )


def lr_rule(spec: dict[str, Any]) -> str:
    """The learning-rate scaling rule of this run in words (logged at the start of training)."""
    run = spec["run"]
    return (f"lr = blr {run['blr']:.3g} x global batch {run['batch_size']} / 256 = "
            f"{run['blr'] * run['batch_size'] / 256:.4g} (MAE's linear scaling rule)")


def launch(spec: dict[str, Any], gpus: int, log: Callable[[str], None]) -> tuple[DistContext, torch.device]:
    """Set up this training process: torchrun's environment, its device, the process group.

    A plain ``python`` launch is one process. Under ``torchrun`` each process takes
    ``cuda:<local rank>`` (Gloo on the CPU when no GPU is visible: a warning, not an error)
    and its share of the torch threads.
    """
    ctx = distributed.context_from_env()
    distributed.per_rank_batch(spec["run"]["batch_size"], ctx.world_size)  # fail before any process waits
    dev, warning = distributed.rank_device(ctx, spec.get("device", "auto"), gpus)
    if warning and ctx.is_main:
        log(f"warning: {warning}")
    if ctx.local_world_size > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // ctx.local_world_size))
    distributed.init_process_group(ctx, dev)
    return ctx, dev


def run_hash(spec: dict[str, Any]) -> str:
    """Identity of a training run for checkpoints (speed-only settings do not change it)."""
    run = {k: v for k, v in spec.get("run", {}).items() if k != "compile"}
    return config_hash({**spec, "run": run})


def n_classes_of(spec: dict[str, Any], train_set: Dataset) -> int:
    return num_classes(train_set)
