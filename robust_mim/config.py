"""Validation of an already-parsed configuration against the project's JSON schema.

The Snakefile reads ``config/<profile>.yaml`` and ``config/schema.yaml`` and calls
`validate_config`; nothing in the library reads configuration files. Defaults from the
schema are filled in, and the first violation becomes one readable `ConfigError` line
naming the key path, e.g. ``config error at pretrain.epochs: -1 is less than the minimum of 1``.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from robust_mim.errors import ConfigError
from robust_mim.papers import PAPERS


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


def with_override_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """Add ``<name>_override`` to ``$defs`` for every definition with ``properties``: the same keys and
    types without defaults. A run references the override form, so it may set any shared key, a
    misspelled key is an error, and an unset key inherits the section's value (not the schema default)."""
    schema = copy.deepcopy(schema)
    defs = schema.get("$defs", {})
    for name, definition in list(defs.items()):
        if "properties" in definition and not name.endswith("_override"):
            props = {k: {kk: vv for kk, vv in v.items() if kk != "default"} for k, v in definition["properties"].items()}
            defs[f"{name}_override"] = {**{k: v for k, v in definition.items() if k != "properties"}, "properties": props}
    return schema


def compose_schema(base: dict[str, Any], sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The profile schema: ``base`` (config/schema.yaml) plus each paper's section schema
    (``robust_mim/papers/<key>/schema.yaml``, read by the caller) under ``properties[<key>]``, and the
    registered paper keys as the values a run's ``papers`` may list (``$defs.paper_keys``)."""
    schema = copy.deepcopy(base)
    for key, section in sections.items():
        if key in schema["properties"]:
            raise ConfigError(f"paper '{key}': its section clashes with the shared key '{key}' of config/schema.yaml")
        schema["properties"][key] = section
    schema.setdefault("$defs", {})["paper_keys"] = {
        "enum": ["overview", *PAPERS], "description": "a registered paper (robust_mim.papers), or overview"}
    return schema


def _message(err) -> str:
    """One line for the first schema violation (misspelled keys and bad ids said plainly)."""
    where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    if err.validator == "pattern" and "propertyNames" in err.absolute_schema_path:
        return (f"config error at {where}: id {err.instance!r} may hold only letters, digits, '.', '_' and '-' "
                "(ids name folders and appear in shell commands)")
    if err.validator in ("additionalProperties", "unevaluatedProperties"):
        keys = ", ".join(repr(k) for k in sorted(set(re.findall(r"'([^']*)'", err.message))))
        return f"config error at {where}: unknown key {keys} (misspelled? config/schema.yaml lists every key)"
    return f"config error at {where}: {err.message}"


def validate_config(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``config`` with schema defaults filled in; raise ConfigError if invalid."""
    from jsonschema import Draft202012Validator

    if not isinstance(config, dict):
        raise ConfigError(f"config error: expected a mapping at the top level, got {type(config).__name__}")
    filled = copy.deepcopy(config)
    validator = _with_defaults(Draft202012Validator)(with_override_defs(schema))
    errors = sorted(validator.iter_errors(filled), key=lambda e: (-len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError(_message(errors[0]))
    check_run_references(filled)
    check_finetune_runs(filled)
    check_model_and_batches(filled)
    check_papers(filled)
    return filled


REGISTERED_KINDS = ("pretrain_objective", "pretext_objective", "finetune_method", "defense")


def registered_settings(schema: dict[str, Any], kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A copy of one registered objective's, method's or defense's ``settings`` (``{"name": ..., ...}``)
    with the schema's defaults filled, as `validate_config` fills a run's; ConfigError if invalid.

    ``kind`` names its ``$defs`` entry (``REGISTERED_KINDS``); only the defaults of the branch whose
    ``name`` matches are filled. For code that builds a step outside the workflow (tests, notebooks).
    """
    from jsonschema import Draft202012Validator

    if kind not in REGISTERED_KINDS:
        raise ConfigError(f"unknown kind '{kind}' (known: {', '.join(REGISTERED_KINDS)})")
    filled = copy.deepcopy(settings)
    validator = _with_defaults(Draft202012Validator)({"$defs": schema["$defs"], "$ref": f"#/$defs/{kind}"})
    errors = sorted(validator.iter_errors(filled), key=lambda e: -len(e.absolute_path))
    if errors:
        raise ConfigError(_message(errors[0]).replace("config error at", f"{kind} error at", 1))
    return filled


def _section(config: dict[str, Any], path: str) -> dict[str, Any]:
    """``config["chen"]["pretrain"]`` for ``"chen.pretrain"`` ({} where absent)."""
    for key in path.split("."):
        config = (config or {}).get(key) or {}
    return config


def _train_sections(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every section whose runs train a model (the papers' own, e.g. chen.pretrain): path -> section."""
    paths = ["pretrain", "finetune"] + [path for p in PAPERS.values() for path in p.run_sections]
    return {path: _section(config, path) for path in paths}


def check_run_references(config: dict[str, Any]) -> None:
    """Ids a run names (init, denoiser, vq ...) exist; a paper's run ids differ from the shared ones."""
    sections = _train_sections(config)
    ids = {name: set(section.get("runs") or {}) for name, section in sections.items()}
    known = {"init": set(ids["pretrain"]), "denoiser": set(ids["pretrain"])}
    for path, ref in ((path, ref) for p in PAPERS.values() for path, ref in p.run_sections.items()):
        shared = ids[path] & (ids["pretrain"] | ids["finetune"])
        if shared:
            raise ConfigError(f"config error at {path}.runs: ids {sorted(shared)} are also pretrain or finetune run ids")
        known.setdefault(ref, set()).update(ids[path])
    for run_id, run in (sections["finetune"].get("runs") or {}).items():
        for key, allowed in known.items():
            ref = (run or {}).get(key)
            if ref is not None and ref not in allowed:
                raise ConfigError(f"config error at finetune.runs.{run_id}.{key}: unknown run '{ref}' "
                                  f"(known: {', '.join(sorted(allowed)) or 'none'})")


def check_papers(config: dict[str, Any]) -> None:
    """Each paper's own cross-key checks (``robust_mim/papers/<key>/checks.py``, where it has one)."""
    for p in PAPERS.values():
        if p.checks:
            p.module("checks").check_config(config)


def check_model_and_batches(config: dict[str, Any]) -> None:
    """The model is registered and takes the profile's image size; every multi-GPU batch divides evenly."""
    from robust_mim.models.vit import VITS

    arch, size = config["model"]["arch"], config["data"]["image_size"]
    if arch not in VITS:
        raise ConfigError(f"config error at model.arch: unknown model '{arch}' (known: {', '.join(VITS.names())})")
    spec = VITS.get(arch)()
    if spec.img_size != size:
        raise ConfigError(f"config error at data.image_size: {size} does not match model '{arch}', which takes "
                          f"{spec.img_size}x{spec.img_size} images")
    for name, section in _train_sections(config).items():
        for run_id in section.get("runs") or {}:
            run = resolve_run(section, run_id)
            gpus, batch = run.get("gpus") or 0, run.get("batch_size")
            if gpus > 1 and batch and batch % gpus:
                raise ConfigError(f"config error at {name}.runs.{run_id}: batch_size {batch} does not divide "
                                  f"evenly over {gpus} GPUs")


HARD_LABEL_METHODS = ("pgd_at", "trades")  # their attacks take integer labels [N], not soft targets (dat takes both)
SOFT_TARGET_KEYS = ("mixup_alpha", "cutmix_alpha", "label_smoothing")
# soft targets a method accepts all the same: PGD-AT's attack ascends the CE of the smoothed targets' arg-max,
# which is the integer label (official MIMIR finetune.py: torchattacks PGD on the labels, LabelSmoothingCrossEntropy)
SOFT_TARGETS_ALLOWED = {"pgd_at": ("label_smoothing",)}


def check_finetune_runs(config: dict[str, Any]) -> None:
    """Cross-key checks the schema cannot express, one ConfigError line each (before any job starts).

    An adversarial fine-tuning method (``HARD_LABEL_METHODS``) with MixUp/CutMix/label smoothing:
    the engine would hand its attack soft targets [B, K] and the first step would fail — except
    the keys in ``SOFT_TARGETS_ALLOWED`` (PGD-AT with label smoothing: the arg-max of a smoothed
    target is the label). (A De³ denoiser may be pretrained with ``norm_pix_loss``: De³
    un-normalises its prediction with the per-patch statistics of the image it receives, as the
    official NIM code.)
    """
    finetune = config.get("finetune") or {}
    for run_id in finetune.get("runs") or {}:
        run, where = resolve_run(finetune, run_id), f"config error at finetune.runs.{run_id}"
        method = (run.get("method") or {}).get("name")
        allowed = SOFT_TARGETS_ALLOWED.get(method, ())
        soft = [k for k in SOFT_TARGET_KEYS if (run.get(k) or 0) > 0 and k not in allowed]
        if method in HARD_LABEL_METHODS and soft:
            raise ConfigError(f"{where}: method '{method}' attacks integer labels; set {', '.join(soft)} to 0")


def resolve_run(section: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Settings of one run: the section's shared keys overridden by ``section['runs'][run_id]``."""
    runs = section.get("runs", {})
    if run_id not in runs:
        raise ConfigError(f"unknown run '{run_id}' (known: {', '.join(sorted(runs)) or 'none'})")
    shared = {k: v for k, v in section.items() if k != "runs"}
    return {**shared, **(runs[run_id] or {}), "id": run_id}
