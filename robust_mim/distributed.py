"""Data-parallel training over several processes (``torchrun``), on one code path.

A training command launched as ``torchrun --standalone --nproc_per_node G -m robust_mim.cli ...``
runs G processes (ranks). Each rank

- draws the same ``(seed, epoch)``-determined order as a single process and takes a disjoint,
  strided 1/G of every *global* batch (`DistributedSampler` semantics), so the union of the
  ranks' batches is exactly the single-process batch;
- averages gradients across ranks after backward (`average_gradients`: bucketed all-reduce),
  which for a loss that is a per-example mean gives the single-process gradient of the global
  batch, with any step function (steps may call ``model.embed``, ``mae.forward_encoder`` ...;
  no wrapper module is in the way);
- reports epoch metrics averaged over ranks (`all_reduce_mean`); only rank 0 writes
  checkpoints, metrics and weights (the engine and the CLI check `DistContext.is_main`).

Environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set by torchrun) are read
only by the entry helper `context_from_env`, which the CLI calls; library functions take a
`DistContext`. Collectives use NCCL on CUDA and Gloo on the CPU (tests run two CPU processes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from robust_mim.data import epoch_batches
from robust_mim.errors import ConfigError

BUCKET_NUMEL = 1 << 24  # gradients are all-reduced in flat buckets of at most 16M elements


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run (a single process by default)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, records, weights and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = DistContext()


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def context_from_env(environ: Mapping[str, str] | None = None) -> DistContext:
    """Entry helper: torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` → `DistContext` (CLI only).

    Without those variables (a plain ``python`` launch) this is a single process.
    """
    env = os.environ if environ is None else environ
    world = _env_int(env, "WORLD_SIZE", 1)
    ctx = DistContext(rank=_env_int(env, "RANK", 0), world_size=world, local_rank=_env_int(env, "LOCAL_RANK", 0),
                      local_world_size=_env_int(env, "LOCAL_WORLD_SIZE", world))
    if not (world >= 1 and 0 <= ctx.rank < world and 0 <= ctx.local_rank < ctx.local_world_size):
        raise ConfigError(f"inconsistent torchrun environment: RANK={ctx.rank} WORLD_SIZE={world} "
                          f"LOCAL_RANK={ctx.local_rank} LOCAL_WORLD_SIZE={ctx.local_world_size}")
    return ctx


def rank_device(ctx: DistContext, requested: str = "auto", gpus: int = 0) -> tuple[torch.device, str | None]:
    """The device of this process, and a warning line when the run falls back to the CPU.

    - ``cuda`` without a visible GPU is a ConfigError (as in `robust_mim.engine.pick_device`);
    - ``auto`` with ``gpus > 0`` but no visible GPU runs on the CPU (Gloo if several
      processes) and returns a warning: the documented CPU fallback, never a hang;
    - several processes on CUDA use ``cuda:<local_rank>``; more processes than visible GPUs
      is a ConfigError.
    """
    has_cuda = torch.cuda.is_available()
    if requested.startswith("cuda") and not has_cuda:
        raise ConfigError(f"device '{requested}' requested but no CUDA GPU is available (use device: auto)")
    if requested == "cpu" or (requested == "auto" and not has_cuda):
        warning = None
        if gpus > 0:
            why = "device is cpu" if requested == "cpu" else "no CUDA GPU is visible"
            warning = (f"gpus: {gpus} requested but {why}; training on the CPU with {ctx.world_size} "
                       "process(es) (set gpus: 0 to silence this)")
        return torch.device("cpu"), warning
    if ":" in requested and ctx.enabled:
        raise ConfigError(f"device '{requested}' pins every process to one GPU; use device: auto or cuda with gpus > 1")
    if ":" in requested:
        return torch.device(requested), None
    if ctx.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"{ctx.local_world_size} processes per node but only {torch.cuda.device_count()} CUDA "
                          "GPU(s) are visible: lower gpus in the config")
    return torch.device("cuda", ctx.local_rank if ctx.enabled else torch.cuda.current_device()), None


def init_process_group(ctx: DistContext, device: torch.device, init_method: str = "env://") -> None:
    """Join the run's process group (NCCL on CUDA, Gloo on the CPU); a no-op for one process."""
    if not ctx.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init_method, rank=ctx.rank, world_size=ctx.world_size)


def shutdown() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Examples per process per step; the global batch must split evenly (ConfigError otherwise)."""
    if global_batch % world_size:
        raise ConfigError(f"batch_size {global_batch} is not divisible by the world size {world_size} "
                          f"(one process per GPU): use a multiple of {world_size}")
    return global_batch // world_size


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def rank_indices(n: int, global_batch: int, seed: int, epoch: int, ctx: DistContext) -> list[Tensor]:
    """This rank's example indices of each global batch of the ``(seed, epoch)`` order.

    The order comes from `robust_mim.data.epoch_batches` itself (on an index dataset), so it is
    the single-process order by construction; rank r takes positions r, r+G, ... of each batch.
    """
    index = torch.arange(n)
    batches = epoch_batches(TensorDataset(index, index), global_batch, seed, epoch)
    return [idx[ctx.rank::ctx.world_size] for idx, _ in batches]  # each [global_batch / G]


def shard_batches(dataset: Dataset, global_batch: int, seed: int, epoch: int, ctx: DistContext, *,
                  num_workers: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """This rank's part of every global batch of one epoch: ``([B/G, 3, H, W], [B/G])`` pairs.

    One process gets exactly `epoch_batches`. In-memory datasets are sliced directly; others
    go through a DataLoader (pinned memory on CUDA machines, ``num_workers`` workers).
    """
    if not ctx.enabled:
        yield from epoch_batches(dataset, global_batch, seed, epoch, num_workers=num_workers)
        return
    per_rank = per_rank_batch(global_batch, ctx.world_size)
    indices = rank_indices(len(dataset), global_batch, seed, epoch, ctx)
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors
        for idx in indices:
            yield x[idx], y[idx]
        return
    order = torch.cat(indices).tolist() if indices else []
    yield from DataLoader(dataset, batch_size=per_rank, sampler=order, drop_last=True, num_workers=num_workers,
                          pin_memory=torch.cuda.is_available())


def broadcast_module(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers to every rank (identical start, as DDP does)."""
    if not ctx.enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def _buckets(tensors: Sequence[Tensor], limit: int = BUCKET_NUMEL) -> Iterator[list[Tensor]]:
    """Consecutive groups of same-dtype tensors with at most ``limit`` elements (one tensor may exceed it)."""
    bucket: list[Tensor] = []
    for t in tensors:
        if bucket and (bucket[0].dtype != t.dtype or sum(b.numel() for b in bucket) + t.numel() > limit):
            yield bucket
            bucket = []
        bucket.append(t)
    if bucket:
        yield bucket


def average_gradients(params: Sequence[Tensor], loss: Tensor, ctx: DistContext) -> float:
    """Average ``.grad`` of ``params`` over ranks in place; return the rank-mean of ``loss``.

    A parameter without a gradient on some rank counts as a zero gradient there; one without a
    gradient on every rank keeps ``grad = None`` (AdamW skips it, as in one process). Every
    rank issues the same collectives in the same order, so a rank never waits alone.
    """
    if not ctx.enabled:
        return float(loss.detach())
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float64)
    stats = torch.cat([loss.detach().double().reshape(1).cpu(), present]).to(_collective_device())
    dist.all_reduce(stats)  # [1 + P]: summed loss, number of ranks holding each gradient
    stats = stats.cpu()
    used = [p for p, count in zip(params, stats[1:].tolist()) if count > 0]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for bucket in _buckets([p.grad for p in used]):
        flat = torch.cat([g.reshape(-1) for g in bucket])  # [sum of numel]
        dist.all_reduce(flat)
        flat /= ctx.world_size
        for g, part in zip(bucket, flat.split([g.numel() for g in bucket])):
            g.copy_(part.view_as(g))
    return float(stats[0]) / ctx.world_size


def all_reduce_mean(values: Mapping[str, float], ctx: DistContext) -> dict[str, float]:
    """Mean of each named float over ranks (every rank must pass the same names)."""
    if not ctx.enabled or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return {k: v / ctx.world_size for k, v in zip(keys, t.tolist())}


def all_gather_tensor(t: Tensor, ctx: DistContext) -> list[Tensor]:
    """Every rank's copy of ``t`` (same shape and dtype on each rank), on the CPU, in rank order."""
    if not ctx.enabled:
        return [t.cpu()]
    local = t.to(_collective_device())
    out = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(out, local)
    return [o.cpu() for o in out]
