"""The project's ViT names registered with timm: ``timm.create_model("vit_micro_patch4_16")`` works.

The first name taken from `robust_mim.models` (e.g. ``from robust_mim.models import vit_spec``) registers every `VITS` name that timm does not already define
(``vit_base_patch16_224`` stays timm's own). The model is timm's ``VisionTransformer`` with the
project's encoder settings (average-pooled tokens after the final norm, no ``fc_norm``) and a
linear head of ``num_classes`` (timm's default 1000): ``[N, 3, H, W]`` normalised → logits
``[N, K]``. Its weights minus ``head.*`` are those of our classifiers' ``backbone.*``; for a
ready-to-attack trained model (normalisation and defenses inside) use `robust_mim.load_model`.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import timm
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

from robust_mim.errors import CheckpointError
from robust_mim.models.vit import VITS, vit_kwargs, vit_spec

TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _entrypoint(name: str) -> Callable[..., VisionTransformer]:
    """A timm model entrypoint named ``name``: ``fn(pretrained=False, **kwargs) -> VisionTransformer``."""
    def create(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
        if pretrained:
            raise CheckpointError(f"{name} has no published weights: train it with the pipeline and load it "
                                  "with robust_mim.load_model(model_id, results_dir)")
        settings = {**vit_kwargs(vit_spec(name)), "num_classes": 1000, **kwargs}
        return VisionTransformer(**{k: v for k, v in settings.items() if k not in TIMM_ONLY_KWARGS})
    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"{name}: {vit_spec(name)} as a timm VisionTransformer with a {{num_classes}}-way head."
    return create


def register_with_timm() -> list[str]:
    """Register every `VITS` name timm does not know; returns the names registered (idempotent)."""
    module = sys.modules[__name__]
    added = []
    for name in VITS.names():
        if timm.is_model(name) and not hasattr(module, name):
            continue  # one of timm's own models
        if not hasattr(module, name):
            setattr(module, name, register_model(_entrypoint(name)))
            added.append(name)
    return added


register_with_timm()
