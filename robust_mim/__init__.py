"""robust_mim: adversarial robustness from masked-image-modeling pretraining, re-derived.

A thin library behind numbered notebooks and a Snakemake pipeline; see README.md.
``import robust_mim`` is light: torch and the models load on the first `load_model` call.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from robust_mim._version import __version__
__all__ = ["load_model", "__version__"]


def load_model(model_id: str, results_dir: str | Path = "results/smoke",
               device: "str | torch.device" = "cpu") -> "torch.nn.Module":
    """A classifier the pipeline trained, ready to attack: ``[N, 3, H, W]`` in [0, 1] → logits ``[N, K]``.

    Normalisation is inside the model and the run's test-time defense (De³ denoising, VQ input
    quantization) is wrapped around it exactly as the shared evaluation (``robust-mim attack``)
    wraps it, so ε is in pixel units and an attack sees the whole defended model. The model is
    in eval mode on ``device``; ``model.metadata`` holds what its weights say about it
    (architecture, mean/std, num_classes, defense, git commit, config hash...).

    Args:
        model_id: a fine-tuning run id of the profile (e.g. ``"mae-ft"``, ``"nim-gamma-de3"``).
        results_dir: the profile's results folder, ``results/<profile>`` (relative to the working directory).
        device: where to put the model.

    Raises:
        CheckpointError: unknown id (the message lists the trained ones), or weights that do not
            describe themselves (trained before they carried metadata: rerun their training).
    """
    from robust_mim.api import load_model as _load_model

    return _load_model(model_id, results_dir, device)
