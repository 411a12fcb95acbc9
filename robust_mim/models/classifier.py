"""Image classifiers on [0, 1] inputs, with normalisation inside the model.

``ImageClassifier(x) == head(embed(x))``: ``embed`` maps ``[N, 3, H, W]`` in [0, 1] to pooled
features ``[N, D]``. Attacks, defenses and certification all see this one module, so ε and σ
are always in pixel units.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from robust_mim.checkpoints import mismatch
from robust_mim.errors import CheckpointError


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; buffers are not saved (they come from the config)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32)[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32)[None, :, None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class ImageClassifier(nn.Module):
    """A backbone with a linear head: ``[N, 3, H, W]`` in [0, 1] → logits ``[N, K]``."""

    def __init__(self, backbone: nn.Module, embed_dim: int, num_classes: int,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.head = nn.Linear(embed_dim, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.backbone(self.normalize(x))  # [N, D]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))  # [N, K]


def load_encoder(classifier: ImageClassifier, state: Mapping[str, Tensor], prefix: str = "encoder.",
                 source: str = "pretrained encoder") -> None:
    """Copy a pretrained encoder (keys ``prefix*``) into ``classifier.backbone``, strictly.

    Raises:
        CheckpointError: naming ``source`` and the missing, unexpected and shape-mismatched keys, if
            the encoder does not match the backbone exactly.
    """
    encoder = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    diff = mismatch(classifier.backbone.state_dict(), encoder)
    if diff:
        raise CheckpointError(f"{source} does not match the classifier backbone ({diff})")
    classifier.backbone.load_state_dict(encoder, strict=True)


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode with no parameter gradients (a fixed preprocessing network)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
