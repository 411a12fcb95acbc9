"""Registered ViT configurations (timm), named after what they encode: width, patch, input size.

``vit_micro_patch4_16`` is a 4-block, 64-wide ViT on 16×16 inputs (the smoke profile);
``vit_tiny_patch4_32`` / ``vit_small_patch4_32`` are the CIFAR-10 models of MIMIR and DMAE;
``vit_base_patch16_224`` is the ImageNet recipe. Each spec also names the MAE decoder size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from robust_mim.registry import Registry

if TYPE_CHECKING:  # timm (and torch) load when a model is built, not when specs are read (workflow parsing)
    from timm.models.vision_transformer import VisionTransformer


@dataclass(frozen=True)
class ViTSpec:
    """Architecture of an encoder and its (MAE) decoder."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    decoder_dim: int
    decoder_depth: int
    decoder_heads: int
    mlp_ratio: float = 4.0


VITS: Registry = Registry("model")


@VITS.register()
def vit_nano_patch4_16() -> ViTSpec:
    return ViTSpec(16, 4, 32, 2, 2, decoder_dim=32, decoder_depth=1, decoder_heads=2, mlp_ratio=2.0)


@VITS.register()
def vit_micro_patch4_16() -> ViTSpec:
    return ViTSpec(16, 4, 64, 4, 4, decoder_dim=64, decoder_depth=1, decoder_heads=4, mlp_ratio=2.0)


@VITS.register()
def vit_micro_patch4_32() -> ViTSpec:
    return ViTSpec(32, 4, 64, 4, 4, decoder_dim=64, decoder_depth=1, decoder_heads=4, mlp_ratio=2.0)


@VITS.register()
def vit_tiny_patch4_32() -> ViTSpec:
    return ViTSpec(32, 4, 192, 12, 3, decoder_dim=128, decoder_depth=2, decoder_heads=4)


@VITS.register()
def vit_small_patch4_32() -> ViTSpec:
    return ViTSpec(32, 4, 384, 12, 6, decoder_dim=256, decoder_depth=2, decoder_heads=8)


@VITS.register()
def vit_base_patch16_224() -> ViTSpec:
    return ViTSpec(224, 16, 768, 12, 12, decoder_dim=512, decoder_depth=8, decoder_heads=16)


def vit_spec(name: str) -> ViTSpec:
    """The registered spec for ``name`` (``ConfigError`` listing known names otherwise)."""
    return VITS.get(name)()


def vit_kwargs(spec: ViTSpec) -> dict[str, Any]:
    """timm ``VisionTransformer`` arguments of ``spec``'s encoder: average-pooled tokens after the
    final norm (``fc_norm`` off), a class token, fixed input size."""
    arch = {k: v for k, v in asdict(spec).items() if not k.startswith("decoder")}
    return {**arch, "global_pool": "avg", "fc_norm": False, "class_token": True, "dynamic_img_size": False}


def build_vit_encoder(spec: ViTSpec, drop_path_rate: float = 0.0) -> "VisionTransformer":
    """A timm ViT without head: average-pooled tokens after the final norm → ``[N, D]``.

    The same module serves as MAE encoder and classifier backbone, so pretrained weights map
    one-to-one (no renamed keys): ``fc_norm`` is off and ``norm`` stays before pooling.
    """
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(num_classes=0, drop_path_rate=drop_path_rate, **vit_kwargs(spec))
