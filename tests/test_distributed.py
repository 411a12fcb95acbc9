"""Scale-out: DDP on two CPU processes (Gloo) equals one process, bad inputs fail in one line,
GPU speed options are safe on the CPU, fine-tuning recipe features, Snakemake launcher/profiles."""
import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from torch.utils.data import Dataset, TensorDataset

from conftest import REPO, filled, snakemake
from robust_mim import distributed
from robust_mim.distributed import DistContext, per_rank_batch, rank_device, shard_batches
from robust_mim.engine import TrainConfig, adamw, compile_blocks, fit, mix_batch
from robust_mim.errors import ConfigError
from robust_mim.models import vit_spec
from robust_mim.models.classifier import ImageClassifier
from robust_mim.models.vit import build_vit_encoder
from robust_mim.objectives import cross_entropy_step

CFG = TrainConfig(epochs=2, batch_size=32, lr=2e-3, warmup_epochs=1, seed=5)


class Killed(Exception):
    pass


def _classifier() -> ImageClassifier:
    torch.manual_seed(11)
    arch = vit_spec("vit_nano_patch4_16")
    return ImageClassifier(build_vit_encoder(arch), arch.embed_dim, 10, [0.5] * 3, [0.5] * 3)


def _train_set(n: int = 128) -> TensorDataset:
    from robust_mim.data import load_dataset
    return TensorDataset(*(t[:n] for t in load_dataset("digits", "data", "train", 16).tensors))


def _fit(run_dir: Path, ctx: DistContext, log=None, kill_after=None):
    model = _classifier()

    def maybe_kill(epoch):
        if epoch == kill_after:
            raise Killed
    hist = fit(model, cross_entropy_step, _train_set(), CFG, run_dir, run_hash="h", device=torch.device("cpu"),
               log=log or (lambda s: None), on_epoch_end=maybe_kill, dist=ctx)
    return model, hist


def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    ctx = DistContext(rank=rank, world_size=world, local_rank=rank, local_world_size=world)
    distributed.init_process_group(ctx, torch.device("cpu"), init_method=f"file://{init_file}")
    try:
        lines: list[str] = []
        model, hist = _fit(Path(out) / "ddp", ctx, log=lines.append)
        try:
            _fit(Path(out) / "resumed", ctx, kill_after=1)
        except Killed:
            pass
        resumed, _ = _fit(Path(out) / "resumed", ctx)
        torch.save({"hist": json.dumps(hist), "state": model.state_dict(), "resumed": resumed.state_dict(),
                    "log": lines}, Path(out) / f"rank{rank}.pt")
    finally:
        distributed.shutdown()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Two Gloo processes: an uninterrupted run, and a run killed after epoch 1 then resumed."""
    out = tmp_path_factory.mktemp("ddp")
    init_file = Path(tempfile.mkdtemp()) / "pg_init"
    mp.spawn(_ddp_worker, args=(2, str(init_file), str(out)), nprocs=2, join=True)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_ddp_on_two_processes_gives_the_single_process_loss_curve(ddp_run, tmp_path):
    _, ranks = ddp_run
    ref_model, ref_hist = _fit(tmp_path, distributed.SINGLE_PROCESS)
    for r in ranks:
        hist = json.loads(r["hist"])
        for a, b in zip(hist, ref_hist):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["acc"] == pytest.approx(b["acc"], abs=1e-6)
        for k, v in ref_model.state_dict().items():
            torch.testing.assert_close(r["state"][k], v, rtol=1e-4, atol=1e-5)
    assert ref_hist[-1]["loss"] < ref_hist[0]["loss"]  # it trained, so the comparison is not vacuous


def test_ddp_writes_and_logs_on_rank_0_only_and_reports_the_split(ddp_run):
    out, ranks = ddp_run
    assert ranks[1]["log"] == [] and any("global batch 32 = 2 process(es) x 16" in s for s in ranks[0]["log"])
    lines = (out / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2]  # one writer: no duplicated epochs


def test_ddp_resume_after_a_kill_equals_the_uninterrupted_ddp_run(ddp_run):
    _, ranks = ddp_run
    for r in ranks:
        for k, v in r["state"].items():
            assert torch.equal(r["resumed"][k], v), k


class _Indexed(Dataset):
    """A dataset that is not a TensorDataset (the DataLoader path): item i is (i as an image, i)."""

    def __len__(self):
        return 50

    def __getitem__(self, i):
        return torch.full((3, 2, 2), float(i)), i


IN_MEMORY = TensorDataset(torch.arange(50.0)[:, None].expand(50, 12).reshape(50, 3, 2, 2), torch.arange(50))


@pytest.mark.parametrize("dataset", [_Indexed(), IN_MEMORY])
def test_ranks_take_disjoint_shares_whose_union_is_the_single_process_batch(dataset):
    single = [set(y.tolist()) for _, y in shard_batches(dataset, 8, 3, 1, distributed.SINGLE_PROCESS)]
    shares = [[y.tolist() for _, y in shard_batches(dataset, 8, 3, 1, DistContext(rank=r, world_size=2))]
              for r in range(2)]
    assert len(single) == 6 and all(len(s) == 6 for s in shares)
    for b, batch in enumerate(single):
        a, c = shares[0][b], shares[1][b]
        assert len(a) == len(c) == 4 and not set(a) & set(c) and set(a) | set(c) == batch


def test_a_world_size_that_does_not_divide_the_batch_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="batch_size 32 is not divisible by the world size 3") as err:
        per_rank_batch(32, 3)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not divisible"):  # before any collective: no process group exists
        _fit(tmp_path, DistContext(rank=0, world_size=3))


def test_cli_under_torchrun_env_rejects_an_indivisible_batch_before_waiting(tmp_path, monkeypatch, capsys):
    from robust_mim.cli import main
    run = {"id": "x", "batch_size": 100, "objective": filled("pretrain_objective", {"name": "mae"})}
    spec = {"profile": "test", "seed": 0, "device": "auto", "data": {"name": "digits", "image_size": 16},
            "model": {"arch": "vit_nano_patch4_16"}, "run": run}
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    code = main(["pretrain", "--spec", json.dumps(spec), "--out", str(tmp_path / "w"), "--run-dir", str(tmp_path),
                 "--threads", str(torch.get_num_threads())])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["robust_mim: error: batch_size 100 is not divisible by the world size 3 "
                                 "(one process per GPU): use a multiple of 3"]


def test_gpus_without_a_gpu_fall_back_to_the_cpu_with_a_warning_and_cuda_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device, warning = rank_device(DistContext(rank=1, world_size=2), "auto", gpus=2)
    assert device.type == "cpu" and "gpus: 2 requested but no CUDA GPU is visible" in warning
    assert rank_device(DistContext(), "auto", gpus=0) == (torch.device("cpu"), None)
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        rank_device(DistContext(), "cuda", gpus=1)


def test_cli_with_gpus_on_a_cpu_machine_trains_on_the_cpu_and_logs_one_warning(tmp_path, monkeypatch):
    from robust_mim.cli import main
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = {"name": "digits", "root": "data", "image_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3}
    spec = {"profile": "test", "seed": 0, "device": "auto", "data": data, "model": {"arch": "vit_nano_patch4_16"},
            "run": {"id": "x", "epochs": 1, "batch_size": 512, "blr": 1e-3, "weight_decay": 0.05, "warmup_epochs": 0,
                    "method": {"name": "standard"}}}
    log = tmp_path / "log.txt"
    code = main(["finetune", "--spec", json.dumps(spec), "--out", str(tmp_path / "w.safetensors"), "--run-dir",
                 str(tmp_path), "--gpus", "2", "--log-file", str(log), "--threads", str(torch.get_num_threads())])
    lines = log.read_text().splitlines()
    assert code == 0 and (tmp_path / "w.safetensors").exists()
    assert sum("warning: gpus: 2 requested but no CUDA GPU is visible" in s for s in lines) == 1


def test_torchrun_environment_is_parsed_and_checked():
    env = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert distributed.context_from_env(env) == DistContext(1, 4, 1, 2)
    assert distributed.context_from_env({}) == distributed.SINGLE_PROCESS
    with pytest.raises(ConfigError, match="inconsistent torchrun environment"):
        distributed.context_from_env({"RANK": "4", "WORLD_SIZE": "4"})


def test_layer_decay_scales_each_depth_and_off_keeps_two_groups():
    model = _classifier()  # 2 blocks
    assert len(adamw(model, 1.0, 0.05, (0.9, 0.95)).param_groups) == 2
    opt = adamw(model, 1.0, 0.05, (0.9, 0.95), layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert scale[id(params["head.weight"])] == 1.0 and scale[id(params["backbone.norm.weight"])] == 1.0
    assert scale[id(params["backbone.blocks.1.mlp.fc1.weight"])] == 0.5
    assert scale[id(params["backbone.blocks.0.attn.qkv.weight"])] == 0.25
    assert scale[id(params["backbone.patch_embed.proj.weight"])] == scale[id(params["backbone.cls_token"])] == 0.125


def test_mixup_and_cutmix_give_convex_images_and_soft_targets():
    torch.manual_seed(0)
    x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    xm, t = mix_batch(x, y, 10, mixup_alpha=0.8, label_smoothing=0.1)
    assert t.shape == (6, 10) and torch.allclose(t.sum(1), torch.ones(6))
    lam = (t[0, 0] - 0.01) / 0.9  # target of image 0: lam * (0.9 + 0.01) + (1 - lam) * 0.01
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x.flip(0))
    xc, tc = mix_batch(x, y, 10, cutmix_alpha=1.0)
    pasted = (xc != x).any(1).float().mean().item()  # share of pixels taken from the reversed batch
    assert math.isclose(tc[0, 5].item(), pasted, abs_tol=1e-6) and torch.allclose(tc.sum(1), torch.ones(6))
    _, ts = mix_batch(x, y, 10, label_smoothing=0.2)
    assert ts[0, 0].item() == pytest.approx(0.82) and ts[0, 1].item() == pytest.approx(0.02)


def test_fit_with_mixup_hands_soft_targets_to_the_step(tmp_path):
    seen = []

    def soft_ce(model, x, y):
        seen.append(tuple(y.shape))
        return torch.sum(-y * torch.log_softmax(model(x), 1), 1).mean(), {}
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e-3, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1,
                      num_classes=10, layer_decay=0.65)
    hist = fit(_classifier(), soft_ce, _train_set(128), cfg, tmp_path, device=torch.device("cpu"), log=lambda s: None)
    assert seen == [(64, 10), (64, 10)] and math.isfinite(hist[0]["loss"])


def test_compiled_blocks_keep_outputs_and_state_dict_keys():
    model = _classifier().eval()
    x = torch.rand(4, 3, 16, 16)
    before, keys = model(x), list(model.state_dict())
    assert compile_blocks(model, backend="eager") == 2
    torch.testing.assert_close(model(x), before)
    assert list(model.state_dict()) == keys


def test_timm_uses_fused_attention():
    import timm.layers
    assert timm.layers.use_fused_attn()
    assert _classifier().backbone.blocks[0].attn.fused_attn


def _dry_run(tmp_path, *extra):
    """Shell commands of `snakemake -n` on the test profile with pretrain.gpus 2, finetune.gpus 0."""
    cfg = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    cfg["pretrain"]["gpus"], cfg["finetune"]["gpus"] = 2, 0
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    model = sorted(m for m, r in cfg["finetune"]["runs"].items() if r.get("init") == "mae")[0]
    run = snakemake(tmp_path, "-n", "-p", f"results/test/finetune/{model}/model.safetensors",
                    "--profile", str(REPO / "profiles" / "default"), *extra, config=str(tmp_path / "cfg.yaml"))
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout + run.stderr


def test_snakemake_launches_torchrun_when_a_job_gets_several_gpus(tmp_path):
    out = _dry_run(tmp_path)
    assert "torchrun --standalone --nnodes 1 --nproc_per_node 2 -m robust_mim.cli pretrain" in out
    assert "python -m robust_mim.cli finetune" in out and "--gpus 2 " in out and "gpu=2" in out
    assert '"gpus"' not in out and '"runtime_min"' not in out  # scheduling keys stay out of job specs


def test_snakemake_scales_gpus_down_to_the_limit_given(tmp_path):
    out = _dry_run(tmp_path, "--resources", "gpu=1")
    assert "python -m robust_mim.cli pretrain" in out and "torchrun" not in out


def test_profiles_parse_and_target_the_right_executor():
    default = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    slurm = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert "resources" not in default  # a workflow profile wins over --profile: it must not cap GPUs
    assert slurm["executor"] == "slurm" and slurm["default-resources"]["tasks_per_gpu"] == 0
