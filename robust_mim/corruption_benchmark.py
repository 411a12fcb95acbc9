"""The corruption benchmark of Hendrycks & Dietterich (ICLR 2019): its published files and its error measures.

- `load_cifar10c` reads one corruption × severity block of the CIFAR-10-C ``.npy`` files;
  `load_imagenet_c` the evaluation subset of one ImageNet-C folder (the generator of the
  corruptions themselves is `robust_mim.corruptions`).
- Error measures of a table ``{corruption: {severity: top-1 error}}``:
  `unnormalised_corruption_error` (mean over corruptions of the error averaged over
  severities), `mean_corruption_error` (the paper's mCE: each corruption's summed errors
  divided by a reference model's, averaged over corruptions) and `alexnet_mce` (mCE with
  AlexNet's published ImageNet-C errors as the reference — the number ImageNet-C papers,
  DAT among them, report; only defined for ImageNet-C errors at severities 1–5).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from robust_mim.corruptions import CORRUPTION_NAMES, _check_severity
from robust_mim.errors import ConfigError, DataMissingError

# Also shipped in the CIFAR-10-C archive (the "extra" corruptions); loadable only.
EXTRA_CIFAR10C_NAMES = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CIFAR10C_URL = "https://zenodo.org/record/2535967"
IMAGENET_C_URL = "https://zenodo.org/record/2235448"
SEVERITIES = (1, 2, 3, 4, 5)

# AlexNet's top-1 error on ImageNet-C per corruption, averaged over severities 1-5 (fractions): the
# normalisers of the mCE of Hendrycks & Dietterich (ICLR 2019), from the spreadsheet that
# hendrycks/robustness's README links under "Calculating the mCE"; the same constants are hard-coded in the
# evaluation of DAT's authors (alibaba/easyrobust, easyrobust/benchmarks/ood/imagenet_c.py, get_ce_alexnet).
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360,
    "snow": 0.866816, "frost": 0.826572, "fog": 0.819324, "brightness": 0.564592,
    "contrast": 0.853204, "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}


# ----------------------------------------------------------------------------- CIFAR-10-C files

def load_cifar10c(root: str | Path, name: str, severity: int) -> tuple[Tensor, Tensor]:
    """Load one corruption × severity block of the precomputed CIFAR-10-C arrays.

    Layout (as distributed on Zenodo, record 2535967): ``<root>/<name>.npy`` holds
    uint8 [5·n, 32, 32, 3] (n = 10000, severities 1..5 in order) and
    ``<root>/labels.npy`` the matching [5·n] labels.

    Args:
        root: folder with the .npy files. name: a corruption name (15 + 4 extra).
        severity: 1..5.
    Returns:
        x: float32 [n, 3, 32, 32] in [0, 1]; y: int64 [n].
    """
    if name not in CORRUPTION_NAMES + EXTRA_CIFAR10C_NAMES:
        raise ConfigError(f"unknown CIFAR-10-C corruption '{name}' (known: {', '.join(CORRUPTION_NAMES)})")
    _check_severity(severity)
    images, labels = _load_npy(Path(root) / f"{name}.npy"), _load_npy(Path(root) / "labels.npy")
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) % 5 or len(labels) != len(images):
        raise DataMissingError(f"{Path(root) / name}.npy has shape {images.shape} (labels {labels.shape}); "
                               f"expected [5*n, H, W, 3] with 5*n labels")
    n = len(images) // 5
    block = slice((severity - 1) * n, severity * n)
    x = torch.from_numpy(np.asarray(images[block], dtype=np.float32) / 255).permute(0, 3, 1, 2)
    y = np.array(labels[block], dtype=np.int64)  # a copy: the .npy file may be memory-mapped (read-only)
    return x.contiguous(), torch.from_numpy(y)


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataMissingError(f"CIFAR-10-C file {path} not found; download CIFAR-10-C from "
                               f"{CIFAR10C_URL} and unpack the .npy files into {path.parent}")
    return np.load(path, mmap_mode="r")


# ----------------------------------------------------------------------------- ImageNet-C folders

def load_imagenet_c(root: str | Path, name: str, severity: int, n: int | None,
                    classes: list[str]) -> tuple[Tensor, Tensor]:
    """The evaluation subset of one ImageNet-C corruption × severity folder.

    Layout (as distributed on Zenodo, record 2235448): ``<root>/<name>/<severity>/<wnid>/*.JPEG``, the
    50,000 validation images already resized and centre-cropped to 224×224. The images are read as they
    are (no resize), and the ``n`` taken are `robust_mim.data.evaluation_indices` of the folder: for the
    class-sorted folder the same class-stratified subset as the clean validation split, file for file.

    Args:
        root: the ImageNet-C folder. name: one of `CORRUPTION_NAMES`. severity: 1..5.
        n: images per folder (None: all). classes: the clean split's class folders (wnids), which must
            match the corruption folder's so that label k means the same class.
    Returns:
        x: float32 [n, 3, 224, 224] in [0, 1]; y: int64 [n].
    """
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    from robust_mim.data import first_examples, load_rgb
    from robust_mim.data_check import check_image_split

    if name not in CORRUPTION_NAMES:
        raise ConfigError(f"unknown ImageNet-C corruption '{name}' (known: {', '.join(CORRUPTION_NAMES)})")
    _check_severity(severity)
    path = Path(root) / name / str(severity)
    found = check_image_split(path, "ImageNet-C", f"download ImageNet-C from {IMAGENET_C_URL} and unpack it "
                                                  f"into {root} (<corruption>/<severity>/<wnid>/*.JPEG)")
    if found != list(classes):
        raise DataMissingError(f"ImageNet-C folder {path} has {len(found)} class folders that differ from the clean "
                               f"split's {len(classes)}: the labels would not match; unpack the full ImageNet-C")
    return first_examples(ImageFolder(str(path), transform=T.ToTensor(), loader=load_rgb), n)


# ----------------------------------------------------------------------------- error measures

ErrorTable = Mapping[str, Mapping[int, float]]


def _as_table(table: object) -> dict[str, dict[int, float]]:
    """Normalise {corruption: {severity: error}} (dict or DataFrame with corruption columns)."""
    if hasattr(table, "to_dict") and not isinstance(table, Mapping):
        table = table.to_dict()  # pandas: {column: {index: value}}
    if not isinstance(table, Mapping) or not table:
        raise ConfigError("error table must be a non-empty mapping {corruption: {severity: error}}")
    return {str(c): {int(s): float(e) for s, e in per.items()} for c, per in table.items()}


def corruption_errors(error_table: ErrorTable, baseline_table: ErrorTable | None = None) -> dict[str, float]:
    """Corruption error CE_c = Σ_s E_{s,c} (÷ Σ_s E^base_{s,c} when a baseline is given).

    Args:
        error_table: {corruption: {severity: error rate}} (a DataFrame with one column
            per corruption and severities as index works too).
        baseline_table: the same for the normalising model (AlexNet in Hendrycks &
            Dietterich); must cover the same corruptions and severities.
    Returns:
        {corruption: CE_c}.
    """
    errors = _as_table(error_table)
    base = None if baseline_table is None else _as_table(baseline_table)
    out = {}
    for name, per in errors.items():
        total = sum(per.values())
        if base is not None:
            if set(base.get(name, {})) != set(per):
                raise ConfigError(f"baseline errors for '{name}' must cover severities {sorted(per)}")
            denom = sum(base[name].values())
            if denom <= 0:
                raise ConfigError(f"baseline errors for '{name}' sum to {denom}; cannot normalise")
            total /= denom
        out[name] = total
    return out


def unnormalised_corruption_error(errors: ErrorTable) -> float:
    """Mean over corruptions of the error averaged over severities, mean_c (1/|S_c|) Σ_s E_{s,c}: a plain
    error rate (not the paper's mCE, which divides by a reference model's errors)."""
    table = _as_table(errors)
    return float(np.mean([sum(per.values()) / len(per) for per in table.values()]))


def mean_corruption_error(errors: ErrorTable, baseline_errors: ErrorTable) -> float:
    """mCE of Hendrycks & Dietterich (2019): mean_c Σ_s E_{s,c} / Σ_s E^base_{s,c}, as a fraction (1 = as
    corruption-robust as the baseline). The paper's baseline is AlexNet (`alexnet_mce`)."""
    return float(np.mean(list(corruption_errors(errors, baseline_errors).values())))


def alexnet_mce(errors: ErrorTable) -> float:
    """The mCE that ImageNet-C papers report (a fraction; DAT's 31.40 % is 0.3140): every one of the 15
    corruptions at severities 1–5, each corruption's mean error divided by AlexNet's (`ALEXNET_ERRORS`).

    Raises:
        ConfigError: a corruption or severity is missing (AlexNet's errors average all five severities).
    """
    table = _as_table(errors)
    off = [c for c in CORRUPTION_NAMES if set(table.get(c, {})) != set(SEVERITIES)] + sorted(
        set(table) - set(CORRUPTION_NAMES))
    if off:
        raise ConfigError(f"AlexNet-normalised mCE needs the 15 ImageNet-C corruptions at severities 1-5; "
                          f"missing or extra: {', '.join(off)}")
    alexnet = {c: {s: ALEXNET_ERRORS[c] for s in SEVERITIES} for c in CORRUPTION_NAMES}
    return mean_corruption_error(table, alexnet)
