"""``pretrain`` and ``finetune``: the two training commands, both on `robust_mim.engine.fit`."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from robust_mim.checkpoints import read_weights
from robust_mim.cli import command
from robust_mim.cli import common
from robust_mim.cli.artifacts import save_artifact, weights_metadata
from robust_mim.cli.common import Log
from robust_mim.distributed import DistContext
from robust_mim.engine import fit
from robust_mim.models.classifier import load_encoder
from robust_mim.objectives import FINETUNE, PRETRAIN, build_step
from robust_mim.papers import register_objectives


def _pretrain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="final weights (.safetensors)")
    common.add_training_args(p)


@command("pretrain", _pretrain_args)
def pretrain(args: argparse.Namespace) -> None:
    """Pretrain a masked autoencoder with the run's objective (MAE, NIM, DMAE, MIMIR)."""
    common.run_training(args, _pretrain)


def _pretrain(args: argparse.Namespace, spec: dict, ctx: DistContext, device: torch.device, log: Log) -> None:
    train_set = common.dataset(spec, "train")
    mae = common.build_mae(spec)
    register_objectives()
    step = build_step(PRETRAIN, spec["run"]["objective"])
    log(f"pretrain {spec['run']['id']}: {spec['run']['objective']} on {len(train_set)} images; {common.lr_rule(spec)}")
    fit(mae, step, train_set, common.train_config(spec), Path(args.run_dir), run_hash=common.run_hash(spec),
        device=device, log=log, dist=ctx)
    if ctx.is_main:
        save_artifact(mae.state_dict(), args.out, weights_metadata(spec, "mae", args.out))


def _finetune_args(p: argparse.ArgumentParser) -> None:
    _pretrain_args(p)
    p.add_argument("--init", default=None, help="pretrained MAE weights whose encoder initialises the backbone")
    p.add_argument("--denoiser", default=None, help="frozen MAE used to denoise inputs (De³ fine-tuning)")
    p.add_argument("--vq", default=None, help="frozen VQ autoencoder of DAT (paper 5), from train-vq")


@command("finetune", _finetune_args)
def finetune(args: argparse.Namespace) -> None:
    """Train a classifier, from scratch or from a pretrained encoder, with the run's method."""
    common.run_training(args, _finetune)


def _finetune(args: argparse.Namespace, spec: dict, ctx: DistContext, device: torch.device, log: Log) -> None:
    train_set = common.dataset(spec, "train")
    n_classes = common.n_classes_of(spec, train_set)
    model = common.build_classifier(spec, n_classes)
    if args.init:
        load_encoder(model, read_weights(args.init, "encoder"), prefix="encoder.", source=f"'{args.init}'")
        log(f"encoder initialised from {args.init}")
    if spec["run"].get("frozen_blocks"):  # partial fine-tuning (paper 4's F1/F2); before the optimizer exists
        _freeze_pretrained(model, spec["run"]["frozen_blocks"], args.init, log)
    aux = {"denoiser": common.load_mae(spec, args.denoiser).to(device) if args.denoiser else None,
           "vq": _load_vq(args.vq).to(device) if args.vq else None}
    register_objectives()
    step = build_step(FINETUNE, spec["run"]["method"], **{k: v for k, v in aux.items() if v is not None})
    log(f"finetune {spec['run']['id']}: {spec['run']['method']} on {len(train_set)} images; {common.lr_rule(spec)}")
    fit(model, step, train_set, common.train_config(spec, n_classes), Path(args.run_dir),
        run_hash=common.run_hash(spec), device=device, log=log, dist=ctx)
    if ctx.is_main:
        meta = weights_metadata(spec, "classifier", args.out, num_classes=n_classes,
                                class_names=getattr(train_set, "classes", None),
                                aux={"denoiser": args.denoiser, "vq": args.vq})
        save_artifact(model.state_dict(), args.out, meta)


def _load_vq(path: str) -> torch.nn.Module:
    from robust_mim.models.vq import load_vq
    return load_vq(path)


def _freeze_pretrained(model: torch.nn.Module, num_blocks: int, init: str | None, log: Log) -> None:
    """Freeze the first ``num_blocks`` pretrained stages (weights and batch-norm statistics)."""
    from robust_mim.errors import ConfigError
    from robust_mim.papers.chen.objective import freeze_pretrained_blocks

    if not init:
        raise ConfigError("frozen_blocks freezes pretrained blocks: the run needs an init")
    frozen = freeze_pretrained_blocks(model, num_blocks)
    log(f"partial fine-tuning: first {num_blocks} stages frozen ({len(frozen)} parameter tensors)")
