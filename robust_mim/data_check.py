"""Cheap checks that a dataset is where, and laid out how, the configuration says.

`check_dataset` lists folders and file names only (it decodes no image and imports neither torch
nor torchvision), so the Snakefile calls it while it parses (``snakemake -n`` stops with one line
before planning a job) and the CLI calls it before it builds a dataset. Each problem is one
`DataMissingError` line naming the path and how to get or arrange the data.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from robust_mim.errors import ConfigError, DataMissingError

# torchvision's ImageFolder extensions (torchvision.datasets.folder.IMG_EXTENSIONS)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = ("batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch")
CIFAR10_HOW = ("set data.download: true (torchvision fetches it) or extract cifar-10-python.tar.gz from "
               "https://www.cs.toronto.edu/~kriz/cifar.html into data.root")
IMAGEFOLDER_HOW = "expected <root>/train/<class>/<image> and <root>/test/<class>/<image>, the same classes in both"
IMAGENET_HOW = ("get ImageNet-1k from image-net.org as <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG "
                "(sort the flat val/ into wnid folders)")


def _few(names: list[str], n: int = 4) -> str:
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return "[" + ", ".join(names[:n]) + "]" + more


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def _has_image(folder: Path) -> bool:
    """Whether ``folder`` or a folder below it holds an image file (stops at the first one found, so a
    class folder of a thousand JPEGs costs one directory entry)."""
    subfolders = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file() and _is_image(entry.name):
                return True
            if entry.is_dir():
                subfolders.append(entry.path)
    return any(_has_image(Path(sub)) for sub in subfolders)


def check_image_split(path: Path | str, dataset: str, how: str) -> list[str]:
    """The sorted class folders of one split ``<path>/<class>/<image>`` (what ImageFolder labels 0..K-1).

    Raises:
        DataMissingError: the split is missing, has no class folders (images directly in it), or a
            class folder holds no image, so that torchvision would fail or label the images wrongly.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataMissingError(f"{dataset} split '{path.name}' not found at '{path}': {how}")
    entries = list(os.scandir(path))
    classes = sorted(e.name for e in entries if e.is_dir())
    if not classes:
        loose = sum(1 for e in entries if e.is_file() and _is_image(e.name))
        where = f"its {loose} images sit directly in it" if loose else "it is empty"
        raise DataMissingError(f"{dataset} split '{path}' has no class folders ({where}): {how}")
    empty = [c for c in classes if not _has_image(path / c)]
    if len(empty) == len(classes):
        raise DataMissingError(f"{dataset} split '{path}' holds no images (no .jpg, .png ... file in its "
                               f"{len(classes)} class folders): {how}")
    if empty:
        raise DataMissingError(f"{dataset} split '{path}' has class folders without images {_few(empty)}: "
                               f"add images or remove the folders ({how})")
    return classes


def check_image_tree(dataset: str, root: Path | str, splits: tuple[str, str], how: str) -> None:
    """Both splits of an ImageFolder tree exist, hold images, and have the same class folders."""
    root = Path(root)
    if not root.is_dir():
        raise DataMissingError(f"{dataset} data not found at '{root}': {how}")
    (a, b), (classes_a, classes_b) = splits, [check_image_split(root / s, dataset, how) for s in splits]
    if classes_a != classes_b:
        only_a, only_b = sorted(set(classes_a) - set(classes_b)), sorted(set(classes_b) - set(classes_a))
        raise DataMissingError(
            f"{dataset} class folders differ between '{root / a}' and '{root / b}' (only in {a}: {_few(only_a)}, "
            f"only in {b}: {_few(only_b)}): labels are the sorted folder names, so both splits need the same classes")


def check_cifar10(root: Path | str, download: bool) -> None:
    """torchvision's ``cifar-10-batches-py/`` with its seven batch files (nothing needed when downloading)."""
    if download:
        return
    folder = Path(root) / CIFAR10_FOLDER
    if not folder.is_dir():
        raise DataMissingError(f"cifar10 data not found at '{folder}': {CIFAR10_HOW}")
    missing = [f for f in CIFAR10_FILES if not (folder / f).is_file()]
    if len(missing) == len(CIFAR10_FILES):
        raise DataMissingError(f"cifar10 folder '{folder}' holds none of CIFAR-10's batch files: {CIFAR10_HOW}")
    if missing:
        raise DataMissingError(f"cifar10 data incomplete at '{folder}': missing {_few(missing)}; {CIFAR10_HOW}")


# dataset name -> check(root, download); every dataset of `robust_mim.data.DATASETS` has one
CHECKS: dict[str, Callable[[str, bool], None]] = {
    "digits": lambda root, download: None,  # bundled with scikit-learn
    "cifar10": check_cifar10,
    "imagefolder": lambda root, download: check_image_tree("imagefolder", root, ("train", "test"), IMAGEFOLDER_HOW),
    "imagenet": lambda root, download: check_image_tree("imagenet", root, ("train", "val"), IMAGENET_HOW),
    "cifar10-memory": check_cifar10,  # the same files, decoded once into <root>/.cache/
    "imagefolder-memory": lambda root, download: check_image_tree("imagefolder-memory", root, ("train", "test"),
                                                                  IMAGEFOLDER_HOW),
}


def check_dataset(name: str, root: str, download: bool = False) -> None:
    """Check that dataset ``name`` is complete under ``root`` before any work starts (lists folders only).

    Raises:
        ConfigError: ``name`` is not a known dataset.
        DataMissingError: a folder, split, class folder or file is missing, or the layout is wrong.
    """
    if name not in CHECKS:
        raise ConfigError(f"unknown dataset '{name}' (known: {', '.join(sorted(CHECKS))})")
    CHECKS[name](root, download)
