"""GPU training throughput and model-FLOPs utilisation (MFU) of the project's two hot loops.

Workloads, each a full optimiser step as `robust_mim.engine` runs it (bf16 autocast, TF32,
fused AdamW, timm's fused attention, optional ``torch.compile`` of each block):

- ``mae_pretrain``: MAE pretraining step (75% masking, loss on masked patches);
- ``pgd_at_finetune``: PGD-AT fine-tuning step, PGD-10 (L∞ 8/255, step 2/255) on the
  classifier followed by one training step on the adversarial batch;

for ViT-S/4 at 32×32 (``vit_small_patch4_32``, CIFAR-10) and ViT-B/16 at 224×224
(``vit_base_patch16_224``, ImageNet). Reported: images/s, step time, achieved TFLOP/s and
MFU = achieved / the bf16 matmul peak *measured on the same device in the same run* (large
square bf16 matmuls), so MFU is relative to what this GPU actually sustains, not a datasheet.

Model FLOPs are counted analytically (matmuls and attention, 2 FLOPs per multiply-add; the
usual MFU convention): a training step is 3× the forward pass (backward = 2× forward), a PGD
iteration 2× (forward + input-gradient backward, no weight gradients). ``tests/test_bench_gpu.py``
checks the forward count exactly, and the 3× / 2× rules approximately, against
``torch.utils.flop_counter.FlopCounterMode`` on a tiny ViT.

    python benchmarks/bench_gpu.py --out benchmarks/results/gpu.json      # on a GPU machine

On a machine without CUDA it writes ``{"status": "skipped", "reason": "no GPU", ...}`` and
exits 0.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust_mim.models.vit import ViTSpec, vit_spec

PGD_STEPS, PGD_EPS, PGD_STEP_SIZE = 10, 8 / 255, 2 / 255


# ----------------------------------------------------------------------------- FLOP counting


def vit_block_flops(dim: int, tokens: int, mlp_ratio: float) -> int:
    """Forward FLOPs of one pre-norm ViT block on ``tokens`` tokens: qkv, proj, MLP, QKᵀ and AV."""
    hidden = int(dim * mlp_ratio)
    linear = 2 * tokens * (3 * dim * dim + dim * dim + 2 * dim * hidden)
    attention = 2 * 2 * tokens * tokens * dim
    return linear + attention


def patch_embed_flops(spec: ViTSpec) -> int:
    """The patch-embedding convolution (kernel = stride = patch) over every patch."""
    patches = (spec.img_size // spec.patch_size) ** 2
    return 2 * patches * 3 * spec.patch_size ** 2 * spec.embed_dim


def classifier_forward_flops(spec: ViTSpec, num_classes: int) -> int:
    """Forward FLOPs per image of a ViT classifier (class token + every patch, linear head)."""
    tokens = (spec.img_size // spec.patch_size) ** 2 + 1
    blocks = spec.depth * vit_block_flops(spec.embed_dim, tokens, spec.mlp_ratio)
    return patch_embed_flops(spec) + blocks + 2 * spec.embed_dim * num_classes


def mae_forward_flops(spec: ViTSpec, mask_ratio: float = 0.75) -> int:
    """Forward FLOPs per image of `robust_mim.models.mim.MaskedAutoencoder`.

    All patches are embedded; the encoder sees the class token and the ``1 - mask_ratio``
    kept patches; the decoder sees every patch plus the class token.
    """
    patches = (spec.img_size // spec.patch_size) ** 2
    visible = 1 + int(round(patches * (1 - mask_ratio)))
    encoder = spec.depth * vit_block_flops(spec.embed_dim, visible, spec.mlp_ratio)
    decoder_in = 2 * visible * spec.embed_dim * spec.decoder_dim
    decoder = spec.decoder_depth * vit_block_flops(spec.decoder_dim, patches + 1, spec.mlp_ratio)
    pred = 2 * (patches + 1) * spec.decoder_dim * spec.patch_size ** 2 * 3
    return patch_embed_flops(spec) + encoder + decoder_in + decoder + pred


def train_step_flops(forward: int) -> int:
    """Model FLOPs of forward + backward with weight gradients (backward = 2× forward)."""
    return 3 * forward


def pgd_at_step_flops(forward: int, steps: int = PGD_STEPS) -> int:
    """PGD-``steps`` (forward + input-gradient backward each) plus one training step."""
    return steps * 2 * forward + train_step_flops(forward)


# ----------------------------------------------------------------------------- measurement


def measure_bf16_peak(device: torch.device, sizes: tuple[int, ...] = (4096, 8192), repeats: int = 20) -> float:
    """Highest sustained bf16 matmul throughput (TFLOP/s) of ``device`` over square sizes."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        seconds = time_cuda(lambda: a @ b, repeats, warmup=3)
        best = max(best, 2 * n ** 3 / seconds / 1e12)
    return best


def time_cuda(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    """Mean seconds per call of ``fn`` on the current CUDA stream (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / repeats


@dataclass(frozen=True)
class Workload:
    """One benchmarked step: its name, model, batch and model FLOPs per image."""

    name: str
    arch: str
    batch: int
    num_classes: int

    @property
    def spec(self) -> ViTSpec:
        return vit_spec(self.arch)

    def flops_per_image(self) -> int:
        if self.name == "mae_pretrain":
            return train_step_flops(mae_forward_flops(self.spec))
        return pgd_at_step_flops(classifier_forward_flops(self.spec, self.num_classes))


WORKLOADS = (
    Workload("mae_pretrain", "vit_small_patch4_32", 512, 10),
    Workload("pgd_at_finetune", "vit_small_patch4_32", 256, 10),
    Workload("mae_pretrain", "vit_base_patch16_224", 256, 1000),
    Workload("pgd_at_finetune", "vit_base_patch16_224", 64, 1000),
)


LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def _model_and_step(w: Workload, device: torch.device) -> tuple[nn.Module, LossFn]:
    """The workload's model on ``device`` and its loss function ``(model, x, y) -> loss``."""
    from robust_mim.models.classifier import ImageClassifier
    from robust_mim.models.mim import MaskedAutoencoder
    from robust_mim.models.vit import build_vit_encoder
    from robust_mim.objectives.mim import mae_objective

    mean, std = [0.5] * 3, [0.5] * 3
    if w.name == "mae_pretrain":
        return MaskedAutoencoder(w.spec, mean, std).to(device), lambda m, x, y: mae_objective(m, x, 0.75)[0]
    model = ImageClassifier(build_vit_encoder(w.spec), w.spec.embed_dim, w.num_classes, mean, std).to(device)
    return model, pgd_at_loss


def pgd_at_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Madry et al. PGD-AT: cross-entropy at a PGD-10 adversarial example (attack in eval mode)."""
    from robust_mim.attacks.core import pgd, preserved_mode

    with preserved_mode(model, training=False):
        x_adv = pgd(model, x, y, PGD_EPS, steps=PGD_STEPS, step_size=PGD_STEP_SIZE)
    return F.cross_entropy(model(x_adv), y)


def bench_workload(w: Workload, device: torch.device, peak_tflops: float, steps: int, warmup: int,
                   compile_blocks: bool) -> dict:
    """Time ``steps`` optimiser steps of ``w`` (bf16 autocast, fused AdamW) → throughput and MFU."""
    from robust_mim.engine import adamw
    from robust_mim.engine import compile_blocks as compile_regions

    torch.manual_seed(0)
    model, loss_fn = _model_and_step(w, device)
    if compile_blocks:
        compile_regions(model)
    opt = adamw(model, 1e-4, 0.05, (0.9, 0.95))
    x = torch.rand(w.batch, 3, w.spec.img_size, w.spec.img_size, device=device)
    y = torch.randint(0, w.num_classes, (w.batch,), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.reset_peak_memory_stats(device)
    seconds = time_cuda(step, steps, warmup)
    achieved = w.flops_per_image() * w.batch / seconds / 1e12
    return {"workload": w.name, "arch": w.arch, "batch": w.batch, "step_ms": round(seconds * 1e3, 2),
            "images_per_s": round(w.batch / seconds, 1), "model_gflops_per_image": round(w.flops_per_image() / 1e9, 3),
            "achieved_tflops": round(achieved, 1), "mfu": round(achieved / peak_tflops, 4),
            "max_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)}


# ----------------------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu.json"), help="JSON result path")
    parser.add_argument("--steps", type=int, default=20, help="timed optimiser steps per workload")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (allocator, autotuning, compile)")
    parser.add_argument("--compile", action="store_true", help="torch.compile each transformer block")
    parser.add_argument("--only", default=None, help="substring filter on '<workload>/<arch>'")
    return parser.parse_args(argv)


def environment() -> dict:
    return {"torch": torch.__version__, "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "timm_fused_attention": _timm_fused_attention()}


def _timm_fused_attention() -> bool:
    import timm.layers
    return bool(timm.layers.use_fused_attn())


def run(args: argparse.Namespace) -> dict:
    """All selected workloads on the current CUDA device, against its measured bf16 peak."""
    from robust_mim.engine import enable_tf32

    device = torch.device("cuda")
    enable_tf32(True)
    peak = measure_bf16_peak(device)
    chosen = [w for w in WORKLOADS if args.only is None or args.only in f"{w.name}/{w.arch}"]
    results = []
    for w in chosen:
        results.append(bench_workload(w, device, peak, args.steps, args.warmup, args.compile))
        print_row(results[-1])
    return {"status": "ok", "device": torch.cuda.get_device_name(device), "measured_bf16_peak_tflops": round(peak, 1),
            "compile": args.compile, "steps": args.steps, "results": results, **environment()}


def print_row(r: dict) -> None:
    print(f"{r['workload']:<16} {r['arch']:<22} batch {r['batch']:>4}  {r['images_per_s']:>9.1f} img/s  "
          f"{r['achieved_tflops']:>6.1f} TFLOP/s  MFU {100 * r['mfu']:5.1f}%  {r['max_memory_gb']:.1f} GB", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if torch.cuda.is_available():
        result = run(args)
    else:
        result = {"status": "skipped", "reason": "no GPU", **environment()}
        print("bench_gpu: no CUDA GPU visible; nothing measured (skipped)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
