"""Checks of the profile's ``chen`` section against its other runs (torch-free: run while the workflow parses)."""
from __future__ import annotations

from typing import Any

from robust_mim.config import resolve_run
from robust_mim.errors import ConfigError


def check_config(config: dict[str, Any]) -> None:
    """Ensembles name finetune runs (and no ensemble id is a model id); a run that starts from a
    chen.pretrain run uses chen's backbone. One ConfigError line for the first inconsistency."""
    chen, finetune = config.get("chen") or {}, config.get("finetune") or {}
    runs = {m: resolve_run(finetune, m) for m in finetune.get("runs") or {}}
    for ens, members in (chen.get("ensembles") or {}).items():
        if ens in runs:
            raise ConfigError(f"config error at chen.ensembles.{ens}: the id is also a finetune model id")
        unknown = sorted(set(members) - set(runs))
        if unknown:
            raise ConfigError(f"config error at chen.ensembles.{ens}: unknown finetune runs {unknown}")
    pretext_runs = (chen.get("pretrain") or {}).get("runs") or {}
    for m, run in runs.items():
        if run.get("init") in pretext_runs and run.get("backbone") != chen.get("backbone"):
            raise ConfigError(f"config error at finetune.runs.{m}.backbone: must be chen.backbone "
                              f"({chen.get('backbone')}) to load init '{run['init']}'")
