"""Validation of an already-parsed configuration against the project's JSON schema.

The Snakefile reads ``config/<profile>.yaml`` and ``config/schema.yaml`` and calls
`validate_config`; nothing in the library reads configuration files. Defaults from the
schema are filled in, and the first violation becomes one readable `ConfigError` line
naming the key path, e.g. ``config error at pretrain.epochs: -1 is less than the minimum of 1``.
"""
from __future__ import annotations

import copy
from typing import Any

from robust_mim.errors import ConfigError


def _with_defaults(validator_class):
    """Extend a jsonschema validator so that ``default`` values fill missing properties."""
    from jsonschema import validators

    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def validate_config(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``config`` with schema defaults filled in; raise ConfigError if invalid."""
    from jsonschema import Draft202012Validator

    if not isinstance(config, dict):
        raise ConfigError(f"config error: expected a mapping at the top level, got {type(config).__name__}")
    filled = copy.deepcopy(config)
    validator = _with_defaults(Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        raise ConfigError(f"config error at {where}: {err.message}")
    check_finetune_runs(filled)
    return filled


HARD_LABEL_METHODS = ("pgd_at", "trades", "dat")  # their attacks take integer labels [N], not soft targets
SOFT_TARGET_KEYS = ("mixup_alpha", "cutmix_alpha", "label_smoothing")


def check_finetune_runs(config: dict[str, Any]) -> None:
    """Cross-key checks the schema cannot express, one ConfigError line each (before any job starts).

    - an adversarial fine-tuning method (``HARD_LABEL_METHODS``) with MixUp/CutMix/label smoothing:
      the engine would hand its attack soft targets [B, K] and the first step would fail;
    - a De³ denoiser pretrained with ``norm_pix_loss``: its decoder outputs per-patch normalized
      pixels, not images, so the defense would classify garbage without any error.
    """
    finetune, pretrain = config.get("finetune") or {}, config.get("pretrain") or {}
    for run_id in finetune.get("runs") or {}:
        run, where = resolve_run(finetune, run_id), f"config error at finetune.runs.{run_id}"
        method = (run.get("method") or {}).get("name")
        soft = [k for k in SOFT_TARGET_KEYS if (run.get(k) or 0) > 0]
        if method in HARD_LABEL_METHODS and soft:
            raise ConfigError(f"{where}: method '{method}' attacks integer labels; set {', '.join(soft)} to 0")
        denoiser = run.get("denoiser")
        if denoiser and denoiser in (pretrain.get("runs") or {}) and resolve_run(pretrain, denoiser).get("norm_pix_loss"):
            raise ConfigError(f"{where}: denoiser '{denoiser}' was pretrained with norm_pix_loss, so its decoder "
                              f"does not output images; pretrain the denoiser without it")


def resolve_run(section: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Settings of one run: the section's shared keys overridden by ``section['runs'][run_id]``."""
    runs = section.get("runs", {})
    if run_id not in runs:
        raise ConfigError(f"unknown run '{run_id}' (known: {', '.join(sorted(runs)) or 'none'})")
    shared = {k: v for k, v in section.items() if k != "runs"}
    return {**shared, **(runs[run_id] or {}), "id": run_id}
