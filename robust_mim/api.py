"""The public Python API behind `robust_mim.load_model` (imported on first use: torch, timm...)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from robust_mim.errors import CheckpointError

WEIGHTS = "finetune/{model_id}/model.safetensors"  # under results/<profile>/, as rules/common.smk writes them


def trained_model_ids(results_dir: str | Path) -> list[str]:
    """Ids of the classifiers with weights under ``results_dir`` (``finetune/<id>/model.safetensors``)."""
    return sorted(p.parent.name for p in Path(results_dir).glob(WEIGHTS.format(model_id="*")))


def weights_path(model_id: str, results_dir: str | Path) -> Path:
    """Where the pipeline saved classifier ``model_id``; a missing file is one CheckpointError naming the known ids."""
    path = Path(results_dir) / WEIGHTS.format(model_id=model_id)
    if path.is_file():
        return path
    if not Path(results_dir).is_dir():
        raise CheckpointError(f"results folder '{results_dir}' does not exist (relative to {Path.cwd()}): "
                              "run `snakemake --cores 8 all` first, or pass results_dir")
    known = ", ".join(trained_model_ids(results_dir)) or "none yet: run `snakemake --cores 8 all`"
    raise CheckpointError(f"no trained model '{model_id}' in '{results_dir}' (known: {known})")


def load_model(model_id: str, results_dir: str | Path = "results/smoke", device: str | torch.device = "cpu") -> nn.Module:
    """See `robust_mim.load_model`."""
    from robust_mim.cli import artifacts

    path = weights_path(model_id, results_dir)
    meta = artifacts.read_metadata(path)
    if meta.get("kind", "classifier") != "classifier" or "num_classes" not in meta:
        raise CheckpointError(f"'{path}' is not a classifier (kind {meta.get('kind')!r})")
    aux = artifacts.aux_paths(path, meta)
    defended, _, _ = artifacts.attacked_model(json.loads(meta["spec"]), path, int(meta["num_classes"]),
                                              aux.get("denoiser"), aux.get("vq"))
    defended.metadata = {k: v for k, v in meta.items() if k != "spec"}
    return defended.to(device).eval()
