"""Certification of the cifar10-cpu model: noise batch size and bf16 inference, beside the profile's setting.

``Smooth.certify`` on ``vit_micro_patch4_32`` (the model the cifar10-cpu profile certifies, random
weights) with N0, N, α and σ as given, at several ``--batch-sizes`` (noisy copies per forward pass),
in fp32 and, with ``--bf16``, under bf16 autocast. The baseline is the profile's own setting (fp32 at
``--baseline-batch-size``, the profile's ``dmae.batch_size``). Throughput is noise samples per second;
``same_result`` says whether a contender certified every image with the baseline's prediction and
radius (same seed: the same noise stream, so any difference comes from the forward pass). The
contenders alternate for ``--repeats`` rounds after one warm-up each (`benchmarks.interleaved_times`);
the median is reported.

    python -m benchmarks.bench_certify_batch --out benchmarks/results/certify_batch.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch

from benchmarks import interleaved_times, machine_info, median, spread
from robust_mim.certify import Smooth


def cifar10_cpu_vit(arch: str = "vit_micro_patch4_32", num_classes: int = 10) -> torch.nn.Module:
    """The cifar10-cpu profile's classifier (normalisation inside): [B, 3, 32, 32] → logits [B, 10]."""
    from robust_mim.models.classifier import ImageClassifier
    from robust_mim.models.vit import build_vit_encoder, vit_spec

    spec = vit_spec(arch)
    return ImageClassifier(build_vit_encoder(spec), spec.embed_dim, num_classes, (0.5,) * 3, (0.5,) * 3)


def certify_all(smooth: Smooth, images: torch.Tensor, args: argparse.Namespace, batch_size: int,
                bf16: bool) -> list[tuple[int, float]]:
    """Each image's (prediction, radius), certified with a fresh generator seeded with ``args.seed``."""
    gen = torch.Generator().manual_seed(args.seed)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with amp:
        return [smooth.certify(image, args.n0, args.n, args.alpha, batch_size, gen) for image in images]  # [3, H, W] each


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_micro_patch4_32", help="the certified ViT (cifar10-cpu's)")
    parser.add_argument("--num-images", type=int, default=2)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--batch-sizes", default="100,250,500,1000", help="comma-separated noise batch sizes")
    parser.add_argument("--baseline-batch-size", type=int, default=1000, help="the profile's dmae.batch_size")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                        help="also time each batch size under bf16 autocast")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up (median reported)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/certify_batch.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = cifar10_cpu_vit(args.arch).eval()
    images = torch.rand(args.num_images, 3, 32, 32)  # [I, 3, 32, 32]
    smooth = Smooth(model, num_classes=10, sigma=args.sigma)
    sizes = sorted({int(s) for s in args.batch_sizes.split(",")} | {args.baseline_batch_size})
    contenders = {f"{'bf16' if bf16 else 'fp32'} batch {b}": (b, bf16) for bf16 in ([False, True] if args.bf16
                                                                                   else [False]) for b in sizes}
    baseline = f"fp32 batch {args.baseline_batch_size}"
    certified: dict[str, list[tuple[int, float]]] = {}

    def contender(name: str, b: int, bf16: bool):
        return lambda: certified.__setitem__(name, certify_all(smooth, images, args, b, bf16))

    times = interleaved_times({name: contender(name, *c) for name, c in contenders.items()}, args.repeats)
    samples = args.num_images * (args.n0 + args.n)
    base_s = median(times[baseline])
    table = {name: {"batch_size": b, "bf16": bf16, "seconds": median(times[name]),
                    "samples_per_s": samples / median(times[name]), "runs_s": times[name],
                    "spread": spread(times[name]), "ratio": base_s / median(times[name]),
                    "same_result": certified[name] == certified[baseline]}
             for name, (b, bf16) in contenders.items()}
    best = max(table, key=lambda k: table[k]["ratio"])
    result = {
        "benchmark": "certify_batch", "model": args.arch, "images": args.num_images, "n0": args.n0, "n": args.n,
        "alpha": args.alpha, "sigma": args.sigma, "noise_samples": samples, "repeats": args.repeats,
        "baseline": baseline, "results": table, "best": best, "ratio": table[best]["ratio"], "seed": args.seed,
        **machine_info(),
    }
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(result: dict) -> None:
    print(f"{'contender':<18}{'samples/s':>12}{'ratio':>8}  same result as {result['baseline']}")
    for name, row in result["results"].items():
        print(f"{name:<18}{row['samples_per_s']:>12.0f}{row['ratio']:>8.2f}  {row['same_result']}")


if __name__ == "__main__":
    main()
