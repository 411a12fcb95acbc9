"""``pretrain`` and ``finetune``: the two training commands, both on `robust_mim.engine.fit`."""
from __future__ import annotations

import argparse
from pathlib import Path

from robust_mim.cli import command
from robust_mim.cli import common
from robust_mim.engine import fit
from robust_mim.io import load_weights, save_weights
from robust_mim.models.classifier import load_encoder
from robust_mim.objectives import FINETUNE, PRETRAIN, build_step
from robust_mim.records import config_hash


def _pretrain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="final weights (.safetensors)")
    p.add_argument("--run-dir", required=True, help="folder for checkpoint.pt and metrics.jsonl")


@command("pretrain", _pretrain_args)
def pretrain(args: argparse.Namespace) -> None:
    """Pretrain a masked autoencoder with the run's objective (MAE, NIM, DMAE, MIMIR)."""
    spec, log = args.spec, common.make_logger(args.log)
    train_set = common.dataset(spec, "train")
    mae = common.build_mae(spec)
    step = build_step(PRETRAIN, spec["run"]["objective"])
    log(f"pretrain {spec['run']['id']}: {spec['run']['objective']} on {len(train_set)} images")
    fit(mae, step, train_set, common.train_config(spec), Path(args.run_dir), run_hash=config_hash(spec),
        device=common.device(spec), log=log)
    save_weights(mae.state_dict(), args.out, {"config_hash": config_hash(spec), "kind": "mae"})


def _finetune_args(p: argparse.ArgumentParser) -> None:
    _pretrain_args(p)
    p.add_argument("--init", default=None, help="pretrained MAE weights whose encoder initialises the backbone")
    p.add_argument("--denoiser", default=None, help="frozen MAE used to denoise inputs (De³ fine-tuning)")


@command("finetune", _finetune_args)
def finetune(args: argparse.Namespace) -> None:
    """Train a classifier, from scratch or from a pretrained encoder, with the run's method."""
    spec, log = args.spec, common.make_logger(args.log)
    train_set = common.dataset(spec, "train")
    model = common.build_classifier(spec, common.n_classes_of(spec, train_set))
    if args.init:
        load_encoder(model, load_weights(args.init), prefix="encoder.")
        log(f"encoder initialised from {args.init}")
    aux = {"denoiser": common.load_mae(spec, args.denoiser).to(common.device(spec)) if args.denoiser else None}
    step = build_step(FINETUNE, spec["run"]["method"], **{k: v for k, v in aux.items() if v is not None})
    log(f"finetune {spec['run']['id']}: {spec['run']['method']} on {len(train_set)} images")
    fit(model, step, train_set, common.train_config(spec), Path(args.run_dir), run_hash=config_hash(spec),
        device=common.device(spec), log=log)
    save_weights(model.state_dict(), args.out, {"config_hash": config_hash(spec), "kind": "classifier"})
