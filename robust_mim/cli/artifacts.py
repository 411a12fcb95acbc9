"""Trained weights as self-describing artifacts, and the attacked model rebuilt from them.

Every classifier and MAE the pipeline trains is saved as safetensors whose metadata (strings)
say what the tensors are: architecture, input size, normalisation mean/std, classes, the
weights of the auxiliary models a defense needs (paths relative to the weights' folder), and
provenance (git commit, config hash, the job spec). The same dict is written beside the weights
as ``model.json``. `attacked_model` builds the module the ``attack`` command evaluates — the
bare classifier behind its test-time defense (De³, VQ input) — and `robust_mim.load_model`
rebuilds it from the metadata alone.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from robust_mim.cli import common
from robust_mim.defenses import build_defense
from robust_mim.errors import CheckpointError
from robust_mim.io import atomic_write_text, save_weights
from robust_mim.records import config_hash, git_commit

FORMAT = "robust_mim.weights/1"
SIDECAR = "model.json"  # the metadata as JSON, beside model.safetensors


def weights_metadata(spec: dict[str, Any], kind: str, out: str | Path, *, num_classes: int | None = None,
                     class_names: list[str] | None = None, aux: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """Metadata (string values) of weights trained from job ``spec``, to be saved at ``out``.

    Args:
        kind: "classifier" or "mae".
        aux: auxiliary weights the model is used with ({"denoiser": path, "vq": path}); stored
            relative to ``out``'s folder, so a results folder can be moved as a whole.
    """
    run, data = spec.get("run", {}), spec["data"]
    here = Path(out).resolve().parent
    aux_rel = {k: os.path.relpath(Path(p).resolve(), here) for k, p in (aux or {}).items() if p}
    commit = git_commit()
    meta = {"format": FORMAT, "kind": kind, "model_id": str(run.get("id", "")), "profile": str(spec.get("profile", "")),
            "architecture": run.get("backbone") or spec["model"]["arch"], "image_size": str(data["image_size"]),
            "mean": json.dumps(data["mean"]), "std": json.dumps(data["std"]), "defense": json.dumps(run.get("defense")),
            "aux_weights": json.dumps(aux_rel, sort_keys=True), "config_hash": config_hash(spec),
            "git_commit": commit["git_commit"], "git_dirty": json.dumps(commit["git_dirty"]),
            "spec": json.dumps(spec, sort_keys=True)}
    if num_classes is not None:
        meta["num_classes"] = str(num_classes)
    if class_names:
        meta["class_names"] = json.dumps(list(class_names))
    return meta


def save_artifact(state: Mapping[str, torch.Tensor], out: str | Path, metadata: dict[str, str]) -> None:
    """Weights with ``metadata`` at ``out`` (safetensors) and the same metadata in ``model.json`` beside them."""
    save_weights(state, out, metadata)
    atomic_write_text(Path(out).parent / SIDECAR, json.dumps(metadata, indent=1, sort_keys=True) + "\n")


def read_metadata(weights: str | Path) -> dict[str, str]:
    """The metadata of ``weights``: from the safetensors header, else from ``model.json`` beside it.

    Raises:
        CheckpointError: the file is missing or unreadable, or neither place describes the model.
    """
    from safetensors import safe_open

    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' does not exist (run the rule that produces it)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any failure to parse is corruption
        raise CheckpointError(f"cannot read weights '{path}' ({type(exc).__name__}); delete it and rerun "
                              "the rule that produces it") from None
    if "spec" not in meta and (path.parent / SIDECAR).is_file():
        meta = json.loads((path.parent / SIDECAR).read_text(encoding="utf-8"))
    if "spec" not in meta:
        raise CheckpointError(f"'{path}' carries no model metadata and has no {SIDECAR} beside it (written before "
                              "weights described themselves): rerun its training job, e.g. "
                              "snakemake --forcerun finetune_classifier all")
    return meta


def aux_paths(weights: str | Path, meta: Mapping[str, str]) -> dict[str, str]:
    """The auxiliary weights named in ``meta`` (``aux_weights``), as paths resolved against the weights' folder."""
    here = Path(weights).parent
    return {k: str(here / rel) for k, rel in json.loads(meta.get("aux_weights", "{}")).items()}


def attacked_model(spec: dict[str, Any], weights: str | Path, num_classes: int, denoiser: str | None = None,
                   vq: str | None = None) -> tuple[nn.Module, nn.Module, bool]:
    """The model the ``attack`` command evaluates, on the CPU in eval mode.

    Returns:
        (defended, bare, randomized): ``defended`` maps ``[N, 3, H, W]`` in [0, 1] to logits
        ``[N, K]`` with normalisation and the run's test-time defense inside (De³ with the MAE at
        ``denoiser``, or the VQ autoencoder at ``vq`` for defense ``vq``); ``bare`` is the
        classifier alone (the same module when there is no defense); ``randomized`` says whether
        ``defended`` draws noise on every call (attack it with EOT).
    """
    run = spec.get("run", {})
    bare = common.load_classifier(spec, str(weights), num_classes)
    inner = common.load_mae(spec, denoiser) if denoiser else None
    if vq and (run.get("defense") or {}).get("name") == "vq":  # test-time Q, attacked with BPDA
        from robust_mim.models.vq import load_vq
        inner = load_vq(vq)
    defended, randomized = build_defense(run.get("defense"), bare, inner)
    return defended.eval(), bare, randomized
