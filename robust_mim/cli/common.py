"""Spec → objects: the only place where configuration values become library calls."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from robust_mim.data import load_dataset, num_classes
from robust_mim.engine import TrainConfig, pick_device
from robust_mim.io import load_weights
from robust_mim.models.classifier import ImageClassifier
from robust_mim.models.mim import MaskedAutoencoder
from robust_mim.models.vit import build_vit_encoder, vit_spec


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
    """The profile's ViT classifier (normalisation from ``data.mean``/``data.std``)."""
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


def train_config(spec: dict[str, Any]) -> TrainConfig:
    """Run settings → TrainConfig; the learning rate follows MAE's rule lr = blr · batch / 256."""
    run = spec["run"]
    return TrainConfig(
        epochs=run["epochs"], batch_size=run["batch_size"], lr=run["blr"] * run["batch_size"] / 256,
        weight_decay=run["weight_decay"], warmup_epochs=run["warmup_epochs"], min_lr=run.get("min_lr", 0.0),
        betas=tuple(run.get("betas", (0.9, 0.95))), grad_clip=run.get("grad_clip"), seed=spec["seed"],
        augment=run.get("augment", "none"), amp=run.get("amp", False),
        num_workers=spec["data"].get("num_workers", 0),
    )


def n_classes_of(spec: dict[str, Any], train_set: Dataset) -> int:
    return num_classes(train_set)
