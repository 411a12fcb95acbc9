import json

import pytest
import torch

from conftest import filled
from robust_mim.engine import TrainConfig, cosine_lr, fit
from robust_mim.errors import CheckpointError
from robust_mim.models import MaskedAutoencoder, vit_spec
from robust_mim.objectives import PRETRAIN, build_step

CFG = TrainConfig(epochs=3, batch_size=64, lr=1e-3, warmup_epochs=1, seed=3, augment="crop_flip")


class Killed(Exception):
    pass


def _run(digits16, run_dir, kill_after_epoch=None):
    torch.manual_seed(123)  # model init
    mae = MaskedAutoencoder(vit_spec("vit_nano_patch4_16"), [0.5] * 3, [0.5] * 3)
    nim = filled("pretrain_objective", {"name": "nim", "sampler": "gamma"})  # masking-free, noisy: uses the RNG
    step = build_step(PRETRAIN, nim)
    train = torch.utils.data.TensorDataset(*(t[:256] for t in digits16[0].tensors))

    def maybe_kill(epoch):
        if epoch == kill_after_epoch:
            raise Killed
    hist = fit(mae, step, train, CFG, run_dir, run_hash="h", device=torch.device("cpu"),
               log=lambda s: None, on_epoch_end=maybe_kill)
    return mae, hist


def test_resume_after_a_kill_equals_the_uninterrupted_run_bitwise(tmp_path, digits16):
    ref, ref_hist = _run(digits16, tmp_path / "a")
    with pytest.raises(Killed):
        _run(digits16, tmp_path / "b", kill_after_epoch=1)
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 1
    resumed, hist = _run(digits16, tmp_path / "b")
    for (k, v), w in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, w), k
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref_hist]
    lines = [json.loads(s) for s in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in lines] == [1, 2, 3]


def test_training_reduces_the_loss(tmp_path, digits16):
    _, hist = _run(digits16, tmp_path)
    assert hist[-1]["loss"] < hist[0]["loss"]


def test_corrupt_checkpoint_is_one_clear_error_and_is_kept(tmp_path, digits16):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*delete it") as err:
        _run(digits16, tmp_path)
    assert "\n" not in str(err.value)
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"not a checkpoint"


def test_a_checkpoint_of_another_configuration_is_set_aside_not_reused(tmp_path, digits16):
    _run(digits16, tmp_path)
    torch.manual_seed(0)
    mae = MaskedAutoencoder(vit_spec("vit_nano_patch4_16"), [0.5] * 3, [0.5] * 3)
    train = torch.utils.data.TensorDataset(*(t[:128] for t in digits16[0].tensors))
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e-3)
    step = build_step(PRETRAIN, filled("pretrain_objective", {"name": "mae"}))
    hist = fit(mae, step, train, cfg, tmp_path, run_hash="other",
               device=torch.device("cpu"), log=lambda s: None)
    assert len(hist) == 1 and (tmp_path / "checkpoint.stale").exists()


def test_cosine_schedule_warms_up_then_decays_to_min_lr():
    lrs = [cosine_lr(s, 100, 10, 1.0, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_two_runs_of_one_spec_start_from_the_same_weights_whatever_the_global_rng(tmp_path):
    """The classifier head (and a scratch model) is drawn before the engine seeds its streams: the CLI
    seeds torch's global RNG from the spec, so a rerun reproduces the run bit for bit."""
    import json

    from safetensors.torch import load_file

    from robust_mim.cli import main

    data = {"name": "digits", "root": "data", "image_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3}
    spec = {"profile": "test", "seed": 3, "device": "cpu", "data": data, "model": {"arch": "vit_nano_patch4_16"},
            "run": {"id": "x", "epochs": 1, "batch_size": 512, "blr": 1e-3, "weight_decay": 0.05, "warmup_epochs": 0,
                    "method": {"name": "standard"}}}
    weights = []
    for attempt in range(2):
        torch.manual_seed(1000 + attempt)  # whatever ran before in this process
        run_dir = tmp_path / f"run{attempt}"
        code = main(["finetune", "--spec", json.dumps(spec), "--out", str(run_dir / "w.safetensors"),
                     "--run-dir", str(run_dir), "--threads", str(torch.get_num_threads())])
        assert code == 0
        weights.append(load_file(run_dir / "w.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_rerunning_a_finished_run_rewrites_the_metrics_snakemake_removed(tmp_path, digits16):
    """Snakemake deletes a job's outputs before rerunning it (e.g. after a code change); the checkpoint
    of the finished run stays, so the rerun resumes at the end and must still write metrics.jsonl."""
    _, hist = _run(digits16, tmp_path)
    (tmp_path / "metrics.jsonl").unlink()
    _, again = _run(digits16, tmp_path)
    assert again == hist
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in lines] == [1, 2, 3]
