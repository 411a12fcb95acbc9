"""One training loop for pretraining and fine-tuning.

AdamW with linear warmup + cosine decay (per step), a checkpoint after every epoch, and
resume that reaches the same weights as an uninterrupted run: the data order depends only on
``(seed, epoch)`` and torch's RNG state is checkpointed, so on the CPU a resumed run is
bitwise identical. Per-epoch metrics are kept in the checkpoint and written as JSON lines.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from robust_mim.data import epoch_batches, random_crop_flip
from robust_mim.errors import CheckpointError, ConfigError
from robust_mim.io import atomic_torch_save, atomic_write_text

StepFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, dict[str, float]]]
AUGMENTATIONS = ("none", "crop", "crop_flip")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run (absolute learning rate, epochs, batch, seed)."""

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
    num_workers: int = 0


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is a ConfigError."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{requested}' requested but no CUDA GPU is available (use device: auto)")
    return torch.device(requested)


def cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """Linear warmup to ``base_lr`` then half-cosine decay to ``min_lr`` (MAE's schedule)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def adamw(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no decay on biases, norms, tokens and position embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "mask_token"))
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = torch.cuda.is_available() and all(p.is_cuda for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int,
                    history: list[dict], run_hash: str) -> None:
    """Atomically write everything needed to resume after ``epoch`` completed epochs."""
    atomic_torch_save({
        "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": json.dumps(history), "run_hash": run_hash,
    }, path)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    """Read a checkpoint safely (``weights_only=True``); unreadable files raise CheckpointError."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a corrupt checkpoint
        raise CheckpointError(f"cannot read checkpoint '{path}' ({type(exc).__name__}); "
                              "delete it to restart this run from scratch") from None


def _restore(ckpt: dict, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, list[dict]]:
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng_cpu"].cpu())
    if torch.cuda.is_available() and len(ckpt["rng_cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng_cuda"]])
    return int(ckpt["epoch"]), json.loads(ckpt["history"])


def _batches(dataset: Dataset, cfg: TrainConfig, epoch: int, device: torch.device) -> Iterable[tuple[Tensor, Tensor]]:
    for x, y in epoch_batches(dataset, cfg.batch_size, cfg.seed, epoch, num_workers=cfg.num_workers):
        if cfg.augment != "none":
            x = random_crop_flip(x, padding=max(1, x.shape[-1] // 8), flip=cfg.augment == "crop_flip")
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def train_one_epoch(model: nn.Module, step_fn: StepFn, dataset: Dataset, opt: torch.optim.Optimizer,
                    cfg: TrainConfig, epoch: int, device: torch.device, progress: bool) -> dict[str, float]:
    """One pass over ``dataset``; returns the epoch's mean of every metric ``step_fn`` reports."""
    model.train()
    steps_per_epoch = len(dataset) // cfg.batch_size
    total, warmup = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)
    sums: dict[str, float] = {}
    batches = _batches(dataset, cfg, epoch, device)
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
    for i, (x, y) in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(epoch * steps_per_epoch + i, total, warmup, cfg.lr, cfg.min_lr)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
            loss, metrics = step_fn(model, x, y)
        if not torch.isfinite(loss):
            raise ConfigError(f"loss became {loss.item()} at epoch {epoch + 1} step {i}: lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        for k, v in {"loss": loss.item(), **metrics}.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return {k: v / max(1, steps_per_epoch) for k, v in sums.items()}


def fit(model: nn.Module, step_fn: StepFn, dataset: Dataset, cfg: TrainConfig, run_dir: Path, *,
        run_hash: str = "", device: torch.device | None = None, log: Callable[[str], None] = print,
        on_epoch_end: Callable[[int], None] | None = None) -> list[dict]:
    """Train ``model`` with ``step_fn(model, x, y) -> (loss, metrics)`` for ``cfg.epochs`` epochs.

    Resumes from ``run_dir/checkpoint.pt`` when it exists and was written for the same
    ``run_hash``; a checkpoint of a different run is set aside (renamed ``*.stale``), never
    silently reused. Writes ``run_dir/metrics.jsonl`` after every epoch. Returns the history.
    """
    device = device or pick_device()
    model.to(device)
    if len(dataset) < cfg.batch_size:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the {len(dataset)} training examples")
    opt = adamw(model, cfg.lr, cfg.weight_decay, cfg.betas)
    ckpt_path = Path(run_dir) / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    start, history = 0, []
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, device)
        if ckpt.get("run_hash") == run_hash:
            start, history = _restore(ckpt, model, opt)
            log(f"resumed from {ckpt_path} after epoch {start}")
        else:
            ckpt_path.rename(ckpt_path.with_suffix(".stale"))
            log(f"checkpoint {ckpt_path} belongs to another configuration; kept as .stale, starting fresh")
    progress = sys.stderr.isatty()
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        metrics = train_one_epoch(model, step_fn, dataset, opt, cfg, epoch, device, progress)
        history.append({"epoch": epoch + 1, **metrics, "lr": opt.param_groups[0]["lr"],
                        "epoch_time_s": round(time.perf_counter() - t0, 3)})
        save_checkpoint(ckpt_path, model, opt, epoch + 1, history, run_hash)
        atomic_write_text(Path(run_dir) / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in history[-1].items()))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    return history
