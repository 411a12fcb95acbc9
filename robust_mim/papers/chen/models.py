"""Networks for the pretext tasks of Chen et al. (CVPR 2020) on a shared backbone.

A *backbone* is any module with ``embed(x) -> [N, D]`` on images in [0, 1] (the project's ViT
classifiers and `ResNetBackbone` both qualify). `PretextModel` bundles it with one head per
task: `RotationHead` (4 logits), `JigsawHead` (P logits; it stores its permutation set) and
`SelfieHead` (scores the M candidate patches for each of the M removed positions).

Partial fine-tuning (the paper's F1/F2: the pretrained part frozen) uses `freeze_prefix` and
`partial_parameters`; the softmax-average ensemble of fine-tuned models is `SoftmaxEnsemble`.

Deviations from the official code (ResNet-50v2, ``VITA-Group/Adv-SS-Pretraining``):
- heads are linear layers on the pooled features, where the multi-task ensemble gave Rotation
  and Jigsaw each their own copy of the last ResNet stage;
- Selfie's context is the backbone applied to the *whole image with the removed patches set to
  0*, plus a learned row/column embedding of the queried position; the official code encodes
  every patch separately with the backbone's first three stages and pools the visible ones with
  a 12-layer transformer. Records and tables therefore call our task ``selfie-like``
  (`robust_mim.papers.chen.tasks.task_label`). Candidates are encoded by a small patch MLP, or by the backbone
  itself (``shared_patch_encoder=True``, as in Selfie; needs a backbone that accepts p×p images,
  e.g. `ResNetBackbone`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from robust_mim.errors import ConfigError
from robust_mim.papers.chen.pretext import NUM_ROTATIONS, jigsaw_permutations
from robust_mim.papers.chen.tasks import PRETEXT_TASKS

# ----------------------------------------------------------------------------- heads
class RotationHead(nn.Linear):
    """Pooled features [N, D] → 4 rotation logits [N, 4]."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__(embed_dim, NUM_ROTATIONS)


class JigsawHead(nn.Linear):
    """Pooled features [N, D] → P permutation logits; keeps its permutation set as a buffer.

    Args:
        embed_dim: D.
        perms: permutation set [P, grid*grid] (`robust_mim.papers.chen.pretext.jigsaw_permutations`).
    """

    def __init__(self, embed_dim: int, perms: Tensor) -> None:
        super().__init__(embed_dim, perms.shape[0])
        self.register_buffer("perms", perms.clone().long())  # [P, T]


class SelfieHead(nn.Module):
    """Selfie-like scoring: for each removed position, a dot product with each candidate patch.

    ``query = W·context + row[r] + col[c]`` for the position (r, c) of a removed patch, and
    ``logits[i, m, k] = <query[i, m], encode(candidate[i, k])>``.

    Args:
        embed_dim: D of the backbone's pooled features.
        grid_size: patches per image side (L = grid_size²).
        patch_size: p; candidates are flattened C·p·p vectors.
        num_masked: M removed patches per image (stored for the objective).
        dim: scoring width (defaults to D); with ``shared_patch_encoder`` it must be D.
        channels: C.
        shared_patch_encoder: encode candidates with the backbone (Selfie); otherwise with a
            two-layer MLP on the flattened patch.
    """

    def __init__(self, embed_dim: int, grid_size: int, patch_size: int, num_masked: int,
                 dim: int | None = None, channels: int = 3, shared_patch_encoder: bool = False) -> None:
        super().__init__()
        dim = dim or embed_dim
        if shared_patch_encoder and dim != embed_dim:
            raise ConfigError("selfie: a shared patch encoder scores in the backbone's width (dim == embed_dim)")
        self.grid_size, self.patch_size, self.num_masked = grid_size, patch_size, num_masked
        self.channels, self.shared_patch_encoder = channels, shared_patch_encoder
        self.query = nn.Linear(embed_dim, dim)
        self.row = nn.Parameter(0.02 * torch.randn(grid_size, dim))
        self.col = nn.Parameter(0.02 * torch.randn(grid_size, dim))
        patch_dim = channels * patch_size * patch_size
        self.patch_encoder = None if shared_patch_encoder else nn.Sequential(
            nn.Linear(patch_dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, context: Tensor, candidates: Tensor, masked: Tensor) -> Tensor:
        """Score candidates.

        Args:
            context: backbone features of the masked image [N, D].
            candidates: encoded candidates [N, M, dim] (shared encoder) or raw flattened
                patches [N, M, C*p*p] (MLP encoder).
            masked: removed positions [N, M] (row-major indices into the grid).

        Returns:
            logits [N, M, M]: ``logits[i, m, k]`` scores candidate k for position ``masked[i, m]``.
        """
        if self.patch_encoder is not None:
            candidates = self.patch_encoder(candidates)  # [N, M, dim]
        rows, cols = masked // self.grid_size, masked % self.grid_size  # [N, M]
        query = self.query(context)[:, None] + self.row[rows] + self.col[cols]  # [N, M, dim]
        return query @ candidates.transpose(1, 2)  # [N, M, M]


# ----------------------------------------------------------------------------- bundle
class PretextModel(nn.Module):
    """A backbone with one head per pretext task (``rotation``, ``jigsaw``, ``selfie``).

    Args:
        backbone: module with ``embed(x) -> [N, D]``; pretrained weights are read from
            ``state_dict()`` keys ``backbone.*``.
        heads: task name → head.
    """

    def __init__(self, backbone: nn.Module, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        unknown = sorted(set(heads) - set(PRETEXT_TASKS))
        if unknown or not heads:
            raise ConfigError(f"unknown pretext tasks {unknown} (known: {', '.join(PRETEXT_TASKS)})")
        self.backbone = backbone
        self.heads = nn.ModuleDict(dict(heads))

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def head(self, task: str) -> nn.Module:
        if task not in self.heads:
            raise ConfigError(f"this pretext model has no '{task}' head (has: {', '.join(self.heads)})")
        return self.heads[task]

    def rotation_logits(self, x: Tensor) -> Tensor:
        return self.head("rotation")(self.backbone.embed(x))  # [N, 4]

    def jigsaw_logits(self, x: Tensor) -> Tensor:
        return self.head("jigsaw")(self.backbone.embed(x))  # [N, P]

    def selfie_logits(self, context: Tensor, candidates: Tensor, masked: Tensor) -> Tensor:
        """Selfie logits [N, M, M] from the masked image [N, C, H, W] and raw candidates [N, M, C*p*p]."""
        head = self.head("selfie")
        if head.shared_patch_encoder:
            n, m, _ = candidates.shape
            images = candidates.reshape(n * m, head.channels, head.patch_size, head.patch_size)
            candidates = self.backbone.embed(images).reshape(n, m, -1)  # [N, M, D]
        return head(self.backbone.embed(context), candidates, masked)



def build_pretext_model(backbone: nn.Module, embed_dim: int, tasks: Sequence[str], image_size: int,
                        jigsaw_grid: int = 4, num_permutations: int = 31, permutation_seed: int = 0,
                        selfie_patch: int = 8, selfie_masked: int = 4,
                        shared_patch_encoder: bool = False) -> PretextModel:
    """A `PretextModel` with heads for ``tasks`` (defaults: the official CIFAR-10 settings)."""
    heads: dict[str, nn.Module] = {}
    for task in tasks:
        if task == "rotation":
            heads[task] = RotationHead(embed_dim)
        elif task == "jigsaw":
            heads[task] = JigsawHead(embed_dim, jigsaw_permutations(num_permutations, jigsaw_grid, permutation_seed))
        elif task == "selfie":
            heads[task] = SelfieHead(embed_dim, image_size // selfie_patch, selfie_patch, selfie_masked,
                                     shared_patch_encoder=shared_patch_encoder)
        else:
            raise ConfigError(f"unknown pretext task '{task}' (known: {', '.join(PRETEXT_TASKS)})")
    return PretextModel(backbone, heads)


