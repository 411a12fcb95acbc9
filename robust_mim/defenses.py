"""Defenses as classifiers: each wraps a bare classifier so attacks see the whole defended model.

``build_defense(settings, classifier, denoiser)`` returns ``(defended, randomized)``; the flag
tells the evaluation to add EOT attacks and the EOT-vs-single-draw sanity check.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from robust_mim.errors import ConfigError
from robust_mim.registry import Registry

DEFENSES: Registry[Callable[..., tuple[nn.Module, bool]]] = Registry("defense")


def build_defense(settings: dict[str, Any] | None, classifier: nn.Module,
                  denoiser: nn.Module | None = None) -> tuple[nn.Module, bool]:
    """``settings = {"name": ..., **kwargs}`` or None (no defense) → (defended model, randomized)."""
    if not settings:
        return classifier, False
    kwargs = {k: v for k, v in settings.items() if k != "name"}
    try:
        return DEFENSES.get(settings["name"])(classifier, denoiser=denoiser, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"defense '{settings['name']}': {exc}") from None


# ----------------------------------------------------------------------------- De³ (paper 1)


class De3(nn.Module):
    """De³ (You et al., NeurIPS 2023): add noise σ_test, denoise with the frozen NIM autoencoder, classify.

    ``forward(x) = classifier(clamp(D(E(x + σ_test·n)), 0, 1))`` with a fresh n ~ N(0, I) on
    every call, so the defense is randomized (attack it with EOT) and differentiable end to
    end: attacks get gradients through the denoiser. A denoiser pretrained with
    ``norm_pix_loss`` predicts per-patch normalised pixels; they are mapped back with the
    per-patch mean and std of the image the defense receives, x (official
    ``ClassifierWithDefenseNIM``). With ``mask_ratio`` = γ > 0 the autoencoder masks that
    fraction of patches: σ_test = 0 and γ > 0 is the paper's MAE baseline, whose degradation is
    masking (official ``ClassifierWithDefenseMAE``); every patch of the reconstruction is used.

    Args:
        classifier: [N, 3, H, W] in [0, 1] -> logits [N, K] (with ``embed``/``head`` if present).
        denoiser: a `MaskedAutoencoder` (frozen by the caller or by `build_defense`).
        sigma: σ_test in pixel units (0: denoise the input as is).
        mask_ratio: fraction of patches masked before reconstruction (0 for NIM).
    """

    def __init__(self, classifier: nn.Module, denoiser: nn.Module, sigma: float, mask_ratio: float = 0.0) -> None:
        super().__init__()
        self.classifier, self.denoiser = classifier, denoiser
        self.sigma, self.mask_ratio = float(sigma), float(mask_ratio)

    @property
    def randomized(self) -> bool:
        return self.sigma > 0 or self.mask_ratio > 0

    def purify(self, x: Tensor) -> Tensor:
        """[N, 3, H, W] in [0, 1] -> denoised reconstruction [N, 3, H, W] in [0, 1] (differentiable)."""
        from robust_mim.objectives.mim import add_gaussian_noise

        x_noisy = add_gaussian_noise(x, self.sigma) if self.sigma > 0 else x  # not clamped (as in NIM)
        return self.denoiser.reconstruct(x_noisy, reference=x, mask_ratio=self.mask_ratio)

    @property
    def head(self) -> nn.Module:
        return self.classifier.head

    def embed(self, x: Tensor) -> Tensor:
        """Pooled features of the denoised image [N, D] (``forward == head(embed)``)."""
        return self.classifier.embed(self.purify(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.purify(x))  # [N, K]


@DEFENSES.register("de3")
def _de3(classifier: nn.Module, denoiser: nn.Module | None, *, sigma_255: float,
         mask_ratio: float) -> tuple[nn.Module, bool]:
    """De³ with σ_test = ``sigma_255``/255 and the run's ``denoiser`` (frozen here)."""
    if denoiser is None:
        raise ConfigError("defense 'de3' needs a denoiser: set the run's `denoiser` to a pretraining run id")
    if sigma_255 < 0 or not 0 <= mask_ratio < 1:
        raise ConfigError(f"defense 'de3': sigma_255 must be >= 0 and mask_ratio in [0, 1), "
                          f"got {sigma_255} and {mask_ratio}")
    denoiser.eval().requires_grad_(False)
    defended = De3(classifier, denoiser, sigma_255 / 255.0, mask_ratio)
    return defended, defended.randomized


def de3_degradation(settings: dict[str, Any] | None) -> str:
    """How a De³ defense degrades its input: ``"mask"`` for the MAE baseline (σ_test = 0, γ > 0), else ``"noise"``.

    The σ_test sweep (`robust_mim.papers.nim.objective.sigma_tradeoff`) varies that degradation.
    """
    settings = settings or {}
    masks = settings.get("name") == "de3" and settings.get("mask_ratio", 0) > 0 and settings.get("sigma_255", 0) == 0
    return "mask" if masks else "noise"


# ----------------------------------------------------------------------------- test-time quantization (paper 5)


class QuantizedInput(nn.Module):
    """classifier(Q(x)): quantize the input with a frozen VQ autoencoder (DAT's Q), then classify.

    Q is not differentiable (nearest-code lookup), so the forward pass runs it through
    `robust_mim.attacks.core.BPDA`: Q(x) forward, identity backward; white-box attacks thus see the
    whole defended model. Deterministic (not randomized).

    Args:
        classifier: [N, 3, H, W] in [0, 1] -> logits [N, K] (with ``embed``/``head`` if present).
        vq: a `robust_mim.models.vq.VQAutoencoder` with ``quantize_image``.
    """

    def __init__(self, classifier: nn.Module, vq: nn.Module) -> None:
        super().__init__()
        from robust_mim.attacks.core import BPDA

        self.classifier, self.vq = classifier, vq.eval().requires_grad_(False)
        self.quantize = BPDA(vq.quantize_image)

    @property
    def head(self) -> nn.Module:
        return self.classifier.head

    def embed(self, x: Tensor) -> Tensor:
        """Pooled features of Q(x) [N, D]."""
        return self.classifier.embed(self.quantize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.quantize(x))  # [N, K]


@DEFENSES.register("vq")
def _vq_input(classifier: nn.Module, denoiser: nn.Module | None) -> tuple[nn.Module, bool]:
    """Test-time quantization x -> Q(x) (paper 5); ``denoiser`` is the run's VQ autoencoder (its `vq`)."""
    if denoiser is None or not hasattr(denoiser, "quantize_image"):
        raise ConfigError("defense 'vq' needs a VQ autoencoder: set the run's `vq` to a dat.vq run id")
    return QuantizedInput(classifier, denoiser), False
