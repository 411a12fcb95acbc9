"""Models: registered ViTs (also with timm), the MIM encoder-decoder, classifiers on [0, 1] inputs.

- `vit`: ViT specs by name (``VITS``; torch-free, read while the workflow parses) and the timm encoder;
- `mim`: the masked autoencoder; `classifier`: classifiers with normalisation inside;
- `resnet`: ResNet backbones, partial freezing and softmax ensembles; `vq`: the VQ autoencoder;
- `timm_models`: the VITS names registered with timm (``timm.create_model("robust_mim_...")``).

Names are imported on first use (``from robust_mim.models import MaskedAutoencoder``), so reading a
spec does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOME = {"ImageClassifier": "classifier", "Normalize": "classifier", "load_encoder": "classifier",
         "MaskedAutoencoder": "mim", "VITS": "vit", "ViTSpec": "vit", "build_vit_encoder": "vit", "vit_spec": "vit"}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'robust_mim.models' has no attribute '{name}'")
    importlib.import_module("robust_mim.models.timm_models")  # registers the VITS names with timm
    return getattr(importlib.import_module(f"robust_mim.models.{_HOME[name]}"), name)
