"""Pretraining objectives of the MIM family, as input corruptions of one `MaskedAutoencoder`.

Each objective maps ``(mae, x)`` with clean images ``x`` [N, 3, H, W] in [0, 1] to
``(loss, metrics)``; metrics are floats logged per epoch.
"""
from __future__ import annotations

import torch
from torch import Tensor

from robust_mim.errors import ConfigError
from robust_mim.models.mim import MaskedAutoencoder

SIGMA_SAMPLERS = ("gamma", "uniform", "fixed")


def sample_sigma(n: int, sampler: str, *, concentration: float, scale_255: float, high_255: float,
                 sigma_255: float, device: torch.device | str = "cpu") -> Tensor:
    """Per-image noise levels σ [N] in [0, 1] pixel units (NIM, You et al. 2023).

    - ``gamma``: σ·255 ~ Gamma(concentration, scale_255) (the reference: 25 and 3, mean 75/255);
    - ``uniform``: σ·255 ~ U(0, high_255);
    - ``fixed``: σ = sigma_255 / 255.

    The values come from the run's settings (schema ``$defs.nim_sampler_args``, defaults per objective).

    Draws use torch's global RNG, which the engine seeds and checkpoints.
    """
    if sampler == "gamma":
        sigma = torch.distributions.Gamma(torch.tensor(float(concentration)), torch.tensor(1.0 / scale_255)).sample((n,))
    elif sampler == "uniform":
        sigma = torch.rand(n) * high_255
    elif sampler == "fixed":
        sigma = torch.full((n,), float(sigma_255))
    else:
        raise ConfigError(f"unknown sigma sampler '{sampler}' (known: {', '.join(SIGMA_SAMPLERS)})")
    return (sigma / 255.0).to(device)


def add_gaussian_noise(x: Tensor, sigma: Tensor | float) -> Tensor:
    """``x + σ·n`` with n ~ N(0, I); σ a float or per-image [N]. No clamping (as in NIM/DMAE)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 1:
        sigma = sigma[:, None, None, None]
    return x + sigma * torch.randn_like(x)


def mae_objective(mae: MaskedAutoencoder, x: Tensor, mask_ratio: float) -> tuple[Tensor, dict[str, float]]:
    """MAE: mask ``mask_ratio`` of the clean image's patches; loss on the masked patches."""
    loss, *_ = mae(x, x, mask_ratio=mask_ratio, loss_on="masked")
    return loss, {"recon": loss.item()}


def nim_objective(mae: MaskedAutoencoder, x: Tensor, sampler: str, mask_ratio: float,
                  **sampler_args: float) -> tuple[Tensor, dict[str, float]]:
    """NIM: encoder sees ``x + σ·n`` with σ drawn per image; reconstruct the clean x on all patches."""
    sigma = sample_sigma(x.shape[0], sampler, device=x.device, **sampler_args)
    loss, *_ = mae(add_gaussian_noise(x, sigma), x, mask_ratio=mask_ratio, loss_on="all")
    return loss, {"recon": loss.item(), "sigma_mean": sigma.mean().item()}


def dmae_objective(mae: MaskedAutoencoder, x: Tensor, sigma: float,
                   mask_ratio: float) -> tuple[Tensor, dict[str, float]]:
    """DMAE: Gaussian noise σ plus masking (the paper: σ = 0.25, 75%); reconstruct the clean x on all patches."""
    loss, *_ = mae(add_gaussian_noise(x, sigma), x, mask_ratio=mask_ratio, loss_on="all")
    return loss, {"recon": loss.item()}
