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
    with pytest.raises(ConfigError, match="known: cifar10, digits"):
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
