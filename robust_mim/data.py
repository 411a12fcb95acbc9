"""Datasets as float images in [0, 1] and integer labels.

Every dataset yields ``(x, y)`` with ``x`` a float tensor ``[3, H, W]`` in ``[0, 1]``
(normalisation lives inside the models, so ε and σ are in pixel units) and ``y`` an int.

- ``digits``: scikit-learn's bundled handwritten digits (real 8×8 scans shipped with the
  package), upsampled to the profile's image size, 3 channels, fixed seeded split. The
  default; needs no download.
- ``cifar10``: torchvision's CIFAR-10 (downloads only when ``download`` is true).
- ``imagefolder``: any ``<root>/train/<class>/*`` and ``<root>/test/<class>/*`` tree.
- ``imagenet``: ImageNet-1k in ImageFolder layout, ``<root>/train`` and ``<root>/val``.
- ``cifar10-memory`` / ``imagefolder-memory``: the same data as ``cifar10`` / ``imagefolder`` (the same
  pixels, labels and order), decoded once into a uint8 tensor ``[N, 3, S, S]`` held in memory
  (`ImageTensors`) and cached under ``<root>/.cache/``, so that later jobs load a split in a fraction of
  a second and training slices batches without per-image PIL work.

`check_dataset` (from `robust_mim.data_check`) checks a dataset's folders before any work starts;
an image file that cannot be decoded is a `CorruptDataError` naming the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from robust_mim.data_check import (CIFAR10_FILES, CIFAR10_FOLDER, CIFAR10_HOW, IMAGEFOLDER_HOW, IMAGENET_HOW,
                                   check_cifar10, check_dataset, check_image_split)
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


class ImageTensors(Dataset):
    """A whole split held in memory: uint8 images ``[N, 3, S, S]``, int64 labels ``[N]``, class names.

    Items are what the PIL datasets yield (float ``[3, S, S]`` = uint8 / 255, as ``ToTensor``, and an
    int label), so every consumer sees the same values; `epoch_batches` and `first_examples` slice
    whole batches instead (one uint8 → float conversion per batch, no per-image work).
    """

    def __init__(self, images: Tensor, labels: Tensor, classes: list[str]) -> None:
        self.images, self.labels, self.classes = images.contiguous(), labels, list(classes)
        self.targets = labels.tolist()  # [N] ints, as ImageFolder's (`evaluation_indices` reads them)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i].float().div(255), int(self.labels[i])

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Images ``idx`` as float ``[B, 3, S, S]`` in [0, 1] and their labels ``[B]``."""
        return self.images[idx].float().div(255), self.labels[idx]


CACHE_FOLDER = ".cache"  # under the dataset's root: <root>/.cache/<dataset>-<split>-<S>px-<key>.safetensors
CACHE_VERSION = 1  # bump when the cached layout changes: old files then no longer match any key


def _stack_pixels(images: Iterable["Image"], image_size: int) -> Tensor:
    """PIL images as one uint8 tensor ``[N, 3, S, S]``, each resized by the transform the PIL datasets
    apply (``T.Resize((S, S))``; PIL hands back an unchanged copy when the size already fits)."""
    resize = _image_transform(image_size, False, False).transforms[0]
    hwc = np.stack([np.asarray(resize(image), dtype=np.uint8) for image in images])  # [N, S, S, 3]
    return torch.from_numpy(np.ascontiguousarray(hwc.transpose(0, 3, 1, 2)))


def _file_sizes(folder: Path, names: Iterable[str] | None = None) -> list[tuple[str, int]]:
    """``(path relative to folder, size in bytes)`` of the files ``names`` in ``folder`` (default: every file
    below it, sorted): what identifies a decoded split's source (one ``stat`` per file, no decoding)."""
    if names is not None:
        return [(name, (folder / name).stat().st_size) for name in names]
    found, stack = [], [""]
    while stack:
        sub = stack.pop()
        with os.scandir(folder / sub) as entries:
            for e in entries:
                rel = f"{sub}/{e.name}" if sub else e.name
                if e.is_dir():
                    stack.append(rel)
                else:
                    found.append((rel, e.stat().st_size))
    return sorted(found)


def _source_key(folder: Path, files: list[tuple[str, int]], image_size: int) -> str:
    """Key of a decoded split: the source folder's resolved path, its files' names and sizes, S, the layout."""
    h = hashlib.sha256(f"v{CACHE_VERSION} {image_size}px {folder.resolve()}\n".encode())
    h.update("".join(f"{name}\t{size}\n" for name, size in files).encode())
    return h.hexdigest()[:16]


def _crc32(images: Tensor, labels: Tensor) -> int:
    """CRC-32 of the pixels and labels (about 0.04 s for CIFAR-10's training split)."""
    return zlib.crc32(labels.numpy(), zlib.crc32(images.numpy()))


def _read_cache(path: Path, key: str) -> ImageTensors | None:
    """The cached split at ``path`` if it is readable, was written for ``key`` and its CRC matches."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta, images, labels = f.metadata() or {}, f.get_tensor("images"), f.get_tensor("labels")
        intact = meta.get("key") == key and int(meta["crc32"]) == _crc32(images, labels)
        return ImageTensors(images, labels, json.loads(meta["classes"])) if intact else None
    except Exception:  # noqa: BLE001 - a torn or garbage cache is rebuilt, never trusted
        return None


def _write_cache(path: Path, key: str, data: ImageTensors) -> None:
    """Save ``data`` atomically (older caches of the same split are removed); an unwritable root only warns."""
    from robust_mim.io import WriteFailed, save_weights

    meta = {"key": key, "crc32": str(_crc32(data.images, data.labels)), "classes": json.dumps(data.classes)}
    try:
        for old in path.parent.glob(f"{path.name.rsplit('-', 1)[0]}-*.safetensors"):
            if old != path:  # another source's decoding of this split
                old.unlink(missing_ok=True)
        save_weights({"images": data.images, "labels": data.labels}, path, meta)
    except (OSError, WriteFailed) as exc:
        warnings.warn(f"cannot cache the decoded split at '{path}' ({exc}); it will be decoded again next time",
                      stacklevel=3)


def cached_split(root: str, name: str, split: str, image_size: int, source: Path, names: list[str] | None,
                 decode: Callable[[], ImageTensors]) -> ImageTensors:
    """The split from ``<root>/.cache/`` when its key matches, else ``decode()`` it once and cache it.

    The key covers the ``source`` folder's path and the names and sizes of its files ``names`` (None: every
    file below it) and ``image_size``; a changed source, or a corrupt cache file, is decoded again.
    """
    key = _source_key(source, _file_sizes(source, names), image_size)
    path = Path(root) / CACHE_FOLDER / f"{name}-{split}-{image_size}px-{key}.safetensors"
    data = _read_cache(path, key) if path.is_file() else None
    if data is None:
        data = decode()
        _write_cache(path, key, data)
    return data


def _decode_cifar10(root: str, split: str, image_size: int) -> ImageTensors:
    """torchvision's CIFAR-10 (its md5 checks, its parsing) as uint8 tensors; resized only if S != 32."""
    from PIL import Image

    ds = cifar10(root, split, image_size)  # ds.data: [N, 32, 32, 3] uint8
    if image_size == ds.data.shape[1]:
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))  # [N, 3, 32, 32]
    else:
        images = _stack_pixels(map(Image.fromarray, ds.data), image_size)
    return ImageTensors(images, torch.tensor(ds.targets), ds.classes)


@DATASETS.register("cifar10-memory")
def cifar10_memory(root: str, split: str, image_size: int, download: bool = False) -> ImageTensors:
    """``cifar10`` decoded once into memory and cached under ``<root>/.cache/`` (the same pixels and order)."""
    check_cifar10(root, download)
    folder = Path(root) / CIFAR10_FOLDER
    if download and not all((folder / f).is_file() for f in CIFAR10_FILES):
        cifar10(root, split, image_size, download=True)
    batches = "test_batch" if split == "test" else "data_batch"
    files = [f for f in CIFAR10_FILES if f == "batches.meta" or f.startswith(batches)]
    return cached_split(root, "cifar10", split, image_size, folder, files,
                        lambda: _decode_cifar10(root, split, image_size))


def _decode_image_folder(path: Path, image_size: int) -> ImageTensors:
    """Every image of an ImageFolder split, in ImageFolder's order and labels, as uint8 tensors."""
    ds = _image_folder(path, None)
    images = _stack_pixels((load_rgb(p) for p, _ in ds.samples), image_size)  # [N, 3, S, S]
    return ImageTensors(images, torch.tensor(ds.targets), ds.classes)


@DATASETS.register("imagefolder-memory")
def imagefolder_memory(root: str, split: str, image_size: int, download: bool = False) -> ImageTensors:
    """``imagefolder`` decoded once into memory and cached under ``<root>/.cache/`` (the same pixels and order)."""
    path = Path(root) / split
    check_image_split(path, "imagefolder-memory", IMAGEFOLDER_HOW)
    return cached_split(root, "imagefolder", split, image_size, path, None,
                        lambda: _decode_image_folder(path, image_size))


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
    if isinstance(dataset, ImageTensors):
        return dataset.batch(torch.tensor(evaluation_indices(dataset, n), dtype=torch.long))
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
    if isinstance(dataset, ImageTensors):
        for b in range(n_batches):
            yield dataset.batch(order[b * batch_size:(b + 1) * batch_size])
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


__all__ = ["DATASETS", "ImageTensors", "cached_split", "check_dataset", "epoch_batches", "evaluation_indices",
           "evaluation_subset", "first_examples", "load_dataset", "load_rgb", "num_classes", "random_crop_flip",
           "random_flip"]
