"""Masked image modeling (He et al. 2022, MAE) with a pluggable input corruption.

One encoder-decoder serves every MIM-style paper here; they differ only in what the encoder
sees and where the loss is taken (see ``robust_mim.objectives``):

- MAE:   encoder sees the clean image, 75% of patches masked, loss on masked patches;
- NIM:   encoder sees ``x + σ·n``, nothing masked, loss on all patches vs the clean image;
- DMAE:  encoder sees ``x + 0.25·n``, 75% masked, loss on all patches vs the clean image;
- MIMIR: encoder sees an adversarial ``x'``, 75% masked, loss on masked patches vs clean ``x``.

The encoder is the same timm ViT the classifiers use (``build_vit_encoder``), stored as
``self.encoder``, so its weights load into a classifier backbone without renaming. As in the
official MAE (``models_mae.py``), encoder and decoder position embeddings are fixed 2-D sin-cos
tables (`sincos_pos_embed_2d`, not trained during pretraining; fine-tuning trains the encoder's
copy), and the decoder blocks have ``qkv_bias=True`` and LayerNorm eps 1e-6.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from robust_mim.models.classifier import Normalize
from robust_mim.models.vit import ViTSpec, build_vit_encoder

NORM_PIX_EPS = 1e-6  # official MAE: (var + 1e-6) ** 0.5


def sincos_pos_embed_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding of MAE's ``get_2d_sincos_pos_embed(dim, grid, cls_token=True)``.

    Token t = (row i, column j) in row-major order; the first ``dim/2`` channels encode j, the
    last ``dim/2`` encode i (the official meshgrid puts w first), each as ``[sin(p·ω), cos(p·ω)]``
    with ω_k = 10000^(-k / (dim/4)). The cls token's row is zero. Returns ``[1 + grid², dim]``.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # [D/4]
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")  # [G, G] each

    def one_axis(pos: Tensor) -> Tensor:
        out = pos.reshape(-1, 1).double() * omega  # [G², D/4]
        return torch.cat([out.sin(), out.cos()], dim=1)  # [G², D/2]

    emb = torch.cat([one_axis(cols), one_axis(rows)], dim=1)  # [G², D]
    return torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb]).float()  # [1 + G², D]


def patch_stats(patches: Tensor) -> tuple[Tensor, Tensor]:
    """Per-patch mean and std of ``[N, L, p*p*3]`` patches (norm_pix_loss): two ``[N, L, 1]`` tensors."""
    mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
    return mean, (var + NORM_PIX_EPS) ** 0.5


class MaskedAutoencoder(nn.Module):
    """ViT encoder on visible tokens + light ViT decoder predicting pixels of every patch.

    Targets are pixels in [0, 1] (or per-patch normalised pixels with ``norm_pix_loss``);
    the encoder's input is normalised inside the model like every classifier here.
    """

    def __init__(self, spec: ViTSpec, mean: Sequence[float], std: Sequence[float],
                 norm_pix_loss: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.norm_pix_loss = norm_pix_loss
        self.normalize = Normalize(mean, std)
        self.encoder = build_vit_encoder(spec)
        grid = spec.img_size // spec.patch_size
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_embed = nn.Linear(spec.embed_dim, spec.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, spec.decoder_dim))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed_2d(spec.decoder_dim, grid)[None], requires_grad=False)
        self.decoder_blocks = nn.Sequential(*[
            Block(spec.decoder_dim, spec.decoder_heads, mlp_ratio=spec.mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(spec.decoder_depth)
        ])
        self.decoder_norm = norm_layer(spec.decoder_dim)
        self.decoder_pred = nn.Linear(spec.decoder_dim, spec.patch_size ** 2 * 3)
        nn.init.normal_(self.mask_token, std=0.02)
        self._fix_encoder_pos_embed(grid)

    def _fix_encoder_pos_embed(self, grid: int) -> None:
        """Encoder position embedding := fixed sin-cos [1, 1+L, D], frozen for pretraining (same key)."""
        pos = self.encoder.pos_embed  # [1, 1+L, D]
        pos.data.copy_(sincos_pos_embed_2d(pos.shape[-1], grid)[None])
        pos.requires_grad_(False)

    def patchify(self, imgs: Tensor) -> Tensor:
        """[N, 3, H, W] → [N, L, p*p*3]."""
        p = self.spec.patch_size
        n, c, h, w = imgs.shape
        x = imgs.reshape(n, c, h // p, p, w // p, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: Tensor) -> Tensor:
        """[N, L, p*p*3] → [N, 3, H, W]."""
        p = self.spec.patch_size
        n, length, _ = x.shape
        h = w = int(length ** 0.5)
        x = x.reshape(n, h, w, p, p, 3)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(n, 3, h * p, w * p)

    @staticmethod
    def random_masking(x: Tensor, mask_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
        """Keep a random ``1 - mask_ratio`` of the tokens of each example (per-sample shuffle).

        Returns the kept tokens ``[N, L_keep, D]``, the binary mask ``[N, L]`` (0 is keep,
        1 is remove) and ``ids_restore`` ``[N, L]`` that undoes the shuffle.
        """
        n, length, d = x.shape
        len_keep = int(round(length * (1 - mask_ratio)))
        noise = torch.rand(n, length, device=x.device)  # noise in [0, 1]
        ids_shuffle = torch.argsort(noise, dim=1)  # ascend: small is keep, large is remove
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_kept = torch.gather(x, 1, ids_keep[:, :, None].expand(-1, -1, d))  # [N, L_keep, D]
        mask = torch.ones(n, length, device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)  # unshuffle: 0 is keep, 1 is remove
        return x_kept, mask, ids_restore

    def forward_encoder(self, x: Tensor, mask_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
        """Encode the visible patches of ``x`` ([N, 3, H, W] in [0, 1]) → latent [N, 1+L_keep, D]."""
        enc = self.encoder
        tokens = enc.patch_embed(self.normalize(x))  # [N, L, D]
        tokens = tokens + enc.pos_embed[:, 1:, :]
        tokens, mask, ids_restore = self.random_masking(tokens, mask_ratio)
        cls = (enc.cls_token + enc.pos_embed[:, :1, :]).expand(tokens.shape[0], -1, -1)
        latent = enc.norm(enc.blocks(torch.cat([cls, tokens], dim=1)))  # [N, 1+L_keep, D]
        return latent, mask, ids_restore

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """Latent of visible tokens → pixel predictions for every patch [N, L, p*p*3]."""
        x = self.decoder_embed(latent)  # [N, 1+L_keep, Dd]
        n, length = ids_restore.shape
        masks = self.mask_token.expand(n, length + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:, :], masks], dim=1)  # no cls token, [N, L, Dd]
        x_ = torch.gather(x_, 1, ids_restore[:, :, None].expand(-1, -1, x.shape[2]))  # unshuffle
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x)[:, 1:, :]  # drop cls token, [N, L, p*p*3]

    def forward_loss(self, target: Tensor, pred: Tensor, mask: Tensor, loss_on: str = "masked") -> Tensor:
        """Mean squared error per patch, averaged over masked patches or over all patches."""
        t = self.patchify(target)  # [N, L, p*p*3]
        if self.norm_pix_loss:
            mean, std = patch_stats(t)  # [N, L, 1] each
            t = (t - mean) / std
        per_patch = ((pred - t) ** 2).mean(dim=-1)  # [N, L]
        if loss_on == "all" or mask.sum() == 0:
            return per_patch.mean()
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, x_in: Tensor, x_target: Tensor | None = None, mask_ratio: float = 0.75,
                loss_on: str = "masked") -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Corrupted input ``x_in`` → (loss against ``x_target``, pred, mask, latent)."""
        latent, mask, ids_restore = self.forward_encoder(x_in, mask_ratio)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(x_in if x_target is None else x_target, pred, mask, loss_on)
        return loss, pred, mask, latent

    def to_pixels(self, pred: Tensor, reference: Tensor) -> Tensor:
        """Decoder output [N, L, p*p*3] → patches in pixel units.

        Without ``norm_pix_loss`` the prediction already is pixels. With it, the prediction is
        per-patch normalised and is mapped back with the per-patch mean and std of ``reference``
        ([N, 3, H, W]), as the official NIM ``forward_loss`` does with the image it is given.
        """
        if not self.norm_pix_loss:
            return pred
        mean, std = patch_stats(self.patchify(reference))  # [N, L, 1] each
        return pred * std + mean

    def reconstruct(self, x_in: Tensor, reference: Tensor | None = None, mask_ratio: float = 0.0) -> Tensor:
        """Denoise/reconstruct ``x_in`` [N, 3, H, W] → image in [0, 1] (differentiable).

        Every patch of the decoder's prediction is used (``mask_ratio`` > 0 masks that fraction
        of patches first: MAE's degradation). ``reference`` is the image whose per-patch
        statistics un-normalise a norm-pix prediction (De³: the image the defense receives,
        before its noise); default ``x_in``.
        """
        latent, _, ids_restore = self.forward_encoder(x_in, mask_ratio)
        pred = self.to_pixels(self.forward_decoder(latent, ids_restore), x_in if reference is None else reference)
        return self.unpatchify(pred).clamp(0, 1)
