"""Datasets as float images in [0, 1] and integer labels.

Every dataset yields ``(x, y)`` with ``x`` a float tensor ``[3, H, W]`` in ``[0, 1]``
(normalisation lives inside the models, so ε and σ are in pixel units) and ``y`` an int.

- ``digits``: scikit-learn's bundled handwritten digits (real 8×8 scans shipped with the
  package), upsampled to the profile's image size, 3 channels, fixed seeded split. The
  default; needs no download.
- ``cifar10``: torchvision's CIFAR-10 (downloads only when ``download`` is true).
- ``imagefolder``: any ``<root>/train/<class>/*`` and ``<root>/test/<class>/*`` tree.
- ``imagenet``: ImageNet-1k in ImageFolder layout, ``<root>/train`` and ``<root>/val``.

`check_dataset` (from `robust_mim.data_check`) checks a dataset's folders before any work starts;
an image file that cannot be decoded is a `CorruptDataError` naming the file.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from robust_mim.data_check import (CIFAR10_FOLDER, CIFAR10_HOW, IMAGEFOLDER_HOW, IMAGENET_HOW, check_cifar10,
                                   check_dataset, check_image_split)
from robust_mim.errors import ConfigError, CorruptDataError
from robust_mim.registry import Registry

if TYPE_CHECKING:
    from PIL.Image import Image

DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@DATASETS.register("digits")
def digits(root: str, split: str, image_size: int, download: bool = False) -> TensorDataset:
    """scikit-learn digits, upsampled bilinearly to ``image_size``, grey → 3 channels.

    The split is fixed: a seeded permutation (seed 0) puts 20% of the 1,797 images in test.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32) / 16.0  # [N, 8, 8] in [0, 1]
    x = F.interpolate(x[:, None], size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = x.clamp(0, 1).repeat(1, 3, 1, 1)  # [N, 3, S, S]
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.from_numpy(np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(y)))
    n_test = int(round(len(y) * DIGITS_TEST_FRACTION))
    idx = order[:n_test] if split == "test" else order[n_test:]
    return TensorDataset(x[idx], y[idx])


def _image_transform(image_size: int, train: bool, imagenet_style: bool):
    from torchvision import transforms as T

    if imagenet_style:
        if train:
            return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor()])
        return T.Compose([T.Resize(int(image_size * 256 / 224)), T.CenterCrop(image_size), T.ToTensor()])
    return T.Compose([T.Resize((image_size, image_size)), T.ToTensor()])


def load_rgb(path: str) -> "Image":
    """The image at ``path`` as an RGB PIL image (ImageFolder's loader).

    Raises:
        CorruptDataError: naming the file, if PIL cannot decode it (truncated file, garbage bytes).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as fh:
            return Image.open(fh).convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError... on bad bytes
        reason = "not an image PIL can identify" if isinstance(exc, UnidentifiedImageError) else \
            f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        raise CorruptDataError(f"cannot decode image '{path}' ({reason}): replace or delete the file") from None


def _image_folder(path: Path, transform) -> Dataset:
    from torchvision.datasets import ImageFolder

    return ImageFolder(str(path), transform=transform, loader=load_rgb)


@DATASETS.register("cifar10")
def cifar10(root: str, split: str, image_size: int, download: bool = False) -> Dataset:
    """torchvision CIFAR-10 under ``root``; downloads only when ``download`` is true."""
    from torchvision.datasets import CIFAR10

    check_cifar10(root, download)
    try:
        return CIFAR10(str(root), train=split == "train", download=download,
                       transform=_image_transform(image_size, False, False))
    except RuntimeError:  # torchvision: "Dataset not found or corrupted" (a batch file fails its md5)
        raise CorruptDataError(f"cifar10 data at '{Path(root) / CIFAR10_FOLDER}' is corrupt (a batch file fails "
                               f"torchvision's md5 check): delete the folder and {CIFAR10_HOW}") from None


@DATASETS.register("imagefolder")
def imagefolder(root: str, split: str, image_size: int, download: bool = False) -> Dataset:
    """Any ``<root>/<split>/<class>/*.{png,jpg}`` tree (e.g. a JPEG copy of CIFAR-10)."""
    path = Path(root) / split
    check_image_split(path, "imagefolder", IMAGEFOLDER_HOW)
    return _image_folder(path, _image_transform(image_size, False, False))


@DATASETS.register("imagenet")
def imagenet(root: str, split: str, image_size: int, download: bool = False) -> Dataset:
    """ImageNet-1k in ImageFolder layout: ``<root>/train`` and ``<root>/val``."""
    path = Path(root) / ("train" if split == "train" else "val")
    check_image_split(path, "imagenet", IMAGENET_HOW)
    return _image_folder(path, _image_transform(image_size, split == "train", True))


def load_dataset(name: str, root: str, split: str, image_size: int, download: bool = False) -> Dataset:
    """Build a registered dataset; ``split`` is ``train`` or ``test``."""
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split '{split}' (known: train, test)")
    return DATASETS.get(name)(root=root, split=split, image_size=image_size, download=download)


SUBSET_SEED = 0  # seed of the class-stratified evaluation subset of class-sorted datasets


def _class_sorted(dataset: Dataset) -> bool:
    """Whether the dataset's labels are sorted by class (an ImageFolder: ``<split>/<class>/``)."""
    targets = getattr(dataset, "targets", None)
    return targets is not None and not any(a > b for a, b in zip(targets, targets[1:]))


def evaluation_indices(dataset: Dataset, n: int | None) -> list[int]:
    """Which ``n`` examples an evaluation takes (all when ``n`` is None or covers the dataset).

    The first ``n``, unless the dataset's labels are sorted by class (an ImageFolder: ``train/<class>/``),
    whose first ``n`` would hold only the first few classes: then a class-stratified subset — classes
    taken in turn, each class's images in a seeded random order (``SUBSET_SEED``) — returned in index
    order. Deterministic for a given dataset and ``n``, so every model sees the same images.
    """
    size = len(dataset)
    if n is None or n >= size:
        return list(range(size))
    if not _class_sorted(dataset):
        return list(range(n))  # in-memory or already mixed (digits' seeded split, torchvision CIFAR-10)
    g = torch.Generator().manual_seed(SUBSET_SEED)
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(dataset.targets):
        by_class.setdefault(int(t), []).append(i)
    queues = [[idx[j] for j in torch.randperm(len(idx), generator=g).tolist()] for idx in by_class.values()]
    picked = [q[r] for r in range(max(map(len, queues))) for q in queues if r < len(q)][:n]  # round robin
    return sorted(picked)


def evaluation_subset(dataset: Dataset, n: int | None) -> dict[str, Any]:
    """How `evaluation_indices` chose the evaluated examples, for a record's provenance.

    Returns:
        {"rule": "all" | "first n" (dataset order) | "class-stratified" (classes in turn, each class in a
        seeded random order), "n", "of" (dataset size), "seed" (class-stratified only), "indices_sha256"
        (first 12 hex digits of the sha256 of the comma-joined indices: which examples, exactly)}.
    """
    indices, size = evaluation_indices(dataset, n), len(dataset)
    rule = "all" if len(indices) == size else "class-stratified" if _class_sorted(dataset) else "first n"
    digest = hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest()[:12]
    seed = {"seed": SUBSET_SEED} if rule == "class-stratified" else {}
    return {"rule": rule, "n": len(indices), "of": size, **seed, "indices_sha256": digest}


def first_examples(dataset: Dataset, n: int | None) -> tuple[Tensor, Tensor]:
    """The ``n`` evaluation examples of `evaluation_indices` as tensors ``([n, 3, H, W], [n])``."""
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors
        return x[:n].clone(), y[:n].clone()
    loader = DataLoader(torch.utils.data.Subset(dataset, evaluation_indices(dataset, n)), batch_size=256)
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def num_classes(dataset: Dataset) -> int:
    """Number of classes (from ``classes`` when the dataset has it, else from the labels)."""
    if hasattr(dataset, "classes"):
        return len(dataset.classes)
    return int(dataset.tensors[1].max()) + 1


def epoch_batches(dataset: Dataset, batch_size: int, seed: int, epoch: int, *,
                  num_workers: int = 0, drop_last: bool = True) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches in a shuffled order that depends only on ``(seed, epoch)``.

    Resuming at an epoch therefore replays exactly the order an uninterrupted run saw. In-memory
    datasets are sliced directly (no per-item collation); others go through a DataLoader.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(dataset), generator=g)  # [N]
    n_batches = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors
        for b in range(n_batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            yield x[idx], y[idx]
        return
    loader = DataLoader(dataset, batch_size=batch_size, sampler=order.tolist(), drop_last=drop_last,
                        num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                        persistent_workers=False)
    yield from loader


def random_crop_flip(x: Tensor, padding: int, flip: bool) -> Tensor:
    """Batched augmentation: random translation by up to ``padding`` px (zero pad) and h-flip.

    Uses torch's global RNG (seeded and checkpointed by the engine). ``x``: [N, C, H, W].
    """
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)  # [N, C, H+2p, W+2p]
    dy = torch.randint(0, 2 * padding + 1, (n,))
    dx = torch.randint(0, 2 * padding + 1, (n,))
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # [N, H, 1]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # [N, 1, W]
    out = padded.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    if flip:
        mirror = torch.rand(n) < 0.5
        out = torch.where(mirror[:, None, None, None], out.flip(3), out)
    return out.contiguous()


def random_flip(x: Tensor) -> Tensor:
    """Batched horizontal flip of each image with probability ½ (torch's global RNG). ``x``: [N, C, H, W]."""
    mirror = torch.rand(x.shape[0]) < 0.5  # [N]
    return torch.where(mirror.to(x.device)[:, None, None, None], x.flip(3), x)


__all__ = ["DATASETS", "check_dataset", "epoch_batches", "evaluation_indices", "evaluation_subset", "first_examples",
           "load_dataset", "load_rgb", "num_classes", "random_crop_flip", "random_flip"]
