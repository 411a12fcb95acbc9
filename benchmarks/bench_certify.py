"""Certification throughput: batched ``Smooth.certify`` vs a per-sample loop.

Both certify the same images with the same model (``--model``: a small CIFAR CNN at 32x32, or
the smoke profile's micro ViT at 16x16), N0, N and α. The reference loop draws
one noise sample per forward pass with autograd left on, the way a first implementation
often looks; ``Smooth.certify`` draws ``--batch-size`` samples per forward pass under
``torch.inference_mode()``. Throughput is noise samples (N0 + N per image) per second. Each
contender is warmed up on one image, then the two alternate for ``--repeats`` rounds; the
median is reported.

    python benchmarks/bench_certify.py --out benchmarks/results/certify.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from scipy.stats import norm
from torch import nn

from robust_mim.certify import ABSTAIN, Smooth, lower_confidence_bound


def small_cnn(num_classes: int = 10) -> nn.Module:
    """A small CIFAR-sized CNN: [B, 3, 32, 32] → logits [B, num_classes]."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


def smoke_vit(num_classes: int = 10) -> nn.Module:
    """The smoke profile's certified model: ``vit_micro_patch4_16`` (16x16 inputs, normalisation inside)."""
    from robust_mim.models.classifier import ImageClassifier
    from robust_mim.models.vit import build_vit_encoder, vit_spec

    spec = vit_spec("vit_micro_patch4_16")
    return ImageClassifier(build_vit_encoder(spec), spec.embed_dim, num_classes, (0.5,) * 3, (0.5,) * 3)


# name -> (builder, input size or None for --image-size)
MODELS: dict[str, tuple] = {"cnn": (small_cnn, None), "vit": (smoke_vit, 16)}


def certify_per_sample(model: nn.Module, x: torch.Tensor, num_classes: int, sigma: float,
                       n0: int, n: int, alpha: float) -> tuple[int, float]:
    """CERTIFY with one noise draw per forward pass and no inference mode (the baseline)."""
    def counts(num: int) -> list[int]:
        tally = [0] * num_classes
        for _ in range(num):
            noisy = x + sigma * torch.randn_like(x)  # [3, H, W]
            tally[int(model(noisy.unsqueeze(0)).argmax())] += 1
        return tally

    selection = counts(n0)
    c_a = max(range(num_classes), key=selection.__getitem__)
    p_a = lower_confidence_bound(counts(n)[c_a], n, alpha)
    return (ABSTAIN, 0.0) if p_a < 0.5 else (c_a, sigma * float(norm.ppf(p_a)))


def time_certify(fn, images: torch.Tensor) -> float:
    """Seconds to run ``fn(image)`` on every image."""
    start = time.perf_counter()
    for image in images:
        fn(image)
    return time.perf_counter() - start


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="cnn",
                        help="cnn: a small CIFAR CNN; vit: the smoke profile's micro ViT at 16x16 (fixes the size)")
    parser.add_argument("--num-images", type=int, default=2)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/certify.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    build, size = MODELS[args.model]
    size = size or args.image_size
    model = build().eval().to(device)
    images = torch.rand(args.num_images, 3, size, size, device=device)
    smooth = Smooth(model, num_classes=10, sigma=args.sigma)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    samples = args.num_images * (args.n0 + args.n)

    contenders = {
        "batched": lambda im: smooth.certify(im, args.n0, args.n, args.alpha, args.batch_size, gen),
        "per_sample_loop": lambda im: certify_per_sample(model, im, 10, args.sigma, args.n0, args.n, args.alpha)}
    for fn in contenders.values():
        time_certify(fn, images[:1])  # warm-up: oneDNN primitives, allocations
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):  # alternate, so a change in machine load hits both
        for name, fn in contenders.items():
            runs[name].append(time_certify(fn, images))
    batched_s, loop_s = statistics.median(runs["batched"]), statistics.median(runs["per_sample_loop"])
    result = {
        "benchmark": "certify_throughput",
        "model": {"cnn": "small_cnn (3 conv + linear)", "vit": "vit_micro_patch4_16 (smoke)"}[args.model],
        "model_key": args.model, "images": args.num_images, "image_size": size, "n0": args.n0, "n": args.n,
        "alpha": args.alpha, "sigma": args.sigma, "batch_size": args.batch_size,
        "noise_samples": samples,
        "repeats": args.repeats,
        "batched": {"seconds": batched_s, "samples_per_s": samples / batched_s, "runs_s": runs["batched"]},
        "per_sample_loop": {"seconds": loop_s, "samples_per_s": samples / loop_s, "runs_s": runs["per_sample_loop"]},
        "speedup": loop_s / batched_s,
        "device": str(device), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "platform": platform.platform(), "seed": args.seed,
        "load_average_1min": os.getloadavg()[0],
    }
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(result: dict) -> None:
    print(f"{'method':<18}{'seconds':>10}{'samples/s':>14}")
    for name in ("per_sample_loop", "batched"):
        row = result[name]
        print(f"{name:<18}{row['seconds']:>10.2f}{row['samples_per_s']:>14.0f}")
    print(f"speedup (batched / loop): {result['speedup']:.1f}x "
          f"over {result['noise_samples']} noise samples")


if __name__ == "__main__":
    main()
