"""Spec → objects: the only place where configuration values become library calls."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset

import robust_mim.distributed as distributed
from robust_mim.checkpoints import load_strict
from robust_mim.data import check_dataset, evaluation_subset, first_examples, load_dataset, num_classes
from robust_mim.distributed import DistContext
from robust_mim.engine import TrainConfig, pick_device
from robust_mim.models.classifier import ImageClassifier
from robust_mim.models.mim import MaskedAutoencoder
from robust_mim.models.vit import build_vit_encoder, vit_spec
from robust_mim.records import config_hash, make_record, provenance, write_record

Log = Callable[[str], None]
# a training command's work: (args, spec, process context, its device, log of the main process only)
TrainingBody = Callable[[argparse.Namespace, dict[str, Any], DistContext, torch.device, Log], None]

# (flag, help) of where an evaluation command writes: one record, or a folder of records
OUT_RECORD = ("--out", "the record (.json)")
OUT_DIR = ("--out-dir", "folder for one JSON record per attack + sanity.json")
# optimiser keys the schema leaves without a `default` (its description states it; the value is
# TrainConfig's): a run that does not set them keeps the job spec, and so the hash, it had before them
OPTIMISER_KEYS = ("optimizer", "momentum", "nesterov", "schedule", "lr_milestones", "lr_gamma")


def make_logger(path: str | None) -> Log:
    """A ``log(line)`` that appends timestamped lines to ``path`` (stdout when None)."""
    def log(line: str) -> None:
        stamped = f"[{time.strftime('%H:%M:%S')}] {line}"
        if path is None:
            print(stamped, flush=True)
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(stamped + "\n")
    return log


def dataset(spec: dict[str, Any], split: str) -> Dataset:
    """One split of the spec's dataset, after `check_dataset` has checked the whole dataset's folders."""
    d = spec["data"]
    check_dataset(d["name"], d["root"], d.get("download", False))
    return load_dataset(d["name"], d["root"], split, d["image_size"], d.get("download", False))


def first_test_examples(spec: dict[str, Any], n: int | None) -> tuple[Tensor, Tensor, int]:
    """The ``n`` evaluation images [n, 3, H, W] of the test split (all when None; `evaluation_indices`: the first
    n, class-stratified for a class-sorted folder), their labels [n], and the number of classes."""
    test_set = dataset(spec, "test")
    x, y = first_examples(test_set, n)
    return x, y, num_classes(test_set)


def evaluated_subset(spec: dict[str, Any], n: int | None) -> dict[str, Any]:
    """Which ``n`` test examples `first_test_examples` takes, for the provenance of a record evaluated on them."""
    return evaluation_subset(dataset(spec, "test"), n)


def device(spec: dict[str, Any]) -> torch.device:
    return pick_device(spec.get("device", "auto"))


def build_classifier(spec: dict[str, Any], n_classes: int) -> ImageClassifier:
    """The profile's ViT classifier (normalisation from ``data.mean``/``data.std``), or the
    registered ResNet that the run names in ``backbone`` (paper 4, `robust_mim.papers.chen.objective`)."""
    if spec.get("run", {}).get("backbone"):
        from robust_mim.models.resnet import build_backbone_classifier
        d = spec["data"]
        return build_backbone_classifier(spec["run"]["backbone"], n_classes, d["image_size"], d["mean"], d["std"])
    arch = vit_spec(spec["model"]["arch"])
    backbone = build_vit_encoder(arch, drop_path_rate=spec["model"].get("drop_path", 0.0))
    return ImageClassifier(backbone, arch.embed_dim, n_classes, spec["data"]["mean"], spec["data"]["std"])


def build_mae(spec: dict[str, Any]) -> MaskedAutoencoder:
    run = spec.get("run", {})
    return MaskedAutoencoder(vit_spec(spec["model"]["arch"]), spec["data"]["mean"], spec["data"]["std"],
                             norm_pix_loss=run.get("norm_pix_loss", False))


def arch_name(spec: dict[str, Any]) -> str:
    """The configured architecture in words: the run's ResNet ``backbone`` or the profile's ``model.arch``."""
    backbone = spec.get("run", {}).get("backbone")
    return f"backbone {backbone}" if backbone else f"model.arch {spec['model']['arch']}"


def load_classifier(spec: dict[str, Any], weights: str, n_classes: int) -> ImageClassifier:
    """The configured classifier with ``weights``; MAE weights or another architecture is a CheckpointError."""
    return load_strict(build_classifier(spec, n_classes), weights, "classifier", arch_name(spec)).eval()


def load_mae(spec: dict[str, Any], weights: str) -> MaskedAutoencoder:
    """The configured MAE with ``weights``; classifier weights or another architecture is a CheckpointError."""
    return load_strict(build_mae(spec), weights, "mae", f"model.arch {spec['model']['arch']}").eval()


def train_config(spec: dict[str, Any], num_classes: int | None = None) -> TrainConfig:
    """Run settings → TrainConfig; the learning rate follows MAE's rule lr = blr · batch / 256.

    ``batch_size`` is the global batch (all processes together); ``num_classes`` enables the
    fine-tuning label options (MixUp, CutMix, label smoothing).
    """
    run = spec["run"]
    return TrainConfig(
        epochs=run["epochs"], batch_size=run["batch_size"], lr=run["blr"] * run["batch_size"] / 256,
        weight_decay=run["weight_decay"], warmup_epochs=run["warmup_epochs"], min_lr=run.get("min_lr", 0.0),
        betas=tuple(run.get("betas", (0.9, 0.95))), grad_clip=run.get("grad_clip"), seed=spec["seed"],
        augment=run.get("augment", "none"), amp=run.get("amp", False), cpu_amp=run.get("cpu_amp", False),
        num_workers=spec["data"].get("num_workers", 0), tf32=run.get("tf32", True),
        compile=run.get("compile", False), layer_decay=run.get("layer_decay", 1.0),
        mixup_alpha=run.get("mixup_alpha", 0.0), cutmix_alpha=run.get("cutmix_alpha", 0.0),
        label_smoothing=run.get("label_smoothing", 0.0), num_classes=num_classes,
        **{k: tuple(run[k]) if k == "lr_milestones" else run[k] for k in OPTIMISER_KEYS if k in run},
    )


def lr_rule(spec: dict[str, Any]) -> str:
    """The learning-rate scaling rule of this run in words (logged at the start of training)."""
    run = spec["run"]
    return (f"lr = blr {run['blr']:.3g} x global batch {run['batch_size']} / 256 = "
            f"{run['blr'] * run['batch_size'] / 256:.4g} (MAE's linear scaling rule); "
            f"{run.get('optimizer', 'adamw')}, {run.get('schedule', 'cosine')} schedule")


def launch(spec: dict[str, Any], gpus: int, log: Log) -> tuple[DistContext, torch.device]:
    """Set up this training process: torchrun's environment, its device, the process group.

    A plain ``python`` launch is one process. Under ``torchrun`` each process takes
    ``cuda:<local rank>`` (Gloo on the CPU when no GPU is visible: a warning, not an error)
    and its share of the torch threads.
    """
    ctx = distributed.context_from_env()
    distributed.per_rank_batch(spec["run"]["batch_size"], ctx.world_size)  # fail before any process waits
    dev, warning = distributed.rank_device(ctx, spec.get("device", "auto"), gpus)
    if warning and ctx.is_main:
        log(f"warning: {warning}")
    if ctx.local_world_size > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // ctx.local_world_size))
    distributed.init_process_group(ctx, dev)
    return ctx, dev


def add_training_args(p: argparse.ArgumentParser) -> None:
    """``--run-dir``, ``--gpus`` and ``--log-file``: the arguments of a command that `run_training` runs."""
    p.add_argument("--run-dir", required=True, help="folder for checkpoint.pt and metrics.jsonl")
    p.add_argument("--gpus", type=int, default=0, help="GPUs the job was given (Snakemake resource gpu)")
    p.add_argument("--log-file", dest="log", help="same as --log (torchrun's parser rejects --log as ambiguous)")


def run_training(args: argparse.Namespace, body: TrainingBody) -> None:
    """Run a training command's ``body`` in this process, plain ``python`` or one of torchrun's.

    Sets the process up with `launch`, seeds torch's global RNG with the spec's seed (the model's
    initial weights are drawn before the engine takes over the random streams, so two runs of one
    spec, and every rank of one run, start from the same weights), hands ``body`` a log that only
    the main process writes, and shuts the process group down however ``body`` ends.
    """
    spec, log = args.spec, make_logger(args.log)
    ctx, device = launch(spec, args.gpus, log)
    torch.manual_seed(spec["seed"])
    try:
        body(args, spec, ctx, device, log if ctx.is_main else (lambda line: None))
    finally:
        distributed.shutdown()


def add_model_args(p: argparse.ArgumentParser, out: tuple[str, str] = OUT_RECORD) -> None:
    """``--weights`` and ``--model-id`` of the evaluated classifier, and ``out`` = (flag, help) for its output."""
    p.add_argument("--weights", required=True, help="classifier weights (.safetensors)")
    p.add_argument("--model-id", required=True, help="stable model id used in records and tables")
    p.add_argument(out[0], required=True, help=out[1])


def seeded_generator(spec: dict[str, Any], dev: torch.device) -> torch.Generator:
    """A generator on ``dev`` seeded with the spec's seed; torch's global RNG is seeded too (for
    draws that take no generator), so an evaluation is the same on every run."""
    generator = torch.Generator(device=dev).manual_seed(spec["seed"])
    torch.manual_seed(spec["seed"])
    return generator


def failed_checks(checks: list[dict[str, Any]]) -> list[str]:
    """Names of the sanity checks that failed (``passed`` False; None means the check did not apply)."""
    return [c["check"] for c in checks if c["passed"] is False]


def write_attack_records(args: argparse.Namespace, spec: dict[str, Any], results: list[dict[str, Any]],
                         checks: list[dict[str, Any]], n: int, dev: str, *, shared: dict[str, Any],
                         fields: Callable[[dict[str, Any]], dict[str, Any]], sanity: str) -> None:
    """One record per attack result in ``args.out_dir`` (``<evaluation>.json``) and one of the sanity checks.

    Args:
        results: `run_suite` / `run_evaluation` results of model ``args.model_id`` on the ``n`` images of
            `first_test_examples` (recorded in each record's provenance, `evaluated_subset`).
        checks: their sanity checks (the rows of ``sanity.json``, whose evaluation is ``sanity``).
        shared: fields of every record (paper, method, sanity_checks...), after the result's own ``fields(r)``.
    """
    out, subset = Path(args.out_dir), evaluated_subset(spec, n)
    for r in results:
        write_record(out / f"{r['evaluation']}.json", make_record(
            args.model_id, r["evaluation"], spec["profile"], r["rows"], n_examples=n, params=r["params"],
            provenance=provenance(spec, spec["seed"], dev, r.get("wall_time_s", 0.0), subset), **fields(r), **shared))
    rows = [{"check": c["check"], "passed": c["passed"], "details": c.get("details", {})} for c in checks]
    write_record(out / "sanity.json", make_record(
        args.model_id, sanity, spec["profile"], rows, n_examples=n, params={},
        provenance=provenance(spec, spec["seed"], dev, 0.0, subset), **shared))


def run_hash(spec: dict[str, Any]) -> str:
    """Identity of a training run for checkpoints (speed-only settings do not change it)."""
    run = {k: v for k, v in spec.get("run", {}).items() if k != "compile"}
    return config_hash({**spec, "run": run})


def n_classes_of(spec: dict[str, Any], train_set: Dataset) -> int:
    return num_classes(train_set)
