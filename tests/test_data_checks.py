"""Bad data stops before any work with one line naming the path: missing or mis-laid-out splits (library,
CLI and `snakemake -n`), an empty CIFAR-10 folder, and corrupt image files met while training or evaluating."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ENV, REPO
from robust_mim.data import DATASETS, check_dataset, first_examples, load_dataset
from robust_mim.data_check import CHECKS, CIFAR10_FILES
from robust_mim.errors import CorruptDataError, DataMissingError


def write_tree(root, splits=("train", "test"), classes=("cat", "dog"), per_class=3, per_split=None):
    """Tiny 12x12 PNGs in ``root/<split>/<class>/<k>.png``; ``per_split`` gives a split its own classes."""
    for split in splits:
        for i, c in enumerate((per_split or {}).get(split, classes)):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                Image.new("RGB", (12, 12), (40 * i + k, 100, 200)).save(root / split / c / f"{k}.png")
    return root


def flatten(split_dir):
    """Move every image of a split out of its class folders (the raw ImageNet val/ layout)."""
    for p in list(split_dir.glob("*/*.png")):
        shutil.move(str(p), split_dir / f"{p.parent.name}_{p.name}")
    for d in [d for d in split_dir.iterdir() if d.is_dir()]:
        d.rmdir()


def _missing_test(root):
    write_tree(root, splits=("train",))
    return "imagefolder", "split 'test' not found"


def _flat_train(root):
    flatten(write_tree(root) / "train")
    return "imagefolder", "no class folders (its 6 images sit directly in it)"


def _classes_differ(root):
    write_tree(root, per_split={"train": ("cat", "dog"), "test": ("bird", "cat")})
    return "imagefolder", "only in train: [dog], only in test: [bird]"


def _empty_split(root):
    for p in (write_tree(root) / "test").glob("*/*.png"):
        p.unlink()
    return "imagefolder", "holds no images"


def _one_empty_class(root):
    for p in (write_tree(root) / "train" / "dog").glob("*.png"):
        p.unlink()
    return "imagefolder", "class folders without images [dog]"


def _imagenet_missing_val(root):
    write_tree(root, splits=("train",))
    return "imagenet", "split 'val' not found"


def _imagenet_flat_val(root):
    flatten(write_tree(root, splits=("train", "val")) / "val")
    return "imagenet", "sort the flat val/ into wnid folders"


def _empty_cifar(root):
    (root / "cifar-10-batches-py").mkdir(parents=True)
    return "cifar10", "holds none of CIFAR-10's batch files"


def _partial_cifar(root):
    (root / "cifar-10-batches-py").mkdir(parents=True)
    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"x")
    return "cifar10", "missing [batches.meta, data_batch_2"


BAD_DATA = [_missing_test, _flat_train, _classes_differ, _empty_split, _one_empty_class, _imagenet_missing_val,
            _imagenet_flat_val, _empty_cifar, _partial_cifar]


def one_line(msg: str) -> str:
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


@pytest.mark.parametrize("make", BAD_DATA, ids=lambda f: f.__name__.strip("_"))
def test_check_dataset_names_the_path_and_the_problem_in_one_line(tmp_path, make):
    name, says = make(tmp_path / "data")
    with pytest.raises(DataMissingError) as err:
        check_dataset(name, str(tmp_path / "data"))
    assert str(tmp_path / "data") in one_line(str(err.value)) and says in str(err.value)


@pytest.mark.parametrize("make", [_flat_train, _one_empty_class, _imagenet_flat_val, _empty_cifar],
                         ids=lambda f: f.__name__.strip("_"))
def test_load_dataset_of_a_mislaid_split_is_one_line_not_a_torchvision_traceback(tmp_path, make):
    name, says = make(tmp_path / "data")
    split = "test" if make is _imagenet_flat_val else "train"
    with pytest.raises(DataMissingError, match=r"\(its 6 images|without images|holds none|no class folders"):
        load_dataset(name, str(tmp_path / "data"), split, 8)


def test_complete_data_passes_and_digits_or_a_cifar_download_need_nothing(tmp_path):
    check_dataset("imagefolder", str(write_tree(tmp_path / "tree")))
    check_dataset("digits", str(tmp_path / "nowhere"))
    check_dataset("cifar10", str(tmp_path / "nowhere"), download=True)
    cifar = tmp_path / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for f in CIFAR10_FILES:
        (cifar / f).write_bytes(b"x")
    check_dataset("cifar10", str(tmp_path / "cifar"))
    assert set(CHECKS) == set(DATASETS.names())  # every registered dataset has a check


def test_cifar_batches_that_fail_the_checksum_are_one_line(tmp_path):
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    for f in CIFAR10_FILES:
        (cifar / f).write_bytes(b"garbage")
    with pytest.raises(CorruptDataError, match="md5"):
        load_dataset("cifar10", str(tmp_path), "train", 8)


def _spec(root, workers: int = 0) -> dict:
    return {"profile": "unit", "scale_note": "unit test", "seed": 0, "device": "cpu",
            "data": {"name": "imagefolder", "root": str(root), "image_size": 16, "download": False,
                     "mean": [0.5] * 3, "std": [0.5] * 3, "num_workers": workers},
            "model": {"arch": "vit_nano_patch4_16"},
            "run": {"id": "x", "epochs": 1, "batch_size": 6, "blr": 1e-3, "weight_decay": 0.0, "warmup_epochs": 0,
                    "method": {"name": "standard"}}}


def finetune(tmp_path, spec: dict) -> subprocess.CompletedProcess:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "robust_mim.cli", "finetune", "--spec", json.dumps(spec), "--threads", "1",
           "--out", str(run_dir / "model.safetensors"), "--run-dir", str(run_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**ENV, "PYTHONPATH": str(REPO)}, timeout=300)


def test_cli_stops_before_training_when_the_test_split_is_missing(tmp_path):
    """Today's failure mode: fine-tuning ran to the end, and only the attack job found test/ missing."""
    write_tree(tmp_path / "data", splits=("train",))
    run = finetune(tmp_path, _spec(tmp_path / "data"))
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert run.stderr.startswith("robust_mim: error: imagefolder split 'test' not found")
    assert str(tmp_path / "data" / "test") in run.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()


def _png_bytes(size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.RandomState(0).rand(size, size, 3) * 255).astype("uint8")).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("bad", [b"not an image at all", _png_bytes()[:400]], ids=["garbage", "truncated"])
def test_a_corrupt_image_is_one_line_naming_the_file(tmp_path, bad):
    write_tree(tmp_path)
    (tmp_path / "test" / "dog" / "1.png").write_bytes(bad)
    with pytest.raises(CorruptDataError) as err:
        first_examples(load_dataset("imagefolder", str(tmp_path), "test", 8), None)
    assert str(tmp_path / "test" / "dog" / "1.png") in one_line(str(err.value))


def test_cli_training_on_a_corrupt_image_exits_2_with_one_line(tmp_path):
    """Read by a DataLoader worker, whose error reaches the main process with the worker's traceback."""
    write_tree(tmp_path / "data")
    (tmp_path / "data" / "train" / "dog" / "0.png").write_bytes(b"garbage")
    run = finetune(tmp_path, _spec(tmp_path / "data", workers=2))
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().splitlines() == [
        f"robust_mim: error: cannot decode image '{tmp_path / 'data' / 'train' / 'dog' / '0.png'}' "
        "(not an image PIL can identify): replace or delete the file"]


@pytest.mark.parametrize("make", [_missing_test, _empty_cifar], ids=["missing-test-split", "empty-cifar-folder"])
def test_a_dry_run_stops_with_one_line_before_planning_jobs(tmp_path, make):
    name, says = make(tmp_path / "data")
    profile = tmp_path / "profile.yaml"
    profile.write_text(json.dumps({"data": {"name": name, "root": str(tmp_path / "data")}}))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path / "work"),
           "--configfile", str(profile), "-n", "all"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode != 0
    lines = [s for s in (run.stdout + run.stderr).splitlines() if s.startswith("robust_mim:")]
    assert len(lines) == 1 and str(tmp_path / "data") in lines[0] and says in lines[0], run.stderr[-2000:]
    assert "Job stats" not in run.stdout + run.stderr
