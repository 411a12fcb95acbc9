"""ResNet backbones on [0, 1] images, partial freezing and softmax ensembles (shared: any classifier build).

- `ResNetBackbone`: a timm ResNet classifier with a CIFAR stem for small images; ``BACKBONES`` names
  the sizes a profile may ask for (``resnet18``, the CPU-sized ``resnet18_w16`` / ``resnet18_w8``, ``resnet50``).
- `freeze_prefix` / `partial_parameters`: partial fine-tuning (frozen stages keep their batch-norm statistics).
- `SoftmaxEnsemble`: the log of averaged softmax probabilities, attacked as one model.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import timm
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from robust_mim.errors import ConfigError
from robust_mim.models.classifier import ImageClassifier
from robust_mim.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the official code normalises CIFAR-10 with these
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- backbone
class ResNetBackbone(ImageClassifier):
    """A timm ResNet classifier on [0, 1] images: ``forward(x) == head(embed(x))``.

    With ``small_input=True`` (16×16 / 32×32 images) the 7×7 stride-2 stem and its max-pool are
    replaced by a CIFAR-style 3×3 stride-1 convolution, so a 32×32 image reaches the last stage
    at 4×4. Parameter names are ``backbone.<timm name>`` and ``head.*``.

    Args:
        name: any timm ResNet (``resnet18`` is the small default; the paper used ResNet-50v2).
        num_classes: K logits of ``head``.
        small_input: use the CIFAR stem.
        mean, std: per-channel normalisation applied inside the model.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``channels=(16, 32, 64, 128)``).
    """

    STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, name: str = "resnet18", num_classes: int = 10, small_input: bool = True,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 **timm_kwargs: object) -> None:
        net = timm.create_model(name, pretrained=False, num_classes=0, **timm_kwargs)
        if not all(hasattr(net, a) for a in ("conv1", "bn1", "maxpool", "layer4")):
            raise ConfigError(f"'{name}' is not a timm ResNet (needs conv1, bn1, maxpool, layer1-4)")
        if small_input:
            net.conv1 = nn.Conv2d(3, net.bn1.num_features, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        super().__init__(net, net.num_features, num_classes, mean, std)

    def blocks(self) -> list[nn.Module]:
        """The stages in input order: stem (conv1, bn1, act1), layer1 … layer4."""
        net = self.backbone
        stem = nn.ModuleList([net.conv1, net.bn1, net.act1])
        return [stem, net.layer1, net.layer2, net.layer3, net.layer4]

    def stage_prefixes(self, num_stages: int) -> list[str]:
        """Parameter-name prefixes of the first ``num_stages`` stages (for `freeze_prefix`).

        ``stage_prefixes(3)`` → stem, layer1, layer2 (0 ≤ num_stages ≤ 5).
        """
        if not 0 <= num_stages <= len(self.STAGES):
            raise ConfigError(f"num_stages must be in [0, {len(self.STAGES)}], got {num_stages}")
        names = {"stem": ["backbone.conv1", "backbone.bn1"]}
        return [p for s in self.STAGES[:num_stages] for p in names.get(s, [f"backbone.{s}"])]


BACKBONES: Registry[Callable[..., ImageClassifier]] = Registry("backbone")


@BACKBONES.register("resnet18")
def _resnet18(num_classes: int, small_input: bool, mean: Sequence[float], std: Sequence[float]) -> ImageClassifier:
    return ResNetBackbone("resnet18", num_classes, small_input, mean, std)


@BACKBONES.register("resnet18_w16")
def _resnet18_w16(num_classes: int, small_input: bool, mean: Sequence[float],
                  std: Sequence[float]) -> ImageClassifier:
    """ResNet-18 at a quarter of the width (16-32-64-128 channels): a CPU-sized stand-in."""
    return ResNetBackbone("resnet18", num_classes, small_input, mean, std, channels=(16, 32, 64, 128))


@BACKBONES.register("resnet18_w8")
def _resnet18_w8(num_classes: int, small_input: bool, mean: Sequence[float],
                 std: Sequence[float]) -> ImageClassifier:
    """ResNet-18 at an eighth of the width (8-16-32-64 channels): the smoke profile's CPU backbone."""
    return ResNetBackbone("resnet18", num_classes, small_input, mean, std, channels=(8, 16, 32, 64))


@BACKBONES.register("resnet50")
def _resnet50(num_classes: int, small_input: bool, mean: Sequence[float], std: Sequence[float]) -> ImageClassifier:
    return ResNetBackbone("resnet50", num_classes, small_input, mean, std)


def build_backbone_classifier(name: str, num_classes: int, image_size: int, mean: Sequence[float],
                              std: Sequence[float]) -> ImageClassifier:
    """A registered ResNet classifier on [0, 1] images (CIFAR stem for images up to 64 pixels)."""
    return BACKBONES.get(name)(num_classes, image_size <= 64, mean, std)


# ----------------------------------------------------------------------------- partial fine-tuning
def _matches(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _keep_eval(module: nn.Module, args: tuple) -> None:
    module.train(False)  # frozen normalisation layers always use (and never update) running stats


def freeze_prefix(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Freeze every parameter whose name is a prefix or starts with ``prefix + "."``.

    Frozen parameters get ``requires_grad = False``; batch-norm layers inside the frozen part
    are kept in eval mode on every forward (a pre-hook), so their running statistics stay
    bit-identical too. Build the optimizer from `partial_parameters` / ``requires_grad``
    parameters so weight decay cannot touch the frozen part.

    Returns:
        The names of the frozen parameters (``ConfigError`` if a prefix matches nothing).
    """
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_modules()]
    unused = [p for p in prefixes if not any(_matches(n, [p]) for n in names)]
    if unused:
        raise ConfigError(f"freeze: no parameters under {unused}")
    frozen = [n for n, p in model.named_parameters() if _matches(n, prefixes)]
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm) and _matches(name, prefixes):
            module.register_forward_pre_hook(_keep_eval)
    return frozen


def partial_parameters(model: nn.Module, frozen_prefixes: Sequence[str] = ()) -> list[nn.Parameter]:
    """The parameters partial fine-tuning trains: not under ``frozen_prefixes`` and requiring grad."""
    return [p for n, p in model.named_parameters() if p.requires_grad and not _matches(n, frozen_prefixes)]


# ----------------------------------------------------------------------------- ensemble
class SoftmaxEnsemble(nn.Module):
    """Average the softmax probabilities of several classifiers; return their log.

    ``forward(x) = log( (1/E) Σ_e softmax(f_e(x)) )`` [N, K] — a valid log-probability
    (``logsumexp == 0``) that attacks treat as the logits of one model, so every member is
    attacked jointly (the paper's fine-tuned ensemble).
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ConfigError("SoftmaxEnsemble needs at least one model")
        self.members = nn.ModuleList(models)

    def forward(self, x: Tensor) -> Tensor:
        log_probs = torch.stack([m(x).log_softmax(dim=-1) for m in self.members])  # [E, N, K]
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))  # [N, K]
