"""Official AutoAttack (standard): ``robust_mim.attacks.autoattack.autoattack`` vs calling ``pyautoattack`` directly.

Both run AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square) with the same seed,
ε and budget on the same model and images. Ours runs the four attacks one at a time on the
points still robust (as AutoAttack does internally), saves its resumable state after each
(``--state``, on by default: the cost of resumability is part of what is measured), records
AutoAttack's check flags and returns per-example correctness; the baseline is
``AutoAttack(...).run_standard_evaluation(x, y, batch_size=...)``. The robust accuracy each
reaches is printed: equal numbers show they do the same attack. ``ratio`` = baseline time ÷
ours (≥ 0.95: the wrapper costs nothing). Models: the smoke profile's micro ViT at 16x16
(``vit``) and a CIFAR-sized CNN at 32x32 (``cnn``), random weights; labels are the model's own
predictions (clean accuracy 100%). Timing: `benchmarks.interleaved_times` (warm-up, alternating
order, median).

    python -m benchmarks.bench_autoattack --model vit --out benchmarks/results/autoattack.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks import interleaved_times, median, spread
from benchmarks.bench_pgd import calibrate_batchnorm, small_cnn
from robust_mim.attacks.core import predict_labels
from robust_mim.attacks.autoattack import autoattack, package_version
from robust_mim.io import atomic_write_text

OURS, DIRECT = "robust_mim.attacks.autoattack.autoattack", "pyautoattack AutoAttack.run_standard_evaluation"


def smoke_vit() -> nn.Module:
    """The smoke profile's classifier: ``vit_micro_patch4_16`` (normalisation inside), 10 classes."""
    from robust_mim.models.classifier import ImageClassifier
    from robust_mim.models.vit import build_vit_encoder, vit_spec

    spec = vit_spec("vit_micro_patch4_16")
    return ImageClassifier(build_vit_encoder(spec), spec.embed_dim, 10, (0.5,) * 3, (0.5,) * 3)


MODELS = {"vit": (smoke_vit, 16), "cnn": (small_cnn, 32)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="vit")
    parser.add_argument("--n-examples", type=int, default=64)
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--apgd-steps", type=int, default=100)
    parser.add_argument("--target-classes", type=int, default=9)
    parser.add_argument("--fab-steps", type=int, default=100)
    parser.add_argument("--square-queries", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-state", action="store_true", help="ours without its resumable state file")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/autoattack.json"))
    return parser.parse_args(argv)


def contenders(args: argparse.Namespace, model: nn.Module, x: torch.Tensor, y: torch.Tensor, tmp: Path) -> dict:
    """The two timed callables (each returns x_adv); ours with a fresh state file per call."""
    budget = {"apgd_steps": args.apgd_steps, "n_target_classes": args.target_classes, "fab_steps": args.fab_steps,
              "square_queries": args.square_queries, "eot_iter": 20}
    calls = iter(range(10**6))

    def ours() -> torch.Tensor:
        state = None if args.no_state else tmp / f"state-{next(calls)}.pt"
        return autoattack(model, x, y, args.eps, version="standard", seed=args.seed, batch_size=x.shape[0],
                          state_path=state, **budget)[0]

    def direct() -> torch.Tensor:  # pyautoattack as its README calls it, with the same budget
        from pyautoattack import AutoAttack

        adversary = AutoAttack(model, norm="Linf", eps=args.eps, version="standard", seed=args.seed, device=x.device)
        adversary.apgd.n_iter = adversary.apgd_targeted.n_iter = args.apgd_steps
        adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = args.target_classes
        adversary.fab.n_iter, adversary.square.n_queries = args.fab_steps, args.square_queries
        return adversary.run_standard_evaluation(x, y, batch_size=x.shape[0])[0]

    return {OURS: ours, DIRECT: direct}


def _cpu_timed(fn, into: list[float]):
    """``fn`` that also appends the process CPU seconds of each call to ``into`` (steadier on a shared machine)."""
    def run():
        start = time.process_time()
        out = fn()
        into.append(time.process_time() - start)
        return out
    return run


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    build, size = MODELS[args.model]
    x = torch.rand(args.n_examples, 3, size, size, device=device)
    model = calibrate_batchnorm(build().to(device), x)
    y = predict_labels(model, x)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        fns = contenders(args, model, x, y, Path(tmp))
        robust = {name: (predict_labels(model, fn()) == y).float().mean().item() for name, fn in fns.items()}
        cpu: dict[str, list[float]] = {name: [] for name in fns}
        times = interleaved_times({name: _cpu_timed(fn, cpu[name]) for name, fn in fns.items()}, args.repeats,
                                  warmup=0, sync=sync)  # the accuracy pass above is the warm-up
    rows = {name: {"median_s": median(t), "runs_s": t, "spread": spread(t), "median_cpu_s": median(cpu[name]),
                   "runs_cpu_s": cpu[name], "robust_accuracy": robust[name]} for name, t in times.items()}
    result = {"benchmark": "autoattack_overhead", "model": args.model, "n_examples": args.n_examples,
              "eps": args.eps, "budget": {"apgd_steps": args.apgd_steps, "n_target_classes": args.target_classes,
                                          "fab_steps": args.fab_steps, "square_queries": args.square_queries},
              "state_file": not args.no_state, "pyautoattack": package_version(), "repeats": args.repeats,
              "results": rows, "ratio": rows[DIRECT]["median_s"] / rows[OURS]["median_s"], "target_ratio": 0.95,
              "ratio_cpu_time": rows[DIRECT]["median_cpu_s"] / rows[OURS]["median_cpu_s"],
              "device": str(device), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
              "platform": platform.platform(), "seed": args.seed, "load_average_1min": os.getloadavg()[0]}
    print_table(result)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    return result


def print_table(result: dict) -> None:
    b = result["budget"]
    print(f"AutoAttack standard L-inf eps={result['eps'] * 255:g}/255, model={result['model']}, "
          f"n={result['n_examples']}, APGD {b['apgd_steps']} it, {b['n_target_classes']} targets, "
          f"FAB {b['fab_steps']} it, Square {b['square_queries']} queries, device={result['device']}")
    print(f"{'contender':<50}{'median s':>10}{'spread':>8}{'CPU s':>8}{'robust acc':>12}")
    for name, row in result["results"].items():
        print(f"{name:<50}{row['median_s']:>10.2f}{row['spread']:>8.2f}{row['median_cpu_s']:>8.2f}"
              f"{row['robust_accuracy']:>12.3f}")
    print(f"ratio (direct / ours): {result['ratio']:.2f} wall-clock, {result['ratio_cpu_time']:.2f} CPU time "
          f"(target >= {result['target_ratio']})")


if __name__ == "__main__":
    main()
