"""Paper 5 (DAT) commands: train-vq, finetune --vq (method dat), corruption-eval, and test-time Q with BPDA."""
from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from conftest import filled, vq_arch
from robust_mim.cli import main
from robust_mim.cli import common
from robust_mim.models.vq import load_vq, save_vq
from robust_mim.papers.dat.measures import (benchmark_files, corrupted_batches, corruption_error_rows,
                                            corruption_sanity_checks, error_summary, reconstruction_stats)
from robust_mim.corruptions import CORRUPTION_NAMES
from robust_mim.data import first_examples
from robust_mim.defenses import QuantizedInput, build_defense
from robust_mim.errors import CheckpointError, ConfigError
from robust_mim.io import save_weights
from robust_mim.models.vq import VQAutoencoder
from robust_mim.records import validate_record

TRAIN = {"batch_size": 256, "blr": 4e-3, "weight_decay": 0.0, "warmup_epochs": 0, "betas": [0.9, 0.99], "seed": 0}
VQ_RUN = {"id": "vq-tiny", "epochs": 2, **TRAIN, **vq_arch(downsample=4, codebook_size=16, codebook_dim=4, hidden=8),
          "eval_examples": 96, "recon_examples": 3}  # a dat.vq run as validate_config fills it


pytestmark = pytest.mark.usefixtures("one_thread")


def spec(run: dict, **extra) -> dict:
    return {"profile": "unit", "scale_note": "unit test", "seed": 0, "device": "cpu",
            "data": {"name": "digits", "root": "data", "image_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3},
            "model": {"arch": "vit_nano_patch4_16"}, "run": run, **extra}


def cli(command: str, s: dict, *args: str) -> int:
    return main([command, "--spec", json.dumps(s), "--threads", "1", *args])


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    """A tiny VQ autoencoder trained by the train-vq command: (folder, weights, record, figure)."""
    d = tmp_path_factory.mktemp("vq")
    paths = {"weights": d / "model.safetensors", "record": d / "vq.json", "figure": d / "recon.png"}
    torch.manual_seed(0)
    rc = cli("train-vq", spec(VQ_RUN), "--out", str(paths["weights"]), "--run-dir", str(d), "--record",
             str(paths["record"]), "--figure", str(paths["figure"]), "--log", str(d / "log.txt"))
    assert rc == 0, (d / "log.txt").read_text()
    return d, paths


def test_train_vq_writes_weights_record_and_figure(vq_run):
    d, paths = vq_run
    record = json.loads(paths["record"].read_text())
    validate_record(record)
    row = record["rows"][0]
    assert record["evaluation"] == "vq-reconstruction" and record["model_id"] == "vq-tiny"
    assert row["n_images"] == record["n_examples"] == VQ_RUN["eval_examples"]
    assert 0 < row["usage"] <= 1 and 1 <= row["perplexity"] <= VQ_RUN["codebook_size"]
    assert row["codes_used"] == round(row["usage"] * VQ_RUN["codebook_size"])
    assert math.isfinite(row["psnr"]) and row["psnr"] > 0
    assert {c["check"] for c in record["sanity_checks"]} == {"reconstruction_beats_mean_image", "codebook_not_collapsed"}
    assert len((d / "metrics.jsonl").read_text().splitlines()) == VQ_RUN["epochs"]
    # the PNG: recon_examples originals above their reconstructions, upscaled to >= 64 px per image
    width, height = Image.open(paths["figure"]).size
    assert height >= 2 * 64 and width >= VQ_RUN["recon_examples"] * 64


def test_saved_vq_reloads_and_reproduces_the_recorded_psnr(vq_run):
    _, paths = vq_run
    vq = load_vq(paths["weights"])
    assert not vq.training and vq.codebook_size == VQ_RUN["codebook_size"] and vq.downsample == VQ_RUN["downsample"]
    x, _ = first_examples(common.dataset(spec(VQ_RUN), "test"), VQ_RUN["eval_examples"])
    stats = reconstruction_stats(vq, x, 32)
    row = json.loads(paths["record"].read_text())["rows"][0]
    assert stats["psnr"] == pytest.approx(row["psnr"], abs=1e-4)
    assert stats["codes_used"] == row["codes_used"]


def test_training_the_vq_longer_improves_reconstruction(vq_run):
    """The recorded PSNR comes from training: an untrained autoencoder of the same shape reconstructs worse."""
    _, paths = vq_run
    torch.manual_seed(0)
    x, _ = first_examples(common.dataset(spec(VQ_RUN), "test"), VQ_RUN["eval_examples"])
    untrained = VQAutoencoder(**vq_arch(downsample=4, codebook_size=16, codebook_dim=4, hidden=8)).eval()
    with torch.no_grad():
        untrained(x[:32])  # k-means initialisation of the codebook, as the trained one had
    assert reconstruction_stats(load_vq(paths["weights"]), x, 32)["psnr"] > reconstruction_stats(untrained, x, 32)["psnr"]


def test_load_vq_rejects_weights_that_are_not_a_vq(tmp_path):
    path = tmp_path / "clf.safetensors"
    save_weights({"w": torch.zeros(2)}, path, {"kind": "classifier"})
    with pytest.raises(CheckpointError, match="not a VQ autoencoder"):
        load_vq(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vq(tmp_path / "missing.safetensors")


SOFT = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "label_smoothing": 0.1}


@pytest.mark.parametrize("targets", [{}, SOFT], ids=["labels", "mixup-cutmix-smoothing"])
def test_finetune_with_vq_trains_a_dat_model(vq_run, tmp_path, targets):
    """Hard labels, or the official DAT's MixUp + CutMix + label smoothing (soft targets through the engine)."""
    _, paths = vq_run
    run = {"id": "dat-tiny", "epochs": 1, **TRAIN, "method": filled("finetune_method", {"name": "dat", "eps": 0.1}),
           "vq": "vq-tiny", **targets}
    out = tmp_path / "clf.safetensors"
    rc = cli("finetune", spec(run), "--out", str(out), "--run-dir", str(tmp_path), "--vq", str(paths["weights"]),
             "--log", str(tmp_path / "log.txt"))
    assert rc == 0, (tmp_path / "log.txt").read_text()
    metrics = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"ce_clean", "ce_adv", "adv_acc", "delta_l2"} <= set(metrics)
    assert 0 < metrics["delta_l2"] <= 0.1 + 1e-6  # the L2 step at the quantized image stays in the ε-ball
    assert metrics["loss"] == pytest.approx(metrics["ce_clean"] + metrics["ce_adv"], rel=1e-4)
    model = common.load_classifier(spec(run), str(out), 10)
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 10)


def test_finetune_dat_without_vq_stops_with_one_line(tmp_path, capsys):
    run = {"id": "dat-novq", "epochs": 1, **TRAIN, "method": filled("finetune_method", {"name": "dat"})}
    rc = cli("finetune", spec(run), "--out", str(tmp_path / "w.safetensors"), "--run-dir", str(tmp_path))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "needs vq" in err and "\n" not in err


@pytest.fixture(scope="module")
def classifier_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clf") / "clf.safetensors"
    save_weights(common.build_classifier(spec({}), 10).state_dict(), path)
    return path


CORRUPTION = {"n_examples": 24, "severities": [1, 5], "seed": 3, "batch_size": 50, "cifar10c_root": None}


def test_corruption_eval_covers_every_cell_with_errors_in_range(classifier_weights, tmp_path):
    run = {"id": "m", "method": {"name": "standard"}, "papers": ["dat"], "epochs": 1}
    out = tmp_path / "corruption.json"
    rc = cli("corruption-eval", spec(run, dat={"corruption": CORRUPTION}), "--weights", str(classifier_weights),
             "--model-id", "m", "--out", str(out))
    assert rc == 0
    record = json.loads(out.read_text())
    validate_record(record)
    cells = {(r["corruption"], r["severity"]) for r in record["rows"]}
    assert cells == {(c, s) for c in CORRUPTION_NAMES for s in CORRUPTION["severities"]} and len(record["rows"]) == 30
    for r in record["rows"]:
        assert 0 <= r["error"] <= 1 and r["n_examples"] == 24
        assert r["error"] == pytest.approx(1 - r["n_correct"] / 24)
    assert 0 <= record["clean_error"] <= 1
    # generated corruptions: the unnormalised mean error only, never called mCE; no AlexNet normalisation
    assert "mCE" not in record and record["mCE_alexnet"] is None
    assert record["mean_corruption_error"] == pytest.approx(sum(record["error_by_corruption"].values()) / 15)
    assert record["mean_error"] == pytest.approx(sum(r["error"] for r in record["rows"]) / 30)
    assert record["params"]["severities"] == [1, 5] and record["params"]["quantized_input"] is False
    assert record["corruption_benchmark"].startswith("generated 16x16")
    subset = record["provenance"]["evaluation_subset"]  # digits' seeded test split: its first 24 of 359
    assert subset["rule"] == "first n" and subset["n"] == 24 and subset["of"] == 359


def test_corrupted_images_are_the_same_for_every_evaluation():
    """Each cell has its own seeded stream: the same seed gives the same images (so models see the same
    benchmark), another seed other noise."""
    x = torch.rand(6, 3, 16, 16)
    first = {(c, s): xc for c, s, xc, _ in corrupted_batches(x, [1, 5], seed=1)}
    again = {(c, s): xc for c, s, xc, _ in corrupted_batches(x, [1, 5], seed=1)}
    other = {(c, s): xc for c, s, xc, _ in corrupted_batches(x, [1, 5], seed=2)}
    assert set(first) == {(c, s) for c in CORRUPTION_NAMES for s in (1, 5)}
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first[("gaussian_noise", 5)], other[("gaussian_noise", 5)])
    assert not torch.equal(first[("gaussian_noise", 1)], first[("gaussian_noise", 5)])


def test_corruption_sanity_checks_flag_a_benchmark_easier_than_clean():
    rows = [{"corruption": c, "severity": s, "error": e} for c in CORRUPTION_NAMES for s, e in ((1, 0.5), (5, 0.1))]
    checks = {c["check"]: c["passed"] for c in corruption_sanity_checks(rows, clean_error=0.6, n=200)}
    assert checks == {"corruption_not_easier_than_clean": False, "error_not_falling_with_severity": False}
    rows = [{"corruption": c, "severity": s, "error": e} for c in CORRUPTION_NAMES for s, e in ((1, 0.2), (5, 0.6))]
    checks = {c["check"]: c["passed"] for c in corruption_sanity_checks(rows, clean_error=0.1, n=200)}
    assert all(checks.values())


def test_test_time_quantization_is_attacked_with_bpda(vq_run):
    """defense vq: forward classifies Q(x); the gradient w.r.t. x is the classifier's gradient at Q(x)."""
    _, paths = vq_run
    torch.manual_seed(0)
    vq = load_vq(paths["weights"])
    clf = common.build_classifier(spec({}), 10).eval()
    defended, randomized = build_defense(filled("defense", {"name": "vq"}), clf, vq)
    assert isinstance(defended, QuantizedInput) and not randomized
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    defended(x).logsumexp(1).sum().backward()
    q = vq.quantize_image(x.detach()).requires_grad_(True)
    clf(q).logsumexp(1).sum().backward()
    torch.testing.assert_close(x.grad, q.grad)
    torch.testing.assert_close(defended(x.detach()), clf(q.detach()))
    assert defended.embed(x.detach()).shape == clf.embed(x.detach()).shape
    with pytest.raises(ConfigError, match="needs a VQ autoencoder"):
        build_defense(filled("defense", {"name": "vq"}), clf, None)


def test_save_vq_keeps_the_architecture(tmp_path):
    arch = vq_arch(downsample=2, codebook_size=8, codebook_dim=4, hidden=8)
    vq = VQAutoencoder(**arch)
    save_vq(vq, arch, tmp_path / "v.safetensors", "h")
    again = load_vq(tmp_path / "v.safetensors")
    assert again.downsample == 2 and again.codebook_size == 8
    for (k, a), (_, b) in zip(vq.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)


def test_cifar10c_files_replace_the_generated_corruptions(tmp_path):
    """With a CIFAR-10-C folder, each cell uses the first n images of its severity block and their labels."""
    import numpy as np

    n_per_block, n = 6, 4
    labels = np.tile(np.array([0, 0, 1, 1, 1, 1], dtype=np.int64), 5)  # per block: first n → 2 of 4 are class 0
    labels[4 * n_per_block:] = 0  # severity 5: every label is class 0
    np.save(tmp_path / "labels.npy", labels)
    for name in CORRUPTION_NAMES:
        np.save(tmp_path / f"{name}.npy", np.zeros((5 * n_per_block, 32, 32, 3), dtype=np.uint8))
    always_zero = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    torch.nn.init.zeros_(always_zero[1].weight)
    with torch.no_grad():
        always_zero[1].bias.copy_(torch.arange(10, 0, -1).float())  # argmax = class 0
    x, y = torch.rand(n, 3, 32, 32), torch.full((n,), 7)  # ignored: the files' images and labels are used
    files = benchmark_files({"cifar10c_root": str(tmp_path)}, n, [])
    rows = corruption_error_rows(always_zero, x, y, [1, 5], files=files)
    assert {r["severity"]: r["error"] for r in rows if r["corruption"] == "fog"} == {1: 0.5, 5: 0.0}
    assert all(r["n_examples"] == n for r in rows) and len(rows) == 30


def test_imagenet_c_files_give_the_papers_alexnet_normalised_mce(tmp_path):
    """With ImageNet-C folders at severities 1-5 the record's summary holds the paper's mCE: each corruption's
    error (mean over severities) divided by AlexNet's, averaged; with fewer severities it holds none."""
    import numpy as np

    from robust_mim.corruption_benchmark import ALEXNET_ERRORS

    for name in CORRUPTION_NAMES:  # 2 images of class n01, 2 of n02 per folder; the model always says n01
        for s in range(1, 6):
            for wnid in ("n01", "n02"):
                (tmp_path / name / str(s) / wnid).mkdir(parents=True)
                for i in range(2):
                    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name / str(s) / wnid / f"{i}.png")
    always_zero = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    torch.nn.init.zeros_(always_zero[1].weight)
    with torch.no_grad():
        always_zero[1].bias.copy_(torch.tensor([1.0, 0.0]))
    files = benchmark_files({"imagenet_c_root": str(tmp_path)}, 2, ["n01", "n02"])  # class-stratified: 1 + 1
    x, y = torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)  # ignored
    rows = corruption_error_rows(always_zero, x, y, [1, 2, 3, 4, 5], files=files)
    assert len(rows) == 75 and all(r["error"] == 0.5 and r["n_examples"] == 2 for r in rows)
    summary = error_summary(rows, reports_alexnet=True)
    expected = sum(0.5 / ALEXNET_ERRORS[c] for c in CORRUPTION_NAMES) / 15
    assert summary["mCE_alexnet"] == pytest.approx(expected) and summary["mean_corruption_error"] == 0.5
    assert error_summary(rows, reports_alexnet=False)["mCE_alexnet"] is None
