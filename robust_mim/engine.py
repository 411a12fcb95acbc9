"""One training loop for pretraining and fine-tuning, on one process or many (torchrun DDP).

AdamW (or SGD with momentum, the optimiser of Chen et al.'s official code) with linear warmup, then
cosine decay per step (or MultiStepLR-style steps at given epochs), a checkpoint after every epoch, and
resume that reaches the same weights as an uninterrupted run: the data order depends only on
``(seed, epoch)`` and torch's RNG state is checkpointed, so on the CPU a resumed run is
bitwise identical. Per-epoch metrics are kept in the checkpoint and written as JSON lines.

GPU speed options (each a no-op on the CPU): bf16 autocast (``amp``), TF32 matmuls and
convolutions (``tf32``), fused AdamW, timm's fused scaled-dot-product attention (timm's
default), pinned-memory loading with non-blocking copies, and ``torch.compile`` of each
transformer block (``compile``). On the CPU: bf16 autocast of the training step (``cpu_amp``; on an
AVX-512-BF16 CPU about 1.2x for ViT-Tiny/4 MAE and clean steps, 0.5x for the width-64 micro ViT,
``benchmarks/bench_cpu_train.py``); in-memory datasets (`robust_mim.data.ImageTensors`) are sliced
per batch without a DataLoader. Fine-tuning options of the MAE/BEiT recipes: layer-wise
learning-rate decay (``layer_decay``) and MixUp/CutMix with label smoothing.

Data parallelism (`robust_mim.distributed`): with a `DistContext` of G processes each rank
trains on its 1/G of every global batch, gradients are averaged across ranks, metrics are
averaged, and only rank 0 logs and writes checkpoints and metrics.
"""
from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from robust_mim.data import random_crop_flip, random_flip
from robust_mim.distributed import (SINGLE_PROCESS, DistContext, all_gather_tensor, all_reduce_mean,
                                    average_gradients, broadcast_module, per_rank_batch, shard_batches)
from robust_mim.errors import CheckpointError, ConfigError
from robust_mim.io import atomic_torch_save, atomic_write_text
from robust_mim.progress import Progress

StepFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, dict[str, float]]]
AUGMENTATIONS = ("none", "crop", "crop_flip", "flip")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step")
RANK_SEED_STRIDE = 1_000_003  # rank r draws its masks/noise from seed + r * stride (rank 0: the seed)
BLOCK_INDEX = re.compile(r"(?:^|\.)blocks\.(\d+)\.")  # "backbone.blocks.3.attn.qkv.weight" -> 3


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run (absolute learning rate, epochs, *global* batch, seed).

    ``mixup_alpha``/``cutmix_alpha``/``label_smoothing`` act only when ``num_classes`` is set
    (fine-tuning): the step then receives soft targets ``[B, K]`` instead of labels ``[B]``.
    ``optimizer`` is ``adamw`` (``betas``) or ``sgd`` (``momentum``, ``nesterov``); ``schedule`` is
    ``cosine`` (to ``min_lr``) or ``step`` (× ``lr_gamma`` at each epoch in ``lr_milestones``).
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.05
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = None
    seed: int = 0
    augment: str = "none"
    amp: bool = False
    cpu_amp: bool = False
    num_workers: int = 0
    tf32: bool = True
    compile: bool = False
    layer_decay: float = 1.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.0
    num_classes: int | None = None
    optimizer: str = "adamw"
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "cosine"
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1

    def __post_init__(self) -> None:
        for key, value, known in (("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES),
                                  ("augment", self.augment, AUGMENTATIONS)):
            if value not in known:
                raise ConfigError(f"unknown {key} '{value}' (known: {', '.join(known)})")

    def autocast(self, device: torch.device) -> bool:
        """Whether training steps on ``device`` run under bf16 autocast (``amp`` on CUDA, ``cpu_amp`` on the CPU)."""
        return self.amp if device.type == "cuda" else self.cpu_amp and device.type == "cpu"

    @property
    def mixes_labels(self) -> bool:
        return bool(self.num_classes) and (self.mixup_alpha > 0 or self.cutmix_alpha > 0 or self.label_smoothing > 0)


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is a ConfigError."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{requested}' requested but no CUDA GPU is available (use device: auto)")
    return torch.device(requested)


def enable_tf32(enabled: bool = True) -> None:
    """Let CUDA matmuls and cuDNN convolutions use TF32 tensor cores (no effect on CPU math)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def compile_blocks(model: nn.Module, backend: str = "inductor") -> int:
    """``torch.compile`` each transformer block in place (whole model if it has none).

    Regional compilation keeps ``state_dict`` keys unchanged and speeds up every entry point a
    step may call (``forward``, ``embed``, ``forward_encoder`` ...). Returns the number compiled.
    """
    from timm.models.vision_transformer import Block

    blocks = [m for m in model.modules() if isinstance(m, Block)] or [model]
    for block in blocks:
        block.compile(backend=backend)
    return len(blocks)


def cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """Linear warmup to ``base_lr`` then half-cosine decay to ``min_lr`` (MAE's schedule)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def step_lr(step: int, steps_per_epoch: int, warmup_steps: int, base_lr: float, milestones: tuple[int, ...],
            gamma: float) -> float:
    """Linear warmup to ``base_lr``, then ``base_lr · gamma^k`` with k the milestones already reached.

    A milestone m is reached at the first step of epoch m (0-based), as PyTorch's ``MultiStepLR``
    stepped once per epoch: milestones (60, 80) give epochs 0–59 the base lr, 60–79 a tenth, 80– a hundredth.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    epoch = step // max(1, steps_per_epoch)
    return base_lr * gamma ** sum(epoch >= m for m in milestones)


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The run's learning rate at optimizer step ``step`` (its ``schedule``, after ``warmup_epochs``)."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "step":
        return step_lr(step, steps_per_epoch, warmup, cfg.lr, cfg.lr_milestones, cfg.lr_gamma)
    return cosine_lr(step, cfg.epochs * steps_per_epoch, warmup, cfg.lr, cfg.min_lr)


def layer_id(name: str, num_blocks: int) -> int:
    """Depth of a ViT parameter for layer decay: embeddings 0, block i → i + 1, the rest (norm, head) last."""
    if name.endswith(("cls_token", "pos_embed", "mask_token")) or "patch_embed" in name:
        return 0
    found = BLOCK_INDEX.search(name)
    return int(found.group(1)) + 1 if found else num_blocks + 1


def _lr_scales(names: list[str], layer_decay: float) -> list[float]:
    """BEiT/MAE layer-wise decay: a parameter at depth d of D+1 gets lr · decay^(D+1-d)."""
    ids = [int(m.group(1)) for m in map(BLOCK_INDEX.search, names) if m]
    num_blocks = max(ids) + 1 if ids else 0
    return [layer_decay ** (num_blocks + 1 - layer_id(n, num_blocks)) for n in names]


def _param_groups(model: nn.Module, weight_decay: float, layer_decay: float,
                  decay_all: bool) -> list[dict]:
    """Trainable parameters grouped by (decay flag, layer-decay lr scale).

    Without ``decay_all`` biases, norms, tokens and position embeddings get no weight decay (MAE's
    recipe); with it every parameter does (``torch.optim.SGD(model.parameters(), weight_decay=…)``).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    scales = _lr_scales([n for n, _ in named], layer_decay) if layer_decay != 1.0 else [1.0] * len(named)
    groups: dict[tuple[bool, float], list[Tensor]] = {(False, 1.0): []} if decay_all else {(False, 1.0): [],
                                                                                           (True, 1.0): []}
    for (name, p), scale in zip(named, scales):
        skip = not decay_all and (p.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "mask_token")))
        groups.setdefault((skip, scale), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if skip else weight_decay, "lr_scale": scale}
            for (skip, scale), ps in groups.items() if ps or scale == 1.0]


def adamw(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
          layer_decay: float = 1.0) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no decay on biases, norms, tokens and position embeddings.

    Each group carries ``lr_scale`` (1 without layer decay; ``layer_decay`` < 1 gives one group
    per depth and decay flag). Fused kernels when every parameter is on CUDA.
    """
    groups = _param_groups(model, weight_decay, layer_decay, decay_all=False)
    params = [p for g in groups for p in g["params"]]
    fused = torch.cuda.is_available() and bool(params) and all(p.is_cuda for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def sgd(model: nn.Module, lr: float, weight_decay: float, momentum: float, nesterov: bool,
        layer_decay: float = 1.0) -> torch.optim.SGD:
    """SGD with (Nesterov) momentum and weight decay on every trainable parameter, as the official
    code of Chen et al. (``torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=wd)``)."""
    groups = _param_groups(model, weight_decay, layer_decay, decay_all=True)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The run's ``optimizer`` (``adamw`` or ``sgd``) over the model's trainable parameters."""
    if cfg.optimizer == "sgd":
        return sgd(model, cfg.lr, cfg.weight_decay, cfg.momentum, cfg.nesterov, cfg.layer_decay)
    return adamw(model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.layer_decay)


def mix_batch(x: Tensor, y: Tensor, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
              label_smoothing: float = 0.0, switch_prob: float = 0.5) -> tuple[Tensor, Tensor]:
    """MixUp (Zhang et al. 2018) or CutMix (Yun et al. 2019) with label smoothing, DeiT/MAE style.

    One λ ~ Beta(α, α) per batch; image i is mixed with image N-1-i (the batch reversed).
    With both α > 0, CutMix is chosen with probability ``switch_prob``; CutMix's λ is the
    kept area. Uses torch's global RNG (seeded and checkpointed by the engine).

    Args:
        x: images [N, C, H, W] in [0, 1]; y: labels [N].

    Returns:
        (mixed images [N, C, H, W], soft targets [N, K] that sum to 1 per row).
    """
    off = label_smoothing / num_classes
    target = torch.full((y.shape[0], num_classes), off, device=x.device)
    target.scatter_(1, y[:, None], 1.0 - label_smoothing + off)  # [N, K]
    cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or float(torch.rand(())) < switch_prob)
    alpha = cutmix_alpha if cutmix else mixup_alpha
    if alpha <= 0:
        return x, target
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    if cutmix:
        x, lam = _cutmix(x, lam)
    else:
        x = lam * x + (1.0 - lam) * x.flip(0)
    return x, lam * target + (1.0 - lam) * target.flip(0)


def _cutmix(x: Tensor, lam: float) -> tuple[Tensor, float]:
    """Paste a random box of area ≈ (1-λ)·H·W from the reversed batch; return (images, kept-area λ)."""
    h, w = x.shape[-2:]
    cut_h, cut_w = int(h * math.sqrt(1.0 - lam)), int(w * math.sqrt(1.0 - lam))
    cy, cx = int(torch.randint(0, h, ())), int(torch.randint(0, w, ()))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    mixed = x.clone()
    mixed[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
    return mixed, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)


def save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int,
                    history: list[dict], run_hash: str, rank_rng: dict[str, list[Tensor]] | None = None) -> None:
    """Atomically write everything needed to resume after ``epoch`` completed epochs.

    ``rank_rng`` (several processes) holds every rank's RNG states so each resumes its own stream.
    """
    atomic_torch_save({
        "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": json.dumps(history), "run_hash": run_hash, **(rank_rng or {}),
    }, path)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    """Read a checkpoint safely (``weights_only=True``); unreadable files raise CheckpointError."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a corrupt checkpoint
        raise CheckpointError(f"cannot read checkpoint '{path}' ({type(exc).__name__}); "
                              "delete it to restart this run from scratch") from None


def _rank_rng(ctx: DistContext, device: torch.device) -> dict[str, list[Tensor]]:
    """Every rank's CPU (and own-GPU) RNG state, gathered so that rank 0 can checkpoint them."""
    if not ctx.enabled:
        return {}
    states = {"rng_rank_cpu": all_gather_tensor(torch.get_rng_state(), ctx)}
    if device.type == "cuda":
        states["rng_rank_cuda"] = all_gather_tensor(torch.cuda.get_rng_state(device), ctx)
    return states


def _restore(ckpt: dict, model: nn.Module, opt: torch.optim.Optimizer, ctx: DistContext,
             device: torch.device, log: Callable[[str], None]) -> tuple[int, list[dict]]:
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    ranks = ckpt.get("rng_rank_cpu", [])
    if ctx.enabled and len(ranks) == ctx.world_size:
        torch.set_rng_state(ranks[ctx.rank].cpu())
        if device.type == "cuda" and len(ckpt.get("rng_rank_cuda", [])) == ctx.world_size:
            torch.cuda.set_rng_state(ckpt["rng_rank_cuda"][ctx.rank].cpu(), device)
    elif ctx.enabled:
        torch.manual_seed(RANK_SEED_STRIDE * (ctx.rank + 1) + int(ckpt["epoch"]))
        log("checkpoint from another number of processes: weights resumed, random streams reseeded")
    else:
        torch.set_rng_state(ckpt["rng_cpu"].cpu())
        if torch.cuda.is_available() and len(ckpt["rng_cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng_cuda"]])
    return int(ckpt["epoch"]), json.loads(ckpt["history"])


def _batches(dataset: Dataset, cfg: TrainConfig, epoch: int, device: torch.device,
             ctx: DistContext = SINGLE_PROCESS) -> Iterable[tuple[Tensor, Tensor]]:
    for x, y in shard_batches(dataset, cfg.batch_size, cfg.seed, epoch, ctx, num_workers=cfg.num_workers):
        if cfg.augment == "flip":
            x = random_flip(x)
        elif cfg.augment != "none":
            x = random_crop_flip(x, padding=max(1, x.shape[-1] // 8), flip=cfg.augment == "crop_flip")
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if cfg.mixes_labels:
            x, y = mix_batch(x, y, cfg.num_classes, cfg.mixup_alpha, cfg.cutmix_alpha, cfg.label_smoothing)
        yield x, y


def _check_finite(loss: float, epoch: int, step: int) -> None:
    if not math.isfinite(loss):
        raise ConfigError(f"loss became {loss} at epoch {epoch + 1} step {step}: lower the learning rate")


def _optimizer_step(model: nn.Module, opt: torch.optim.Optimizer, loss: Tensor, cfg: TrainConfig,
                    ctx: DistContext, epoch: int, step: int) -> float:
    """Backward, average gradients over ranks, clip, step; returns the loss (mean over ranks)."""
    opt.zero_grad(set_to_none=True)
    if ctx.enabled:
        loss.backward()
        value = average_gradients([p for g in opt.param_groups for p in g["params"]], loss, ctx)
        _check_finite(value, epoch, step)  # every rank sees the same mean, so all stop together
    else:
        value = loss.item()
        _check_finite(value, epoch, step)
        loss.backward()
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return value


def train_one_epoch(model: nn.Module, step_fn: StepFn, dataset: Dataset, opt: torch.optim.Optimizer,
                    cfg: TrainConfig, epoch: int, device: torch.device, progress: bool,
                    ctx: DistContext = SINGLE_PROCESS, steps: Progress | None = None) -> dict[str, float]:
    """One pass over ``dataset``; returns the epoch's mean (over steps and ranks) of every metric.

    ``progress`` draws a tqdm bar (a terminal); ``steps`` counts optimizer steps for the log.
    """
    model.train()
    steps_per_epoch = len(dataset) // cfg.batch_size
    sums: dict[str, float] = {}
    batches = _batches(dataset, cfg, epoch, device, ctx)
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
    for i, (x, y) in enumerate(batches):
        lr = learning_rate(cfg, epoch * steps_per_epoch + i, steps_per_epoch)
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.autocast(device)):
            loss, metrics = step_fn(model, x, y)
        value = _optimizer_step(model, opt, loss, cfg, ctx, epoch, i)
        for k, v in {"loss": value, **metrics}.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        if steps is not None:
            steps.update()
    return all_reduce_mean({k: v / max(1, steps_per_epoch) for k, v in sums.items()}, ctx)


def _base_lr(opt: torch.optim.Optimizer) -> float:
    group = opt.param_groups[0]
    return group["lr"] / group.get("lr_scale", 1.0)


def _prepare(model: nn.Module, dataset: Dataset, cfg: TrainConfig, device: torch.device, ctx: DistContext,
             log: Callable[[str], None]) -> None:
    """Checks and one-time set-up before the first epoch (identical start on every rank)."""
    if len(dataset) < cfg.batch_size:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the {len(dataset)} training examples")
    per_rank = per_rank_batch(cfg.batch_size, ctx.world_size)
    model.to(device)
    broadcast_module(model, ctx)
    if device.type == "cuda":
        enable_tf32(cfg.tf32)
        if cfg.compile:
            log(f"torch.compile: {compile_blocks(model)} region(s)")
    log(f"global batch {cfg.batch_size} = {ctx.world_size} process(es) x {per_rank} on {device.type}; "
        f"peak lr {cfg.lr:.4g}")


def _resume(ckpt_path: Path, model: nn.Module, opt: torch.optim.Optimizer, run_hash: str, ctx: DistContext,
            device: torch.device, log: Callable[[str], None]) -> tuple[int, list[dict]]:
    if not ckpt_path.exists():
        return 0, []
    ckpt = load_checkpoint(ckpt_path, device)
    if ckpt.get("run_hash") == run_hash:
        start, history = _restore(ckpt, model, opt, ctx, device, log)
        log(f"resumed from {ckpt_path} after epoch {start}")
        return start, history
    if ctx.is_main:
        ckpt_path.rename(ckpt_path.with_suffix(".stale"))
    log(f"checkpoint {ckpt_path} belongs to another configuration; kept as .stale, starting fresh")
    return 0, []


def fit(model: nn.Module, step_fn: StepFn, dataset: Dataset, cfg: TrainConfig, run_dir: Path, *,
        run_hash: str = "", device: torch.device | None = None, log: Callable[[str], None] = print,
        on_epoch_end: Callable[[int], None] | None = None, dist: DistContext = SINGLE_PROCESS) -> list[dict]:
    """Train ``model`` with ``step_fn(model, x, y) -> (loss, metrics)`` for ``cfg.epochs`` epochs.

    Resumes from ``run_dir/checkpoint.pt`` when it exists and was written for the same
    ``run_hash``; a checkpoint of a different run is set aside (renamed ``*.stale``), never
    silently reused. Writes ``run_dir/metrics.jsonl`` after every epoch. Returns the history.
    With ``dist`` of several processes (see `robust_mim.distributed`), ``cfg.batch_size`` is
    the global batch, and only rank 0 logs and writes; every rank returns the same history.
    """
    device = device or pick_device()
    log = log if dist.is_main else (lambda line: None)
    _prepare(model, dataset, cfg, device, dist, log)
    opt = build_optimizer(model, cfg)
    ckpt_path = Path(run_dir) / "checkpoint.pt"
    torch.manual_seed(cfg.seed + RANK_SEED_STRIDE * dist.rank)
    start, history = _resume(ckpt_path, model, opt, run_hash, dist, device, log)
    progress = sys.stderr.isatty() and dist.is_main
    steps = Progress((cfg.epochs - start) * (len(dataset) // cfg.batch_size), log, "train", "steps")
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        metrics = train_one_epoch(model, step_fn, dataset, opt, cfg, epoch, device, progress, dist, steps)
        history.append({"epoch": epoch + 1, **metrics, "lr": _base_lr(opt),
                        "epoch_time_s": round(time.perf_counter() - t0, 3)})
        rank_rng = _rank_rng(dist, device)
        if dist.is_main:
            save_checkpoint(ckpt_path, model, opt, epoch + 1, history, run_hash, rank_rng)
            _write_metrics(run_dir, history)
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in history[-1].items()))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    if dist.is_main and start >= cfg.epochs:  # resumed a finished run: its outputs may have been removed
        _write_metrics(run_dir, history)
    return history


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    """``run_dir/metrics.jsonl``: one JSON line per finished epoch."""
    atomic_write_text(Path(run_dir) / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
