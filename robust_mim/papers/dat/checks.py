"""Checks of DAT's runs against the profile (torch-free: run while the workflow parses)."""
from __future__ import annotations

from typing import Any

from robust_mim.config import resolve_run
from robust_mim.errors import ConfigError


def check_config(config: dict[str, Any]) -> None:
    """A fine-tuning run with method ``dat`` names its VQ autoencoder (``vq``, a dat.vq run id)."""
    finetune = config.get("finetune") or {}
    for m in finetune.get("runs") or {}:
        run = resolve_run(finetune, m)
        if (run.get("method") or {}).get("name") == "dat" and not run.get("vq"):
            raise ConfigError(f"config error at finetune.runs.{m}: method dat needs `vq` (a dat.vq run id)")
