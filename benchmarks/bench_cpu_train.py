"""CPU training throughput of the ``cifar10-cpu`` profile: data path and step options, beside plain baselines.

Three comparisons on one model (``--arch``, the profile's ``vit_micro_patch4_32`` by default), each
timed interleaved in one run (`benchmarks.interleaved_times`, median of the repeats):

- ``data``: one epoch of augmented training batches (crop with padding 4 + flip) of ``--data-images``
  images, from the PIL path (``imagefolder``: a DataLoader that decodes every image with PIL, the
  baseline) and from the in-memory path (``imagefolder-memory``: uint8 slices, `robust_mim.data.ImageTensors`);
  ratio = memory ÷ PIL images/s. ``--data-root`` names a real ImageFolder tree (e.g. the CIFAR-10
  JPEGs); without it a tree of random 32×32 JPEGs is written to a temporary folder.
- ``step`` (per workload: ``mae`` pretraining at mask 0.75, clean fine-tuning ``ce``, ``pgd_at``
  fine-tuning with PGD-``--pgd-steps``): one ``engine.train_one_epoch`` of ``--steps`` steps on
  in-memory images, as ``fp32`` (the baseline: the engine as every profile runs it on the CPU),
  ``bf16`` (``TrainConfig.cpu_amp``: bf16 autocast), ``compile`` and ``compile+bf16``
  (`robust_mim.engine.compile_blocks`, inductor) and ``fp32 2 threads``. Ratio = contender ÷ fp32.
- ``end_to_end`` (``mae``, ``ce``): the same epoch fed by the PIL path (before) and by the in-memory
  path (after), both fp32.

Every contender runs ``--threads`` torch threads (1: on a 2-core machine two 1-thread jobs side by side
beat one 2-thread job, whose threads wait for each other), except ``fp32 2 threads``. Compile time
(the first call) is reported apart. For bf16 the input gradient of one batch is compared with fp32
(share of pixels whose gradient sign agrees, cosine): the attack inside a PGD-AT step follows the sign.

    python -m benchmarks.bench_cpu_train --data-root /tmp/cifar10-jpeg --out benchmarks/results/cpu_train.json
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from benchmarks import interleaved_times, machine_info, median, spread
from robust_mim.data import ImageTensors, epoch_batches, load_dataset, random_crop_flip
from robust_mim.engine import TrainConfig, adamw, compile_blocks, train_one_epoch
from robust_mim.models.classifier import ImageClassifier
from robust_mim.models.mim import MaskedAutoencoder
from robust_mim.models.vit import build_vit_encoder, vit_spec
from robust_mim.objectives import FINETUNE, PRETRAIN, build_step

MEAN, STD, NUM_CLASSES = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 10
VARIANTS = ("fp32", "bf16", "compile", "compile+bf16", "fp32 2 threads")


def step_settings(workload: str, pgd_steps: int) -> tuple[str, dict]:
    """(registry, settings) of a workload's registered step, as the profile configures it."""
    if workload == "mae":
        return "pretrain", {"name": "mae", "mask_ratio": 0.75}
    if workload == "pgd_at":
        return "finetune", {"name": "pgd_at", "eps_255": 8, "step_255": 2, "steps": pgd_steps, "attack_mode": "eval"}
    return "finetune", {"name": "standard"}


def build(workload: str, arch: str, seed: int) -> nn.Module:
    """The model a workload trains: a `MaskedAutoencoder` (pretraining) or a ViT classifier (fine-tuning)."""
    torch.manual_seed(seed)
    spec = vit_spec(arch)
    if workload == "mae":
        return MaskedAutoencoder(spec, MEAN, STD)
    return ImageClassifier(build_vit_encoder(spec), spec.embed_dim, NUM_CLASSES, MEAN, STD)


def synthetic_images(n: int, size: int, seed: int) -> ImageTensors:
    """``n`` random uint8 images with labels (compute does not depend on content)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return ImageTensors(images, torch.randint(0, NUM_CLASSES, (n,), generator=g), [str(k) for k in range(10)])


def write_jpeg_tree(root: Path, n: int, size: int, seed: int) -> Path:
    """An ImageFolder tree ``root/train/<class>/<k>.jpg`` (and a one-image test split) of random JPEGs."""
    rng = np.random.RandomState(seed)
    from PIL import Image

    for k in range(n):
        for split in ("train", "test") if k < NUM_CLASSES else ("train",):
            folder = root / split / f"class{k % NUM_CLASSES}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.randint(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{k}.jpg")
    return root


def data_sources(root: Path, n: int, seed: int) -> dict[str, Dataset]:
    """The same ``n`` training images (a seeded sample) through the PIL path and the in-memory path."""
    pil, memory = (load_dataset(name, str(root), "train", 32) for name in ("imagefolder", "imagefolder-memory"))
    idx = torch.randperm(len(pil), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return {"PIL (imagefolder)": Subset(pil, idx.tolist()),
            "memory (imagefolder-memory)": ImageTensors(memory.images[idx], memory.labels[idx], memory.classes)}


def data_epoch(ds: Dataset, batch_size: int, epoch: list[int]) -> Callable[[], None]:
    """One epoch of training batches with the profile's augmentation (crop, padding 4, flip)."""
    def run() -> None:
        epoch[0] += 1
        for x, _ in epoch_batches(ds, batch_size, seed=0, epoch=epoch[0]):
            random_crop_flip(x, padding=4, flip=True)
    return run


def with_threads(n: int, fn: Callable[[], object]) -> Callable[[], None]:
    """``fn`` run with ``n`` torch threads (the count is restored afterwards)."""
    def run() -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            fn()
        finally:
            torch.set_num_threads(before)
    return run


def trainer(model: nn.Module, step, data: Dataset, cfg: TrainConfig) -> Callable[[], None]:
    """One ``engine.train_one_epoch`` per call (epochs cycle through the schedule)."""
    opt, epoch, cpu = adamw(model, cfg.lr, cfg.weight_decay, cfg.betas), [0], torch.device("cpu")

    def run() -> None:
        epoch[0] += 1
        train_one_epoch(model, step, data, opt, cfg, epoch[0] % cfg.epochs, cpu, progress=False)
    return run


def step_contenders(workload: str, args: argparse.Namespace, data: Dataset, cfg: TrainConfig,
                    variants: tuple[str, ...]) -> tuple[dict[str, Callable[[], None]], dict[str, float]]:
    """The timed epochs of each variant (identical initial weights), and each compiled variant's first call."""
    registry, settings = step_settings(workload, args.pgd_steps)
    step = build_step(PRETRAIN if registry == "pretrain" else FINETUNE, settings)
    base, fns, compile_s = build(workload, args.arch, args.seed), {}, {}
    for name in variants:
        model = copy.deepcopy(base).train()
        if name.startswith("compile"):
            compile_blocks(model)
        fn = trainer(model, step, data, replace(cfg, cpu_amp="bf16" in name))
        fn = with_threads(2 if name.endswith("2 threads") else args.threads, fn)
        if name.startswith("compile"):
            start = time.perf_counter()
            fn()  # inductor compiles here: reported apart, then warm-up as the others
            compile_s[name] = round(time.perf_counter() - start, 1)
        fns[name] = fn
    return fns, compile_s


def gradient_agreement(arch: str, seed: int, batch: int) -> dict[str, float]:
    """Input gradient of the cross-entropy under bf16 autocast vs fp32, on one batch of random images."""
    model = build("ce", arch, seed).eval()
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))  # [B, 3, 32, 32]
    y = torch.arange(batch) % NUM_CLASSES
    grads = []
    for bf16 in (False, True):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(xi), y)
        grads.append(torch.autograd.grad(loss, xi)[0].float().flatten())
    g32, g16 = grads
    return {"sign_agreement": float((g32.sign() == g16.sign()).float().mean()),
            "cosine": float(F.cosine_similarity(g32, g16, dim=0))}


def rows(times: dict[str, list[float]], images: int, baseline: str) -> dict[str, dict]:
    """images/s (median), every repeat, spread and the ratio to ``baseline`` of each contender."""
    out = {name: {"median_s": median(t), "runs_s": [round(v, 4) for v in t], "spread": round(spread(t), 3),
                  "images_per_s": images / median(t)} for name, t in times.items()}
    for r in out.values():
        r["ratio"] = r["images_per_s"] / out[baseline]["images_per_s"]
    return out


def bench_steps(workload: str, args: argparse.Namespace) -> dict:
    cfg = TrainConfig(epochs=1000, batch_size=args.batch_size, lr=1e-4, betas=(0.9, 0.999), seed=args.seed)
    data = synthetic_images(args.batch_size * args.steps, 32, args.seed)
    variants = tuple(v for v in VARIANTS if args.compile or not v.startswith("compile"))
    fns, compile_s = step_contenders(workload, args, data, cfg, variants)
    times = interleaved_times(fns, args.repeats, args.warmup)
    return {"workload": workload, "results": rows(times, args.batch_size * args.steps, "fp32"),
            "compile_first_call_s": compile_s}


def bench_end_to_end(workload: str, sources: dict[str, Dataset], args: argparse.Namespace) -> dict:
    """The fp32 epoch fed by each data path (the PIL path = before, memory = after)."""
    cfg = TrainConfig(epochs=1000, batch_size=args.batch_size, lr=1e-4, betas=(0.9, 0.999), seed=args.seed,
                      augment="crop_flip")
    registry, settings = step_settings(workload, args.pgd_steps)
    step = build_step(PRETRAIN if registry == "pretrain" else FINETUNE, settings)
    base = build(workload, args.arch, args.seed)
    fns = {name: with_threads(args.threads, trainer(copy.deepcopy(base).train(), step, ds, cfg))
           for name, ds in sources.items()}
    times = interleaved_times(fns, args.repeats, args.warmup)
    images = (len(next(iter(sources.values()))) // args.batch_size) * args.batch_size
    return {"workload": workload, "results": rows(times, images, next(iter(sources)))}


def run(args: argparse.Namespace, scratch: Path) -> dict:
    root = args.data_root or write_jpeg_tree(scratch / "tree", args.data_images, 32, args.seed)
    sources = data_sources(Path(root), args.data_images, args.seed)
    data_times = interleaved_times({name: with_threads(args.threads, data_epoch(ds, args.batch_size, [0]))
                                    for name, ds in sources.items()}, args.repeats, args.warmup)
    images = (args.data_images // args.batch_size) * args.batch_size
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    return {"data": {"root": str(root), "images": args.data_images,
                     "results": rows(data_times, images, "PIL (imagefolder)")},
            "steps": [bench_steps(w, args) for w in workloads],
            "end_to_end": [bench_end_to_end(w, sources, args) for w in workloads if w in ("mae", "ce")],
            "bf16_input_gradient": gradient_agreement(args.arch, args.seed, args.batch_size)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_micro_patch4_32", help="registered ViT at 32x32")
    parser.add_argument("--workloads", default="mae,ce,pgd_at", help="comma-separated: mae, ce, pgd_at")
    parser.add_argument("--pgd-steps", type=int, default=2, help="PGD steps of the pgd_at workload")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per contender (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs per contender first")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile variants")
    parser.add_argument("--data-root", type=Path, default=None, help="an ImageFolder tree (train/<class>/...)")
    parser.add_argument("--data-images", type=int, default=2048, help="training images of the data comparison")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every contender but '2 threads'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_train.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_cpu_train_") as scratch:
        result = {"benchmark": "cpu_train_throughput", "arch": args.arch, "batch_size": args.batch_size,
                  "steps_per_epoch": args.steps, "repeats": args.repeats, "pgd_steps": args.pgd_steps,
                  "threads": args.threads, **machine_info(), **run(args, Path(scratch))}
    result["ratio"] = result["data"]["results"]["memory (imagefolder-memory)"]["ratio"]
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(result: dict) -> None:
    print(f"CPU training: {result['arch']}, batch {result['batch_size']}, {result['threads']} thread(s), "
          f"{result['cpu_model']}, load {result['load_average']}")
    sections = [("data", result["data"])] + [(f"step/{s['workload']}", s) for s in result["steps"]] + \
        [(f"end-to-end/{s['workload']}", s) for s in result["end_to_end"]]
    for title, section in sections:
        for name, row in section["results"].items():
            print(f"  {title:<18}{name:<30}{row['images_per_s']:>10.0f} img/s{row['ratio']:>7.2f}x"
                  f"{row['spread']:>7.2f} spread")
        for name, seconds in section.get("compile_first_call_s", {}).items():
            print(f"  {title:<18}{name + ' first call':<30}{seconds:>10.1f} s")
    g = result["bf16_input_gradient"]
    print(f"  bf16 vs fp32 input gradient: sign agreement {g['sign_agreement']:.3f}, cosine {g['cosine']:.3f}")


if __name__ == "__main__":
    main()
