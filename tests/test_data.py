import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from robust_mim.data import epoch_batches, first_examples, load_dataset, num_classes, random_crop_flip
from robust_mim.errors import ConfigError, DataMissingError


def test_digits_are_images_in_unit_range_with_a_fixed_split(digits16):
    train, test = digits16
    x, y = train.tensors
    assert x.shape[1:] == (3, 16, 16) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    assert len(train) + len(test) == 1797 and len(test) == 359
    again = load_dataset("digits", "data", "test", 16)
    assert torch.equal(again.tensors[0], test.tensors[0])
    train_rows = {tuple(r.tolist()) for r in train.tensors[0][:, 0].flatten(1)[:, ::7]}
    assert not any(tuple(r.tolist()) in train_rows for r in test.tensors[0][:20, 0].flatten(1)[:, ::7])
    assert num_classes(train) == 10


def _write_tree(root, classes=("cat", "dog"), per_class=3, size=12):
    for split in ("train", "test"):
        for i, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for k in range(per_class):
                Image.new("RGB", (size, size), (40 * i + k, 100, 200)).save(root / split / c / f"{k}.png")


def test_imagefolder_reads_a_train_test_tree(tmp_path):
    _write_tree(tmp_path)
    ds = load_dataset("imagefolder", str(tmp_path), "test", 8)
    x, y = first_examples(ds, None)
    assert x.shape == (6, 3, 8, 8) and 0 <= x.min() and x.max() <= 1
    assert y.tolist() == [0, 0, 0, 1, 1, 1] and num_classes(ds) == 2


def test_a_class_sorted_folder_is_evaluated_on_a_class_stratified_subset(tmp_path):
    """The first n of an ImageFolder (sorted by class) would hold one class; evaluations take every class."""
    from robust_mim.data import evaluation_indices

    _write_tree(tmp_path)  # test/: 3 images of class 0, then 3 of class 1
    ds = load_dataset("imagefolder", str(tmp_path), "test", 8)
    idx = evaluation_indices(ds, 4)
    assert len(idx) == 4 and idx == sorted(idx) and idx == evaluation_indices(ds, 4)  # deterministic
    _, y = first_examples(ds, 4)
    assert sorted(y.tolist()) == [0, 0, 1, 1]
    assert evaluation_indices(ds, None) == list(range(6))


def test_records_say_which_evaluation_subset_they_measured(tmp_path, digits16):
    """provenance.evaluation_subset: how the examples were chosen (first n / class-stratified with its seed /
    all) and a hash of exactly which indices — the same indices the evaluations take."""
    import hashlib

    from robust_mim.data import evaluation_indices, evaluation_subset
    from robust_mim.records import provenance

    _write_tree(tmp_path)  # class-sorted: 3 images of class 0, then 3 of class 1
    ds = load_dataset("imagefolder", str(tmp_path), "test", 8)
    sub = evaluation_subset(ds, 4)
    digest = hashlib.sha256(",".join(map(str, evaluation_indices(ds, 4))).encode()).hexdigest()[:12]
    assert sub == {"rule": "class-stratified", "n": 4, "of": 6, "seed": 0, "indices_sha256": digest}
    assert evaluation_subset(ds, None)["rule"] == evaluation_subset(ds, 6)["rule"] == "all"
    first = evaluation_subset(digits16[1], 10)
    assert first["rule"] == "first n" and first["n"] == 10 and "seed" not in first
    assert first["indices_sha256"] == hashlib.sha256(",".join(map(str, range(10))).encode()).hexdigest()[:12]
    assert provenance({}, 0, "cpu", 0.0, sub)["evaluation_subset"] == sub
    assert "evaluation_subset" not in provenance({}, 0, "cpu", 0.0)


@pytest.mark.parametrize("name", ["imagefolder", "imagenet", "cifar10"])
def test_missing_data_gives_one_clear_line_naming_the_path(tmp_path, name):
    with pytest.raises(DataMissingError) as err:
        load_dataset(name, str(tmp_path / "nowhere"), "train", 32)
    msg = str(err.value)
    assert "nowhere" in msg and "\n" not in msg and len(msg) < 300


def test_unknown_dataset_and_split_are_config_errors():
    with pytest.raises(ConfigError, match="known: cifar10, cifar10-memory, digits"):
        load_dataset("mnist", "data", "train", 16)
    with pytest.raises(ConfigError, match="split"):
        load_dataset("digits", "data", "val", 16)


def test_epoch_order_depends_only_on_seed_and_epoch(digits16):
    train, _ = digits16
    a = [y for _, y in epoch_batches(train, 64, seed=1, epoch=3)]
    b = [y for _, y in epoch_batches(train, 64, seed=1, epoch=3)]
    c = [y for _, y in epoch_batches(train, 64, seed=1, epoch=4)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))
    assert len(a) == len(train) // 64


def test_random_crop_flip_translates_within_padding():
    x = torch.zeros(64, 3, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0
    out = random_crop_flip(x, padding=1, flip=True)
    assert out.shape == x.shape
    assert torch.all(out.sum(dim=(1, 2, 3)) == 12)  # the 2x2 square never leaves the image
    assert len({tuple(o[0].nonzero()[0].tolist()) for o in out}) > 1


# ---- in-memory datasets (cifar10-memory, imagefolder-memory): same pixels as the PIL path, cached once ----

def _write_varied_tree(root, classes=("cat", "dog", "emu"), per_class=(3, 4, 2), size=12):
    """PNGs and JPEGs of random pixels (JPEG: lossy, so decoding matters) in <root>/<split>/<class>/."""
    rng = np.random.RandomState(0)
    for split in ("train", "test"):
        for c, n in zip(classes, per_class):
            (root / split / c).mkdir(parents=True)
            for k in range(n):
                pixels = rng.randint(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{k}.{'jpg' if k % 2 else 'png'}")
    return root


def _write_fake_cifar(root, per_batch=3, n_test=5):
    """A torchvision-layout cifar-10-batches-py/ of a few random 32x32 images per batch file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(1)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {"data": rng.randint(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.randint(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    return root


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    """Fake batch files pass torchvision's md5 checks (the real files' checksums cannot be faked)."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    return _write_fake_cifar(tmp_path / "cifar")


def _assert_same_as_pil_path(memory, pil):
    assert memory.images.dtype == torch.uint8 and memory.labels.dtype == torch.int64
    assert memory.classes == pil.classes and memory.targets == list(pil.targets)
    x_pil, y_pil = first_examples(pil, None)
    x_mem, y_mem = first_examples(memory, None)
    assert x_mem.dtype == torch.float32 and torch.equal(x_mem, x_pil) and torch.equal(y_mem, y_pil)
    assert torch.equal(memory.images.float() / 255, x_pil)  # the cached uint8 pixels are exactly ToTensor's
    for (xa, ya), (xb, yb) in zip(epoch_batches(memory, 2, seed=3, epoch=1), epoch_batches(pil, 2, seed=3, epoch=1)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("size", [12, 8])  # native size, and resized as the PIL path resizes
def test_imagefolder_memory_has_the_pil_paths_pixels_labels_and_order(tmp_path, size):
    root = str(_write_varied_tree(tmp_path / "tree"))
    for split in ("train", "test"):
        memory = load_dataset("imagefolder-memory", root, split, size)
        assert memory.images.shape == (9, 3, size, size) and memory.labels.tolist() == [0] * 3 + [1] * 4 + [2] * 2
        _assert_same_as_pil_path(memory, load_dataset("imagefolder", root, split, size))
    from robust_mim.data import evaluation_indices  # the class-sorted folder keeps its stratified subset
    assert evaluation_indices(memory, 4) == evaluation_indices(load_dataset("imagefolder", root, "test", size), 4)


@pytest.mark.parametrize("size", [32, 16])
def test_cifar10_memory_has_the_torchvision_datasets_pixels_labels_and_order(fake_cifar, size):
    for split, n in (("train", 15), ("test", 5)):
        memory = load_dataset("cifar10-memory", str(fake_cifar), split, size)
        assert memory.images.shape == (n, 3, size, size) and num_classes(memory) == 10
        _assert_same_as_pil_path(memory, load_dataset("cifar10", str(fake_cifar), split, size))


def test_the_decoded_split_is_cached_and_reused_until_its_source_changes(tmp_path, monkeypatch):
    from robust_mim import data

    root = _write_varied_tree(tmp_path / "tree")
    first = load_dataset("imagefolder-memory", str(root), "train", 12)
    cached = list((root / ".cache").glob("imagefolder-train-12px-*.safetensors"))
    assert len(cached) == 1
    calls = []
    decode = data._decode_image_folder
    monkeypatch.setattr(data, "_decode_image_folder", lambda *a: calls.append(a) or decode(*a))
    again = load_dataset("imagefolder-memory", str(root), "train", 12)
    assert calls == [] and torch.equal(again.images, first.images) and again.classes == first.classes
    Image.new("RGB", (12, 12), (1, 2, 3)).save(root / "train" / "dog" / "new.png")  # the source changed
    grown = load_dataset("imagefolder-memory", str(root), "train", 12)
    assert len(calls) == 1 and len(grown) == len(first) + 1
    assert [p.name for p in (root / ".cache").glob("imagefolder-train-*")] != [cached[0].name]  # replaced
    assert len(list((root / ".cache").glob("imagefolder-train-*"))) == 1


def _flip_byte(raw: bytes, path, tensor: str) -> bytes:
    """``raw`` with the first byte of ``tensor``'s data inverted (safetensors: 8-byte header size, JSON header)."""
    import json
    import struct

    (n,) = struct.unpack("<Q", raw[:8])
    at = 8 + n + json.loads(raw[8:8 + n])[tensor]["data_offsets"][0]
    return raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped_pixel", "flipped_label"])
def test_a_corrupt_cache_is_decoded_again_and_replaced(tmp_path, damage):
    root = _write_varied_tree(tmp_path / "tree")
    good = load_dataset("imagefolder-memory", str(root), "test", 12)
    (path,) = (root / ".cache").glob("imagefolder-test-*.safetensors")
    raw = path.read_bytes()
    broken = {"garbage": b"not a safetensors file", "truncated": raw[: len(raw) // 2],
              "flipped_pixel": _flip_byte(raw, path, "images"),
              "flipped_label": _flip_byte(raw, path, "labels")}[damage]
    path.write_bytes(broken)
    again = load_dataset("imagefolder-memory", str(root), "test", 12)
    assert torch.equal(again.images, good.images) and torch.equal(again.labels, good.labels)
    assert path.read_bytes() == raw  # rewritten intact


def test_an_unwritable_cache_only_warns(tmp_path, monkeypatch):
    from robust_mim import io
    from robust_mim.io import WriteFailed

    def refuse(*args, **kwargs):
        raise WriteFailed("cannot write: read-only file system")

    monkeypatch.setattr(io, "save_weights", refuse)
    root = _write_varied_tree(tmp_path / "tree")
    with pytest.warns(UserWarning, match="cannot cache the decoded split"):
        ds = load_dataset("imagefolder-memory", str(root), "test", 12)
    assert len(ds) == 9


def test_training_batches_of_an_in_memory_split_never_touch_single_images(tmp_path, monkeypatch):
    from robust_mim.data import ImageTensors

    ds = load_dataset("imagefolder-memory", str(_write_varied_tree(tmp_path / "tree")), "train", 12)
    monkeypatch.setattr(ImageTensors, "__getitem__", lambda self, i: pytest.fail("per-image access"))
    batches = list(epoch_batches(ds, 4, seed=0, epoch=0))
    assert len(batches) == 2 and all(x.shape == (4, 3, 12, 12) and x.dtype == torch.float32 for x, _ in batches)
    assert first_examples(ds, 3)[0].shape == (3, 3, 12, 12)


@pytest.mark.parametrize("name", ["imagefolder-memory", "cifar10-memory"])
def test_missing_in_memory_data_is_one_line_before_any_decoding(tmp_path, name):
    from robust_mim.data import check_dataset

    for call in (lambda: check_dataset(name, str(tmp_path / "nowhere")),
                 lambda: load_dataset(name, str(tmp_path / "nowhere"), "train", 32)):
        with pytest.raises(DataMissingError) as err:
            call()
        msg = str(err.value)
        assert "nowhere" in msg and "\n" not in msg and len(msg) < 300
    assert not (tmp_path / "nowhere").exists()
