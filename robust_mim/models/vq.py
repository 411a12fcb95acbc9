"""A small VQ autoencoder: the discrete image space of DAT (Mao et al., NeurIPS 2022).

DAT represents an image by the codebook indices of a VQGAN and back: ``Q(x) =
decode(quantize(encode(x)))``. The paper used a pretrained ImageNet VQGAN (f = 8,
16384 codes) that cannot be downloaded here, so the pipeline trains this small
convolutional VQ autoencoder (VQ-VAE style: MSE reconstruction + commitment loss,
EMA codebook from ``vector_quantize_pytorch.VectorQuantize``) on the run's own data.

Shapes: images [N, 3, H, W] in [0, 1] with H, W divisible by ``downsample``;
latents [N, D, H/f, W/f]; code indices [N, H/f, W/f].
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vector_quantize_pytorch import VectorQuantize

from robust_mim.attacks.core import straight_through
from robust_mim.checkpoints import check_kind
from robust_mim.errors import CheckpointError, ConfigError
from robust_mim.io import load_weights, save_weights


class _ResBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x))))."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _encoder(hidden: int, dim: int, halvings: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, hidden, 3, padding=1)]
    for _ in range(halvings):
        layers += [nn.ReLU(), nn.Conv2d(hidden, hidden, 4, stride=2, padding=1)]  # H -> H/2
    return nn.Sequential(*layers, _ResBlock(hidden), nn.ReLU(), nn.Conv2d(hidden, dim, 1))


def _decoder(hidden: int, dim: int, halvings: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(dim, hidden, 3, padding=1), _ResBlock(hidden)]
    for _ in range(halvings):
        layers += [nn.ReLU(), nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1)]  # H -> 2H
    return nn.Sequential(*layers, nn.ReLU(), nn.Conv2d(hidden, 3, 3, padding=1))


class VQAutoencoder(nn.Module):
    """Conv encoder → vector quantizer (EMA codebook) → conv decoder with sigmoid output.

    Args:
        downsample: spatial factor f of the latent grid (a power of two: 1, 2, 4, 8).
        codebook_size: number of codes K.
        codebook_dim: code (latent channel) dimension D.
        hidden: channels of the conv layers.
        commitment_weight: β of the VQ-VAE loss ``recon + β · commit``.
        decay: EMA decay of the codebook (updated in training mode only).
        kmeans_init: initialise the codebook by k-means on the first batch.
        dead_code_threshold: codes with EMA usage below this are re-seeded from the batch.
    """

    def __init__(self, *, downsample: int, codebook_size: int, codebook_dim: int, hidden: int,
                 commitment_weight: float, decay: float, kmeans_init: bool, dead_code_threshold: float) -> None:
        super().__init__()
        if downsample not in (1, 2, 4, 8):
            raise ConfigError(f"VQ downsample factor must be 1, 2, 4 or 8, got {downsample!r}")
        if codebook_size < 2 or codebook_dim < 1:
            raise ConfigError(f"VQ codebook needs size >= 2 and dim >= 1, got {codebook_size}, {codebook_dim}")
        halvings = int(math.log2(downsample))
        self.downsample, self.codebook_size, self.commitment_weight = downsample, codebook_size, commitment_weight
        self.encoder = _encoder(hidden, codebook_dim, halvings)
        self.decoder = _decoder(hidden, codebook_dim, halvings)
        # commitment loss is computed here (also in eval mode), so the library's is off
        self.quantizer = VectorQuantize(dim=codebook_dim, codebook_size=codebook_size, decay=decay,
                                        commitment_weight=0.0, kmeans_init=kmeans_init, kmeans_iters=10,
                                        threshold_ema_dead_code=dead_code_threshold, accept_image_fmap=True)

    def _check(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % self.downsample or x.shape[3] % self.downsample:
            raise ConfigError(f"VQAutoencoder expects [N, 3, H, W] with H, W divisible by {self.downsample}, "
                              f"got {tuple(x.shape)}")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [N, 3, H, W] in [0, 1] -> (z_q [N, D, h, w], indices [N, h, w], commit).

        commit is the (unweighted) commitment loss mean ‖z_e − sg(z_q)‖².
        """
        self._check(x)
        z_e = self.encoder(x * 2 - 1)  # [N, D, h, w]; inputs centred inside the model
        z_q, indices, _ = self.quantizer(z_e)  # z_q: codebook vectors, gradient passed to z_e
        commit = F.mse_loss(z_e, z_q.detach())
        return z_q, indices, commit

    def decode(self, z_q: Tensor) -> Tensor:
        """z_q [N, D, h, w] -> images [N, 3, h·f, w·f] in (0, 1)."""
        return torch.sigmoid(self.decoder(z_q))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Code indices [N, h, w] -> images [N, 3, h·f, w·f]."""
        return self.decode(self.quantizer.get_output_from_indices(indices))  # codes [N, D, h, w]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [N, 3, H, W] -> (x_hat [N, 3, H, W], indices [N, h, w], commitment loss)."""
        z_q, indices, commit = self.encode(x)
        return self.decode(z_q), indices, commit

    def quantize_image(self, x: Tensor) -> Tensor:
        """Q(x) of the DAT paper: encode, snap to the codebook, decode. [N, 3, H, W] -> same.

        In training mode a forward pass also moves the EMA codebook; use eval mode for a fixed Q.
        """
        return self(x)[0]

    def quantize_image_st(self, x: Tensor) -> Tensor:
        """Q(x) in the forward pass; in the backward pass the gradient goes straight to x.

        BPDA-style straight-through estimator (dQ/dx := I): Q is evaluated without
        gradient, so the autoencoder's parameters receive none through this call.
        """
        with torch.no_grad():
            q = self.quantize_image(x)
        return straight_through(x, q)

    def vq_loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """VQ-VAE objective ``MSE(x_hat, x) + β · commit`` (the codebook follows by EMA).

        Returns:
            (scalar loss, {"recon": MSE, "commit": commitment loss, "psnr": dB}).
        """
        x_hat, _, commit = self(x)
        recon = F.mse_loss(x_hat, x)
        loss = recon + self.commitment_weight * commit
        return loss, {"recon": recon.item(), "commit": commit.item(), "psnr": psnr(x, x_hat.detach()).item()}


def psnr(x: Tensor, x_hat: Tensor, per_image: bool = False) -> Tensor:
    """Peak signal-to-noise ratio in dB for images in [0, 1]: 10·log10(1 / MSE).

    Args:
        x, x_hat: [N, C, H, W] in [0, 1].
        per_image: return [N] values instead of their mean.
    """
    mse = (x - x_hat).pow(2).flatten(1).mean(dim=1).clamp_min(1e-10)  # [N]
    values = -10 * torch.log10(mse)
    return values if per_image else values.mean()


def codebook_usage(indices: Tensor, codebook_size: int) -> dict[str, float]:
    """How much of the codebook a batch uses.

    Args:
        indices: code indices of any shape, values in [0, codebook_size).
    Returns:
        {"usage": fraction of codes used at least once (in (0, 1]),
         "perplexity": exp(entropy of the code histogram), between 1 and codebook_size}.
    """
    counts = torch.bincount(indices.flatten().long(), minlength=codebook_size).float()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"usage": (counts > 0).float().mean().item(), "perplexity": entropy.exp().item()}


# ----------------------------------------------------------------------------- weights


# keys of the `dat.vq` settings that build the autoencoder (the rest are optimisation settings)
VQ_ARCH_KEYS = ("downsample", "codebook_size", "codebook_dim", "hidden", "commitment_weight", "decay",
                "kmeans_init", "dead_code_threshold")


def build_vq(run: dict[str, Any]) -> VQAutoencoder:
    """The VQ autoencoder of a ``dat.vq`` run (its architecture keys; others ignored)."""
    return VQAutoencoder(**{k: run[k] for k in VQ_ARCH_KEYS if k in run})


def save_vq(vq: VQAutoencoder, arch: dict[str, Any], path: str | Path, spec_hash: str) -> None:
    """Weights + architecture (JSON in the safetensors metadata) of a trained VQ autoencoder."""
    save_weights(vq.state_dict(), path, {"kind": "vq", "config_hash": spec_hash, "vq_arch": json.dumps(arch)})


def load_vq(path: str | Path) -> VQAutoencoder:
    """Rebuild a VQ autoencoder saved by `save_vq` (eval mode); a file without the metadata is a CheckpointError."""
    from safetensors import safe_open

    state = load_weights(path)  # raises CheckpointError for missing / corrupt files
    check_kind(state, str(path), "vq")  # MAE or classifier weights given as --vq: say what the file holds
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("kind") != "vq" or "vq_arch" not in meta:
        raise CheckpointError(f"'{path}' is not a VQ autoencoder written by train-vq (no vq_arch metadata)")
    vq = VQAutoencoder(**json.loads(meta["vq_arch"]))
    vq.load_state_dict(state, strict=True)
    return vq.eval()
