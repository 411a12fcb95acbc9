"""`robust_mim.load_model`: the pipeline's weights describe themselves and load back as the attacked model."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import evaluation_values, filled
import robust_mim
from robust_mim.cli import main
from robust_mim.cli.artifacts import attacked_model
from robust_mim.defenses import De3
from robust_mim.errors import CheckpointError
from robust_mim.io import load_weights, save_weights
from robust_mim.models import ImageClassifier

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = {"epochs": 1, "batch_size": 256, "blr": 1e-3, "weight_decay": 0.0, "warmup_epochs": 0, "betas": [0.9, 0.99]}
MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]
RUNS = {
    "ft": {"init": "mae", "method": {"name": "standard"}},
    "de3": {"init": "mae", "denoiser": "mae", "method": filled("finetune_method", {"name": "denoised", "high_255": 30}),
            "defense": filled("defense", {"name": "de3", "sigma_255": 50})},
}


def spec(run: dict) -> dict:
    return {"profile": "unit", "scale_note": "unit test", "seed": 0, "device": "cpu",
            "data": {"name": "digits", "root": "data", "image_size": 16, "mean": MEAN, "std": STD},
            "model": {"arch": "vit_nano_patch4_16"}, "run": {**TRAIN, **run}}


def cli(command: str, run: dict, out, *flags: str) -> None:
    rc = main([command, "--spec", json.dumps(spec(run)), "--threads", "1", "--out", str(out),
               "--run-dir", str(out.parent), *flags])
    assert rc == 0


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """results/unit as the pipeline lays it out: pretrain/mae, finetune/ft and finetune/de3 (De³)."""
    res = tmp_path_factory.mktemp("results") / "unit"
    mae = res / "pretrain" / "mae" / "model.safetensors"
    cli("pretrain", {"id": "mae", "objective": {"name": "mae", "mask_ratio": 0.75}}, mae)
    for model_id, run in RUNS.items():
        flags = ["--init", str(mae)] + (["--denoiser", str(mae)] if "denoiser" in run else [])
        cli("finetune", {"id": model_id, **run}, res / "finetune" / model_id / "model.safetensors", *flags)
    return res


def test_weights_carry_architecture_normalisation_classes_and_provenance(results):
    from safetensors import safe_open

    with safe_open(str(results / "finetune" / "ft" / "model.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["kind"] == "classifier" and meta["architecture"] == "vit_nano_patch4_16" and meta["num_classes"] == "10"
    assert json.loads(meta["mean"]) == MEAN and json.loads(meta["std"]) == STD and meta["image_size"] == "16"
    assert len(meta["config_hash"]) == 12 and meta["git_commit"] and json.loads(meta["spec"])["run"]["id"] == "ft"
    de3 = json.loads((results / "finetune" / "de3" / "model.json").read_text())  # the same metadata beside the weights
    assert json.loads(de3["aux_weights"]) == {"denoiser": "../../pretrain/mae/model.safetensors"}
    assert json.loads(de3["defense"]) == {"name": "de3", "sigma_255": 50, "mask_ratio": 0.0}  # as the schema fills it


def test_load_model_round_trip_plain_classifier(results):
    model = robust_mim.load_model("ft", results)
    assert isinstance(model, ImageClassifier) and not model.training
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor(MEAN))
    state = load_weights(results / "finetune" / "ft" / "model.safetensors")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        manual = model.head(model.backbone((x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]))
        assert torch.allclose(model(x), manual, atol=1e-5)
    assert model.metadata["architecture"] == "vit_nano_patch4_16" and "spec" not in model.metadata


def test_load_model_wraps_de3_as_the_attack_command_does(results, tmp_path):
    moved = tmp_path / "elsewhere" / "unit"  # aux weights are found relative to the weights: the folder can move
    shutil.copytree(results, moved)
    model = robust_mim.load_model("de3", moved)
    assert isinstance(model, De3) and model.randomized and not model.training
    path = results / "finetune" / "de3" / "model.safetensors"
    reference, _, randomized = attacked_model(spec({"id": "de3", **RUNS["de3"]}), path, 10,
                                              denoiser=str(results / "pretrain" / "mae" / "model.safetensors"))
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        torch.manual_seed(1)
        ours = model(x)
        torch.manual_seed(1)
        theirs = reference(x)
    assert randomized and torch.allclose(ours, theirs, atol=1e-5)


def test_metadata_falls_back_to_the_json_beside_the_weights(results, tmp_path):
    folder = tmp_path / "unit" / "finetune" / "ft"
    folder.mkdir(parents=True)
    shutil.copy(results / "finetune" / "ft" / "model.json", folder)
    save_weights(load_weights(results / "finetune" / "ft" / "model.safetensors"), folder / "model.safetensors")
    assert robust_mim.load_model("ft", tmp_path / "unit").metadata["architecture"] == "vit_nano_patch4_16"
    (folder / "model.json").unlink()
    with pytest.raises(CheckpointError, match="carries no model metadata .*forcerun"):
        robust_mim.load_model("ft", tmp_path / "unit")


def test_unknown_model_or_results_folder_is_one_line_naming_what_exists(results, tmp_path):
    with pytest.raises(CheckpointError, match=r"no trained model 'nope' in .*\(known: de3, ft\)"):
        robust_mim.load_model("nope", results)
    with pytest.raises(CheckpointError, match="results folder .* does not exist"):
        robust_mim.load_model("ft", tmp_path / "missing")


def test_import_robust_mim_stays_light():
    out = subprocess.run([sys.executable, "-c", "import sys, robust_mim; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


EVALUATION = evaluation_values(
    n_examples=8, eps_255=[0, 8], large_eps_255=64, steps=1, restarts=1, strong_steps_factor=2, strong_restarts=1,
    eot_samples=2, l2_eps=[], square_queries=2, square_eps_255=[8], autoattack=False, apgd_steps=1,
    apgd_target_classes=2, headline_eps_255=8, batch_size=8)


def test_attack_command_evaluates_the_de3_model_and_logs_progress(results, tmp_path):
    log = tmp_path / "attack.log"
    rc = main(["attack", "--spec", json.dumps({**spec({"id": "de3", **RUNS["de3"]}), "evaluation": EVALUATION}),
               "--weights", str(results / "finetune" / "de3" / "model.safetensors"), "--model-id", "de3",
               "--denoiser", str(results / "pretrain" / "mae" / "model.safetensors"), "--out-dir", str(tmp_path / "rec"),
               "--log", str(log)])
    lines = log.read_text().splitlines()
    assert rc == 0, lines
    assert "robust-mim attack: run de3, profile unit, config " in lines[0] and "randomized=True" in lines[1]
    assert any("attack 100% (" in line and "batches" in line for line in lines)
    assert json.loads((tmp_path / "rec" / "pgd-linf-eot.json").read_text())["defense"]["name"] == "de3"
