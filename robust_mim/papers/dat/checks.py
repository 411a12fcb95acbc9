"""Checks of DAT's runs against the profile (torch-free: run while the workflow parses)."""
from __future__ import annotations

from typing import Any

from robust_mim.config import resolve_run
from robust_mim.errors import ConfigError

# image side of each published benchmark's files: the ``dat.corruption`` key naming its folder -> side
BENCHMARK_SIDE = {"cifar10c_root": 32, "imagenet_c_root": 224}


def check_corruption(cfg: dict[str, Any], image_size: int, where: str) -> None:
    """At most one folder of published corruptions, and only for the image size its files have."""
    named = [k for k in BENCHMARK_SIDE if cfg.get(k)]
    if len(named) > 1:
        raise ConfigError(f"config error at {where}: set one of {' and '.join(named)}, not both")
    for key in named:
        if image_size != BENCHMARK_SIDE[key]:
            raise ConfigError(f"config error at {where}.{key}: its files are {BENCHMARK_SIDE[key]}x"
                              f"{BENCHMARK_SIDE[key]}, the profile's data.image_size is {image_size}")


def check_config(config: dict[str, Any]) -> None:
    """A fine-tuning run with method ``dat`` names its VQ autoencoder (``vq``, a dat.vq run id); the
    corruption benchmark's files fit the profile's image size (`check_corruption`)."""
    finetune = config.get("finetune") or {}
    for m in finetune.get("runs") or {}:
        run = resolve_run(finetune, m)
        if (run.get("method") or {}).get("name") == "dat" and not run.get("vq"):
            raise ConfigError(f"config error at finetune.runs.{m}: method dat needs `vq` (a dat.vq run id)")
    corruption = (config.get("dat") or {}).get("corruption") or {}
    check_corruption(corruption, (config.get("data") or {}).get("image_size", 0), "dat.corruption")
