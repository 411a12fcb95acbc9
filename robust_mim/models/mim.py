"""Masked image modeling (He et al. 2022, MAE) with a pluggable input corruption.

One encoder-decoder serves every MIM-style paper here; they differ only in what the encoder
sees and where the loss is taken (see ``robust_mim.objectives``):

- MAE:   encoder sees the clean image, 75% of patches masked, loss on masked patches;
- NIM:   encoder sees ``x + σ·n``, nothing masked, loss on all patches vs the clean image;
- DMAE:  encoder sees ``x + 0.25·n``, 75% masked, loss on all patches vs the clean image;
- MIMIR: encoder sees an adversarial ``x'``, 75% masked, loss on masked patches vs clean ``x``.

The encoder is the same timm ViT the classifiers use (``build_vit_encoder``), stored as
``self.encoder``, so its weights load into a classifier backbone without renaming.
"""
from __future__ import annotations

from typing import Sequence

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from robust_mim.models.classifier import Normalize
from robust_mim.models.vit import ViTSpec, build_vit_encoder


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
        num_patches = self.encoder.patch_embed.num_patches
        self.decoder_embed = nn.Linear(spec.embed_dim, spec.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, spec.decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, spec.decoder_dim))
        self.decoder_blocks = nn.Sequential(*[
            Block(spec.decoder_dim, spec.decoder_heads, mlp_ratio=spec.mlp_ratio) for _ in range(spec.decoder_depth)
        ])
        self.decoder_norm = nn.LayerNorm(spec.decoder_dim)
        self.decoder_pred = nn.Linear(spec.decoder_dim, spec.patch_size ** 2 * 3)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)

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
            mean, var = t.mean(dim=-1, keepdim=True), t.var(dim=-1, keepdim=True)
            t = (t - mean) / (var + 1e-6) ** 0.5
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

    def reconstruct(self, x_in: Tensor) -> Tensor:
        """Denoise/reconstruct with nothing masked: [N, 3, H, W] → image in [0, 1] (differentiable)."""
        latent, _, ids_restore = self.forward_encoder(x_in, 0.0)
        return self.unpatchify(self.forward_decoder(latent, ids_restore)).clamp(0, 1)
