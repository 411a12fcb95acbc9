"""Weights given in the wrong place (MAE weights as a classifier and the reverse, a classifier as --init, a
checkpoint of another architecture or number of classes) are one CheckpointError line that says what the
file holds and what to pass instead, through the library loaders and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ENV, REPO, vq_arch
from robust_mim.checkpoints import weights_kind
from robust_mim.cli import common
from robust_mim.models.vq import load_vq
from robust_mim.errors import CheckpointError
from robust_mim.io import save_weights
from robust_mim.models.vq import VQAutoencoder
from robust_mim.models.resnet import build_backbone_classifier

DATA = {"name": "digits", "root": "data", "image_size": 16, "download": False, "mean": [0.5] * 3, "std": [0.5] * 3}


def spec(arch: str = "vit_nano_patch4_16", **run) -> dict:
    return {"profile": "unit", "scale_note": "unit test", "seed": 0, "device": "cpu", "data": DATA,
            "model": {"arch": arch, "drop_path": 0.0},
            "run": {"id": "x", "epochs": 1, "batch_size": 512, "blr": 1e-3, "weight_decay": 0.0, "warmup_epochs": 0,
                    "method": {"name": "gaussian", "sigma": 0.25}, "papers": ["dmae"], "init": None, **run}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Weights of every kind the commands write, for the nano ViT and (``*_micro``) the micro ViT."""
    d = tmp_path_factory.mktemp("weights")
    nano, micro = spec(), spec("vit_micro_patch4_16")
    states = {
        "mae": common.build_mae(nano).state_dict(),
        "classifier": common.build_classifier(nano, 10).state_dict(),
        "classifier_2": common.build_classifier(nano, 2).state_dict(),
        "classifier_micro": common.build_classifier(micro, 10).state_dict(),
        "mae_micro": common.build_mae(micro).state_dict(),
        "vq": VQAutoencoder(**vq_arch()).state_dict(),
    }
    states["encoder"] = {k: v for k, v in states["mae"].items() if k.startswith("encoder.")}
    for name, state in states.items():
        save_weights(state, d / f"{name}.safetensors")
    return {name: str(d / f"{name}.safetensors") for name in states}


def test_the_kind_of_every_file_the_commands_write_is_recognised_from_its_keys(files):
    from robust_mim.io import load_weights

    kinds = {name: weights_kind(load_weights(path)) for name, path in files.items()}
    assert kinds == {"mae": "mae", "classifier": "classifier", "classifier_2": "classifier",
                     "classifier_micro": "classifier", "mae_micro": "mae", "vq": "vq", "encoder": "encoder"}
    assert weights_kind(build_backbone_classifier("resnet18_w8", 10, 8, [0.5] * 3, [0.5] * 3).state_dict()) == "classifier"


@pytest.mark.parametrize("given, says", [
    ("mae", "holds MAE pretraining weights (decoder keys), not a classifier; pass results/<profile>/finetune/"),
    ("encoder", "holds a bare pretrained encoder (encoder.* keys only), not a classifier"),
    ("vq", "holds a VQ autoencoder (quantizer keys), not a classifier"),
    ("classifier_micro", "holds a classifier of another architecture than the configured model.arch "
                         "vit_nano_patch4_16 (file ViT (width 64, 4 blocks, 17 tokens) vs model ViT (width 32"),
    ("classifier_2", "is a classifier over 2 classes, but the data has 10"),
], ids=["mae", "encoder", "vq", "classifier_micro", "classifier_2"])
def test_load_classifier_says_what_the_file_holds(files, given, says):
    with pytest.raises(CheckpointError) as err:
        common.load_classifier(spec(), files[given], 10)
    msg = str(err.value)
    assert msg.startswith(f"'{files[given]}' ") and says in msg and "\n" not in msg


@pytest.mark.parametrize("given, says", [
    ("classifier", "holds classifier weights (backbone.* and head.* keys), not an MAE; pass results/<profile>/pretrain/"),
    ("mae_micro", "holds an MAE of another architecture than the configured model.arch vit_nano_patch4_16"),
], ids=["classifier", "mae_micro"])
def test_load_mae_says_what_the_file_holds(files, given, says):
    with pytest.raises(CheckpointError, match="^'") as err:
        common.load_mae(spec(), files[given])
    assert says in str(err.value) and "\n" not in str(err.value)


def test_good_files_still_load(files):
    assert not common.load_classifier(spec(), files["classifier"], 10).training
    assert not common.load_mae(spec(), files["mae"]).training


def test_load_vq_names_mae_weights_given_as_a_vq(files):
    with pytest.raises(CheckpointError, match="holds MAE pretraining weights .*not a VQ autoencoder"):
        load_vq(files["mae"])


def _finetune(tmp_path, flag: str, weights: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "robust_mim.cli", "finetune", "--spec", json.dumps(spec()), "--threads", "1",
           "--out", str(tmp_path / "w.safetensors"), "--run-dir", str(tmp_path), flag, weights]
    return subprocess.run(cmd, capture_output=True, text=True, env={**ENV, "PYTHONPATH": str(REPO)}, timeout=300)


@pytest.mark.parametrize("flag, given, says", [
    ("--init", "classifier", "holds classifier weights (backbone.* and head.* keys), not a pretrained encoder"),
    ("--init", "mae_micro", "does not match the classifier backbone (file ViT (width 64, 4 blocks"),
    ("--denoiser", "classifier", "not an MAE"),
], ids=["init-classifier", "init-other-arch-mae", "denoiser-classifier"])
def test_finetune_cli_stops_with_one_line_before_training(tmp_path, files, flag, given, says):
    run = _finetune(tmp_path, flag, files[given])
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert run.stderr.startswith(f"robust_mim: error: '{files[given]}' ") and says in run.stderr
    assert not (tmp_path / "w.safetensors").exists()


def test_certify_cli_given_mae_weights_exits_2_with_one_line(tmp_path, files):
    """Today: a 20-line RuntimeError traceback listing the decoder keys."""
    s = {**spec(), "dmae": {"sigmas": [0.25], "n0": 2, "n": 4, "alpha": 0.001, "n_examples": 2, "batch_size": 8,
                            "radii": [0.0], "attack_examples": 1, "attack_steps": 1, "attack_noise_samples": 1,
                            "attack_eot_samples": 1, "attack_factors": [1.0]}}
    cmd = [sys.executable, "-m", "robust_mim.cli", "certify", "--spec", json.dumps(s), "--weights", files["mae"],
           "--model-id", "m", "--sigma", "0.25", "--out", str(tmp_path / "r.json")]
    run = subprocess.run(cmd, capture_output=True, text=True, env={**ENV, "PYTHONPATH": str(REPO)}, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"robust_mim: error: '{files['mae']}' holds MAE pretraining weights (decoder keys), not a classifier; "
        "pass results/<profile>/finetune/<id>/model.safetensors"]
