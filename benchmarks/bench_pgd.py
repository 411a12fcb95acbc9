"""PGD-10 throughput: ``robust_mim.attacks.core.pgd`` vs ART's two PGD implementations.

All attack the same model and batch with the same L∞ budget (ε = 8/255, step 2/255, 10 steps,
one random start). The baselines: ART's ``ProjectedGradientDescentPyTorch`` (the one ART picks
for a PyTorch model: it keeps each batch in torch between steps) and ART's framework-agnostic
``ProjectedGradientDescentNumpy`` (every step round-trips through numpy: gradient to numpy,
update and projection in numpy, back to torch for the next forward). The headline ``ratio`` is
against the stronger, torch-native baseline; ``ratio_numpy`` against the numpy one. ART's attack
objects and classifier are built outside the timed region, so only ``generate`` (numpy in/out,
as ART works) is timed. Our PGD takes gradients w.r.t. the input only
(``torch.autograd.grad`` with the weights frozen), while ART calls ``loss.backward()``, which
also computes every parameter gradient. Each attack is warmed up once, then the two alternate for
``--repeats`` rounds; the median is reported, with the robust accuracy each attack reaches
(labels are the model's own predictions, so clean accuracy is 100%) to show they do the same
work. Besides wall-clock throughput the process CPU time is recorded, which is steadier when
the machine is shared. The random-weight model's batch-norm statistics are set from the batch.

    python benchmarks/bench_pgd.py --out benchmarks/results/pgd.json [--device cuda] [--model vit]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from robust_mim.attacks.art import art_classifier
from robust_mim.attacks.core import pgd, predict_labels
from robust_mim.io import atomic_write_text

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def small_cnn(num_classes: int = 10) -> nn.Module:
    """A CIFAR-sized CNN with normalisation inside: [B, 3, 32, 32] in [0, 1] → logits [B, K]."""
    from robust_mim.models.classifier import Normalize

    return nn.Sequential(
        Normalize(CIFAR_MEAN, CIFAR_STD),
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))


def micro_vit(num_classes: int = 10) -> nn.Module:
    """The project's ``vit_micro_patch4_32`` classifier (normalisation inside)."""
    from robust_mim.models.classifier import ImageClassifier
    from robust_mim.models.vit import build_vit_encoder, vit_spec

    spec = vit_spec("vit_micro_patch4_32")
    return ImageClassifier(build_vit_encoder(spec), spec.embed_dim, num_classes, CIFAR_MEAN, CIFAR_STD)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set batch-norm running statistics from ``x`` so a random-weight model is input-sensitive (eval mode after)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration passes
    model.train()(x)
    return model.eval()


MODELS: dict[str, Callable[[], nn.Module]] = {"cnn": small_cnn, "vit": micro_vit}
OURS, ART_TORCH, ART_NUMPY = ("robust_mim.attacks.core.pgd", "ART ProjectedGradientDescentPyTorch",
                              "ART ProjectedGradientDescentNumpy")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[float, float, torch.Tensor]:
    """(wall seconds, process CPU seconds, output) of one call, synchronising the device around it."""
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu, out


def measure(attacks: dict[str, Callable[[], torch.Tensor]], model: nn.Module, y: torch.Tensor, repeats: int,
            device: torch.device) -> dict[str, dict]:
    """Warm each attack up once, then time ``repeats`` rounds, alternating the attacks within a round
    (so a change in machine load hits both): medians, throughput and the robust accuracy reached."""
    for fn in attacks.values():
        fn()  # warm-up: allocations, cuDNN autotuning, lazy imports
    runs: dict[str, list] = {name: [] for name in attacks}
    for _ in range(repeats):
        for name, fn in attacks.items():
            runs[name].append(timed(fn, device))
    rows = {}
    for name, timings in runs.items():
        wall, cpu = [r[0] for r in timings], [r[1] for r in timings]
        rows[name] = {"median_s": statistics.median(wall), "runs_s": wall, "median_cpu_s": statistics.median(cpu),
                      "examples_per_s": y.shape[0] / statistics.median(wall),
                      "robust_accuracy": (predict_labels(model, timings[-1][2]) == y).float().mean().item()}
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="cnn")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--step-size", type=float, default=2 / 255)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pgd.json"))
    return parser.parse_args(argv)


def make_attacks(args: argparse.Namespace, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """The three timed callables: ours on tensors, ART's two ``generate`` on numpy arrays."""
    from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_numpy import (
        ProjectedGradientDescentNumpy)
    from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_pytorch import (
        ProjectedGradientDescentPyTorch)

    gen = torch.Generator(device=x.device).manual_seed(args.seed)
    budget = {"norm": np.inf, "eps": args.eps, "eps_step": args.step_size, "max_iter": args.steps,
              "num_random_init": 1, "batch_size": args.batch_size, "verbose": False}
    art_torch = ProjectedGradientDescentPyTorch(art_classifier(model, x), **budget)
    art_numpy = ProjectedGradientDescentNumpy(art_classifier(model, x), **budget)
    x_np, y_np = x.cpu().numpy(), y.cpu().numpy()
    return {OURS: lambda: pgd(model, x, y, args.eps, steps=args.steps, step_size=args.step_size, generator=gen),
            ART_TORCH: lambda: torch.from_numpy(art_torch.generate(x=x_np, y=y_np)).to(x.device),
            ART_NUMPY: lambda: torch.from_numpy(art_numpy.generate(x=x_np, y=y_np)).to(x.device)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = torch.device(args.device)
    x = torch.rand(args.batch_size, 3, 32, 32, device=device)
    model = calibrate_batchnorm(MODELS[args.model]().to(device), x)
    y = predict_labels(model, x)  # clean accuracy 100% by construction
    attacks = make_attacks(args, model, x, y)
    rows = measure(attacks, model, y, args.repeats, device)
    ours, art, art_numpy = rows[OURS], rows[ART_TORCH], rows[ART_NUMPY]
    result = {
        "benchmark": "pgd_throughput", "model": args.model, "batch_size": args.batch_size, "steps": args.steps,
        "eps": args.eps, "step_size": args.step_size, "norm": "linf", "random_start": True,
        "repeats": args.repeats, "results": rows, "ratio": ours["examples_per_s"] / art["examples_per_s"],
        "ratio_cpu_time": art["median_cpu_s"] / ours["median_cpu_s"],
        "ratio_numpy": ours["examples_per_s"] / art_numpy["examples_per_s"], "target_ratio": 1.5, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "platform": platform.platform(),
        "seed": args.seed, "load_average_1min": os.getloadavg()[0],
    }
    print_table(result)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    return result


def print_table(result: dict) -> None:
    print(f"PGD-{result['steps']} L-inf eps={result['eps'] * 255:g}/255, model={result['model']}, "
          f"batch={result['batch_size']}, device={result['device']}")
    print(f"{'attack':<38}{'median s':>10}{'examples/s':>12}{'robust acc':>12}")
    for name, row in result["results"].items():
        print(f"{name:<38}{row['median_s']:>10.3f}{row['examples_per_s']:>12.1f}{row['robust_accuracy']:>12.3f}")
    print(f"ratio (ours / ART PyTorch): {result['ratio']:.2f}x wall-clock, {result['ratio_cpu_time']:.2f}x CPU time; "
          f"ours / ART numpy: {result['ratio_numpy']:.2f}x (target >= {result['target_ratio']})")


if __name__ == "__main__":
    main()
