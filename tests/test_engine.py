import json

import pytest
import torch

from conftest import filled
from robust_mim.engine import TrainConfig, cosine_lr, fit
from robust_mim.errors import CheckpointError, ConfigError
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


# ----------------------------------------------------------------------------- optimisers, schedules, augmentation
def _tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 3))


def test_sgd_steps_as_torch_sgd_with_decay_on_every_parameter_like_chen_et_al():
    """optimizer sgd = torch.optim.SGD(model.parameters(), lr, momentum, weight_decay, nesterov): biases and
    BatchNorm weights are decayed too (AdamW's groups exempt them)."""
    from robust_mim.engine import build_optimizer

    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, weight_decay=3e-4, optimizer="sgd", momentum=0.9,
                      nesterov=True)
    ours, ref = _tiny_net(), _tiny_net()
    opt = build_optimizer(ours, cfg)
    ref_opt = torch.optim.SGD(ref.parameters(), 0.1, momentum=0.9, weight_decay=3e-4, nesterov=True)
    assert isinstance(opt, torch.optim.SGD) and {g["weight_decay"] for g in opt.param_groups} == {3e-4}
    x, y = torch.rand(8, 3, 8, 8), torch.randint(0, 3, (8,))
    for model, o in ((ours, opt), (ref, ref_opt)):
        for _ in range(3):
            o.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            o.step()
    for (k, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-7), k


def test_sgd_keys_reach_the_engine_and_profiles_without_them_keep_adamw_and_cosine():
    from robust_mim.cli.common import train_config
    from robust_mim.engine import build_optimizer

    run = {"epochs": 2, "batch_size": 128, "blr": 0.2, "weight_decay": 3e-4, "warmup_epochs": 0.5}
    spec = {"seed": 0, "data": {}, "run": run}
    plain = train_config(spec)
    assert (plain.optimizer, plain.schedule) == ("adamw", "cosine")
    assert isinstance(build_optimizer(_tiny_net(), plain), torch.optim.AdamW)
    sgd = train_config({**spec, "run": {**run, "optimizer": "sgd", "nesterov": True, "schedule": "step",
                                        "lr_milestones": [30, 40]}})
    assert (sgd.optimizer, sgd.nesterov, sgd.momentum, sgd.lr_milestones, sgd.lr) == ("sgd", True, 0.9, (30, 40), 0.1)


def test_step_schedule_warms_up_then_divides_by_ten_at_each_milestone():
    from robust_mim.engine import learning_rate

    cfg = TrainConfig(epochs=5, batch_size=8, lr=0.1, warmup_epochs=0.5, schedule="step", lr_milestones=(3, 4))
    lrs = [learning_rate(cfg, s, steps_per_epoch=10) for s in range(50)]  # 10 steps per epoch
    assert lrs[0] == pytest.approx(0.02) and lrs[4] == pytest.approx(0.1)  # 5 warm-up steps
    assert lrs[5:30] == [pytest.approx(0.1)] * 25  # epochs 0-2 (MultiStepLR: milestone 3 = the 4th epoch)
    assert lrs[30:40] == [pytest.approx(0.01)] * 10 and lrs[40:] == [pytest.approx(0.001)] * 10
    with pytest.raises(ConfigError, match="unknown optimizer 'sgdw'"):
        TrainConfig(epochs=1, batch_size=8, lr=0.1, optimizer="sgdw")


def test_flip_augment_only_mirrors_never_translates():
    from robust_mim.engine import _batches

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(64, 3, 8, 8), torch.arange(64))
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.1, augment="flip")
    x_out, idx = next(iter(_batches(data, cfg, 0, torch.device("cpu"))))
    x_in = data.tensors[0][idx]
    same = (x_out == x_in).flatten(1).all(1)
    mirrored = (x_out == x_in.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54  # each image: itself or its mirror


# ---- CPU options: bf16 autocast (cpu_amp) and in-memory uint8 datasets ----

class _DtypeProbe(torch.nn.Module):
    """A linear classifier on flattened 8x8 images that records the dtype its matmul computes in."""

    def __init__(self):
        super().__init__()
        self.fc, self.seen = torch.nn.Linear(3 * 8 * 8, 4), []

    def forward(self, x):
        out = self.fc(x.flatten(1))
        self.seen.append(out.dtype)
        return out


def _probe_step(model, x, y):
    return torch.nn.functional.cross_entropy(model(x).float(), y), {}


def _uint8_images(n=32):
    from robust_mim.data import ImageTensors

    g = torch.Generator().manual_seed(0)
    return ImageTensors(torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8),
                        torch.randint(0, 4, (n,), generator=g), ["a", "b", "c", "d"])


@pytest.mark.parametrize("options, dtype", [({}, torch.float32), ({"amp": True}, torch.float32),
                                            ({"cpu_amp": True}, torch.bfloat16)])
def test_cpu_amp_alone_runs_training_steps_under_bf16_on_the_cpu(tmp_path, options, dtype):
    """``amp`` (CUDA) leaves CPU training in fp32 as before; ``cpu_amp`` turns bf16 autocast on there."""
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-3, **options)
    model = _DtypeProbe()
    fit(model, _probe_step, _uint8_images(), cfg, tmp_path, device=torch.device("cpu"), log=lambda s: None)
    assert model.seen and set(model.seen) == {dtype}
    assert cfg.autocast(torch.device("cuda")) == options.get("amp", False)  # CUDA keeps reading amp only


def test_an_in_memory_uint8_split_trains_bitwise_like_its_float_tensors(tmp_path):
    """Slicing uint8 batches and dividing by 255 gives exactly the batches of the float images."""
    data = _uint8_images()
    as_float = torch.utils.data.TensorDataset(data.images.float() / 255, data.labels)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=1, augment="crop_flip")
    models = []
    for i, ds in enumerate((data, as_float)):
        torch.manual_seed(0)
        models.append(_DtypeProbe())
        fit(models[-1], _probe_step, ds, cfg, tmp_path / str(i), device=torch.device("cpu"), log=lambda s: None)
    assert all(torch.equal(a, b) for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()))


def test_the_profile_key_cpu_amp_reaches_the_train_config():
    from robust_mim.cli.common import train_config

    run = {"epochs": 1, "batch_size": 8, "blr": 1e-3, "weight_decay": 0.0, "warmup_epochs": 0}
    spec = {"seed": 0, "data": {}, "run": run}
    assert train_config(spec).cpu_amp is False
    assert train_config({**spec, "run": {**run, "cpu_amp": True}}).cpu_amp is True
