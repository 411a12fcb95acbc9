"""Training-step throughput: `robust_mim.engine` against a minimal PyTorch + timm loop.

Contenders train deep copies of one initialisation on the same in-memory batches (a shuffled
slicing of one ``TensorDataset``) with the same AdamW hyper-parameters:

- ``plain``: per batch ``zero_grad``, loss (cross-entropy, or the MAE loss), ``backward``,
  ``torch.optim.AdamW(model.parameters()).step()`` — nothing else;
- ``engine.train_one_epoch``: the engine's epoch (cosine lr per step, autocast context, the
  registered step with its metrics, ``loss.item()`` and a finiteness check, parameter groups);
- ``engine.fit``: a one-epoch ``fit`` in a fresh run folder (adds set-up, the checkpoint and
  ``metrics.jsonl`` written after the epoch).

One timed unit is one epoch of ``--steps`` steps; images/s = steps · batch / seconds. The ratio
engine ÷ plain should be ≥ 0.95 (the engine adds no overhead). The engine's per-step extras
are then timed alone (microseconds per step, and as a share of the plain step) so that any
overhead is attributed to what causes it.

    python -m benchmarks.bench_engine --out benchmarks/results/engine.json [--models classifier,mae]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from benchmarks import interleaved_times, machine_info, median, spread
from robust_mim.data import random_crop_flip
from robust_mim.engine import TrainConfig, adamw, cosine_lr, fit, save_checkpoint, train_one_epoch
from robust_mim.models.classifier import ImageClassifier
from robust_mim.models.mim import MaskedAutoencoder
from robust_mim.models.vit import build_vit_encoder, vit_spec
from robust_mim.objectives import FINETUNE, PRETRAIN, build_step

MEAN, STD, NUM_CLASSES = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 10
PlainLoss = Callable[[nn.Module, Tensor, Tensor], Tensor]


def build_model(kind: str, arch: str) -> nn.Module:
    """``classifier`` (ViT + linear head, as fine-tuning trains) or ``mae`` (as pretraining trains)."""
    spec = vit_spec(arch)
    if kind == "mae":
        return MaskedAutoencoder(spec, MEAN, STD)
    return ImageClassifier(build_vit_encoder(spec), spec.embed_dim, NUM_CLASSES, MEAN, STD)


def plain_loss(kind: str) -> PlainLoss:
    """The loss a minimal loop computes: cross-entropy, or MAE's masked-patch MSE at mask 0.75."""
    if kind == "mae":
        return lambda model, x, y: model(x, x, mask_ratio=0.75)[0]
    return lambda model, x, y: F.cross_entropy(model(x), y)


def engine_step(kind: str):
    """The registered step the pipeline uses: ``mae`` pretraining or ``standard`` fine-tuning."""
    if kind == "mae":
        return build_step(PRETRAIN, {"name": "mae", "mask_ratio": 0.75})
    return build_step(FINETUNE, {"name": "standard"})


def synthetic_dataset(n: int, image_size: int, seed: int) -> TensorDataset:
    """``n`` random images [n, 3, S, S] in [0, 1] with labels in [0, 10) (compute does not depend on content)."""
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 3, image_size, image_size, generator=g),
                         torch.randint(0, NUM_CLASSES, (n,), generator=g))


def plain_epoch(model: nn.Module, loss_fn: PlainLoss, opt: torch.optim.Optimizer, data: TensorDataset,
                batch_size: int, epoch: int) -> None:
    """The baseline: shuffled slices of the in-memory tensors, forward, backward, AdamW."""
    x_all, y_all = data.tensors
    order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(epoch))
    model.train()
    for b in range(len(x_all) // batch_size):
        idx = order[b * batch_size:(b + 1) * batch_size]
        opt.zero_grad(set_to_none=True)
        loss_fn(model, x_all[idx], y_all[idx]).backward()
        opt.step()


def contenders(kind: str, args: argparse.Namespace, data: TensorDataset, cfg: TrainConfig,
               scratch: Path) -> dict[str, Callable[[], None]]:
    """The three timed callables (one epoch each), on identical copies of one model."""
    torch.manual_seed(args.seed)
    base = build_model(kind, args.arch)
    plain_m, epoch_m, fit_m = (copy.deepcopy(base) for _ in range(3))
    plain_opt = torch.optim.AdamW(plain_m.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    engine_opt = adamw(epoch_m, cfg.lr, cfg.weight_decay, cfg.betas)
    step, loss_fn, cpu = engine_step(kind), plain_loss(kind), torch.device("cpu")
    counter = {"plain": 0, "epoch": 0, "fit": 0}

    def bump(name: str) -> int:
        counter[name] += 1
        return counter[name]

    return {
        "plain": lambda: plain_epoch(plain_m, loss_fn, plain_opt, data, cfg.batch_size, bump("plain")),
        "engine.train_one_epoch": lambda: train_one_epoch(
            epoch_m, step, data, engine_opt, cfg, bump("epoch") % cfg.epochs, cpu, progress=False),
        "engine.fit": lambda: fit(fit_m, step, data, replace(cfg, epochs=1), scratch / f"fit{bump('fit')}",
                                  device=cpu, log=lambda line: None),
    }


def per_call_us(fn: Callable[[], object], calls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean microseconds per call of ``fn`` over ``calls`` calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return median(samples)


def _grads_ready(model: nn.Module, loss_fn: PlainLoss, x: Tensor, y: Tensor) -> None:
    model.zero_grad(set_to_none=True)
    loss_fn(model, x, y).backward()


def _autocast_context() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        pass


def engine_extras(kind: str, opt: torch.optim.Optimizer, cfg: TrainConfig, x: Tensor, y: Tensor,
                  loss: Tensor) -> dict[str, Callable[[], object]]:
    """Each per-step thing the engine does that the plain loop does not, as a callable."""
    logits = torch.randn(cfg.batch_size, NUM_CLASSES)  # [B, K]

    def set_lr() -> None:
        lr = cosine_lr(7, 100, 5, cfg.lr, cfg.min_lr)
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    extras = {"lr_schedule_us": set_lr, "autocast_context_us": _autocast_context,
              "loss_item_and_finite_check_us": lambda: math.isfinite(loss.item()),
              "augment_crop_us (smoke profile only)": lambda: random_crop_flip(x, max(1, x.shape[-1] // 8), False)}
    if kind == "classifier":  # the standard step also reports batch accuracy with a second .item()
        extras["accuracy_metric_item_us"] = lambda: (logits.argmax(1) == y).float().mean().item()
    else:  # mae_objective reports the reconstruction loss with one more .item()
        extras["recon_metric_item_us"] = lambda: loss.item()
    return extras


def overhead_breakdown(kind: str, args: argparse.Namespace, cfg: TrainConfig, scratch: Path) -> dict[str, float]:
    """Microseconds per step of each engine extra, the two AdamW steps, and the per-epoch checkpoint."""
    torch.manual_seed(args.seed)
    model, loss_fn = build_model(kind, args.arch), plain_loss(kind)
    x = torch.rand(cfg.batch_size, 3, args.image_size, args.image_size)  # [B, 3, S, S]
    y = torch.randint(0, NUM_CLASSES, (cfg.batch_size,))
    engine_opt = adamw(model, cfg.lr, cfg.weight_decay, cfg.betas)
    plain_opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    _grads_ready(model, loss_fn, x, y)
    loss, n = loss_fn(model, x, y).detach(), args.micro_calls
    out = {name: per_call_us(fn, n) for name, fn in engine_extras(kind, engine_opt, cfg, x, y, loss).items()}
    opt_steps = interleaved_times({"engine": engine_opt.step, "plain": plain_opt.step}, max(5, n // 10))
    out["optimizer_step_engine_groups_us"] = 1e6 * median(opt_steps["engine"])  # decay / no-decay groups
    out["optimizer_step_plain_us"] = 1e6 * median(opt_steps["plain"])  # one group, decay on everything
    ckpt = scratch / "breakdown.pt"
    out["checkpoint_per_epoch_us"] = per_call_us(
        lambda: save_checkpoint(ckpt, model, engine_opt, 1, [], "hash"), 1, repeats=3)
    return {k: round(v, 2) for k, v in out.items()}


def bench_kind(kind: str, args: argparse.Namespace) -> dict:
    """Interleaved epochs of the three contenders, then the overhead breakdown, for one model kind."""
    data = synthetic_dataset(args.batch_size * args.steps, args.image_size, args.seed)
    cfg = TrainConfig(epochs=max(2, args.repeats + 2), batch_size=args.batch_size, lr=1e-3 * args.batch_size / 256,
                      weight_decay=0.05, betas=(0.9, 0.999), seed=args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    try:
        times = interleaved_times(contenders(kind, args, data, cfg, scratch), args.repeats, args.warmup)
        breakdown = overhead_breakdown(kind, args, cfg, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    images = args.steps * args.batch_size
    rows = {name: {"median_s": median(t), "runs_s": [round(v, 4) for v in t], "spread": round(spread(t), 3),
                   "images_per_s": images / median(t), "ms_per_step": 1e3 * median(t) / args.steps}
            for name, t in times.items()}
    plain_step_us = 1e3 * rows["plain"]["ms_per_step"]
    paired = [p / e for p, e in zip(times["plain"], times["engine.train_one_epoch"])]  # adjacent in time
    return {"model": kind, "results": rows,
            "ratio": rows["engine.train_one_epoch"]["images_per_s"] / rows["plain"]["images_per_s"],
            "paired_ratios": {"median": median(paired), "min": min(paired), "max": max(paired)},
            "ratio_fit": rows["engine.fit"]["images_per_s"] / rows["plain"]["images_per_s"],
            "breakdown_us_per_step": breakdown,
            "breakdown_share_of_plain_step": {  # the checkpoint is written once per epoch of `steps` steps
                k: round(v / plain_step_us / (args.steps if "per_epoch" in k else 1), 4) for k, v in breakdown.items()}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="classifier,mae", help="comma-separated: classifier, mae")
    parser.add_argument("--arch", default="vit_micro_patch4_16")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128, help="the smoke profile's batch")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=7, help="timed epochs per contender (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs per contender first")
    parser.add_argument("--micro-calls", type=int, default=200, help="calls per micro-timing in the breakdown")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/engine.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [bench_kind(kind.strip(), args) for kind in args.models.split(",") if kind.strip()]
    result = {"benchmark": "engine_step_throughput", "arch": args.arch, "image_size": args.image_size,
              "batch_size": args.batch_size, "steps_per_epoch": args.steps, "repeats": args.repeats,
              "warmup": args.warmup, "target_ratio": 0.95, "device": "cpu", "runs": runs,
              "ratio": min(r["ratio"] for r in runs), **machine_info()}
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(result: dict) -> None:
    print(f"engine vs plain loop: {result['arch']}, batch {result['batch_size']}, {result['steps_per_epoch']} "
          f"steps/epoch, {result['torch_threads']} threads, load {result['load_average']}")
    for run in result["runs"]:
        print(f"  {run['model']:<12}{'contender':<26}{'ms/step':>9}{'img/s':>10}{'spread':>8}")
        for name, row in run["results"].items():
            print(f"  {'':<12}{name:<26}{row['ms_per_step']:>9.2f}{row['images_per_s']:>10.0f}{row['spread']:>8.2f}")
        p = run["paired_ratios"]
        print(f"  {'':<12}ratio train_one_epoch/plain {run['ratio']:.3f} (per-repeat pairs: median {p['median']:.3f}, "
              f"range {p['min']:.2f}-{p['max']:.2f}), fit/plain {run['ratio_fit']:.3f} (target >= {result['target_ratio']})")
        for name, us in run["breakdown_us_per_step"].items():
            share = run["breakdown_share_of_plain_step"][name]
            print(f"  {'':<12}  {name:<40}{us:>12.1f} us{100 * share:>8.2f}% of a plain step")


if __name__ == "__main__":
    main()
