"""Paper 4 (Chen et al., CVPR 2020): ``pretrain-pretext`` and ``pgd-eval``.

- ``pretrain-pretext`` trains a `PretextModel` (the run's backbone + one head per pretext task;
  our Selfie is recorded as ``selfie-like``, `robust_mim.papers.chen.tasks`)
  with the run's objective from `robust_mim.papers.chen.objective.PRETEXT_PRETRAIN`, saves the
  backbone as ``encoder.*`` weights (what ``finetune --init`` loads strictly) and writes a
  record of the pretext accuracy on held-out images, clean and under PGD.
- ``pgd-eval`` measures the paper's TA (clean accuracy) and ATA (L∞ PGD, by default 20 steps
  of 2/255 at ε = 8/255) of one classifier, or of a softmax-average ensemble of several
  (`SoftmaxEnsemble`, attacked as one model through the log of its averaged probabilities),
  and writes one record with its grid cell (task, P1–P3, F1–F4) and sanity checks.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from robust_mim.cli import command
from robust_mim.cli import common
from robust_mim.data import evaluation_subset, first_examples, num_classes
from robust_mim.distributed import DistContext
from robust_mim.engine import fit
from robust_mim.errors import ConfigError
from robust_mim.evaluation.suite import run_suite, sanity_checks
from robust_mim.io import save_weights
from robust_mim.papers.chen.models import PretextModel, build_pretext_model
from robust_mim.models.resnet import SoftmaxEnsemble
from robust_mim.objectives import build_step
from robust_mim.papers.chen.objective import (
    PRETEXT_PRETRAIN, ensemble_cell, evaluate_pretext, grid_cell, objective_tasks, pretext_encoder_state,
)
from robust_mim.papers.chen.tasks import task_label
from robust_mim.records import config_hash, make_record, provenance, write_record


# ----------------------------------------------------------------------------- pretrain-pretext
def _pretext_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="pretrained backbone as encoder.* weights (.safetensors)")
    p.add_argument("--record", required=True, help="record of the held-out pretext accuracy (.json)")
    common.add_training_args(p)


def build_pretext(spec: dict, n_classes: int) -> PretextModel:
    """The run's backbone (``run.backbone``, else the profile's ViT) with heads for its tasks."""
    backbone = common.build_classifier(spec, n_classes)
    p, tasks = spec["pretext"], objective_tasks(spec["run"]["objective"])
    return build_pretext_model(backbone, backbone.head.in_features, tasks, spec["data"]["image_size"],
                               jigsaw_grid=p["jigsaw_grid"], num_permutations=p["num_permutations"],
                               permutation_seed=p["permutation_seed"], selfie_patch=p["selfie_patch"],
                               selfie_masked=p["selfie_masked"], shared_patch_encoder=p["selfie_shared_encoder"])


@command("pretrain-pretext", _pretext_args)
def pretrain_pretext(args: argparse.Namespace) -> None:
    """Pretrain a backbone on pretext tasks (rotation, jigsaw, Selfie-like), standard or adversarial."""
    common.run_training(args, _pretrain_pretext)


def _pretrain_pretext(args: argparse.Namespace, spec: dict, ctx: DistContext, device: torch.device,
                      log: common.Log) -> None:
    train_set = common.dataset(spec, "train")
    objective = spec["run"]["objective"]
    model = build_pretext(spec, num_classes(train_set))
    step = build_step(PRETEXT_PRETRAIN, objective)
    log(f"pretrain-pretext {spec['run']['id']}: {objective} on {len(train_set)} images; {common.lr_rule(spec)}")
    t0 = time.perf_counter()
    training = {k: v for k, v in spec.items() if k != "chen_eval"}  # evaluation settings do not retrain
    history = fit(model, step, train_set, common.train_config(spec), Path(args.run_dir),
                  run_hash=common.run_hash(training), device=device, log=log, dist=ctx)
    if ctx.is_main:
        meta = {"config_hash": config_hash(spec), "kind": "pretext-encoder"}
        save_weights(pretext_encoder_state(model), args.out, meta)
        write_record(args.record, _pretext_record(spec, model, history, device, time.perf_counter() - t0))
        log(f"wrote {args.out} and {args.record}")


def _pretext_record(spec: dict, model: PretextModel, history: list[dict], device: torch.device,
                    train_s: float) -> dict:
    ev, run = spec["chen_eval"], spec["run"]
    test_set = common.dataset(spec, "test")
    x, _ = first_examples(test_set, ev["n_examples"])
    generator = torch.Generator(device=device).manual_seed(spec["seed"])
    t0 = time.perf_counter()
    rows = evaluate_pretext(model, x.to(device), ev["eps_255"] / 255, ev["step_255"] / 255, ev["steps"],
                            ev["batch_size"], generator)
    rows = [{**r, "task": task_label(r["task"])} for r in rows]  # the record's label (selfie-like)
    prov = provenance(spec, spec["seed"], str(device), time.perf_counter() - t0,
                      evaluation_subset(test_set, ev["n_examples"]))
    cell = grid_cell({"method": {"name": "standard"}}, run["objective"])
    return make_record(run["id"], "pretext", spec["profile"], rows, n_examples=int(x.shape[0]),
                       params={"eps": ev["eps_255"] / 255, "step_size": ev["step_255"] / 255, "steps": ev["steps"]},
                       provenance=prov, paper=["chen"], scale_note=spec["scale_note"], objective=run["objective"],
                       backbone=run.get("backbone") or spec["model"]["arch"], chen_task=cell["task"],
                       chen_pretraining=cell["pretraining"], attack_steps=ev["steps"], epochs=run["epochs"],
                       train_wall_time_s=round(train_s, 3),
                       final_train_metrics=history[-1] if history else {})


# ----------------------------------------------------------------------------- pgd-eval
def _pgd_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", nargs="+", required=True,
                   help="classifier weights; several = a softmax-average ensemble, in the order of spec.members")
    p.add_argument("--model-id", required=True, help="stable id of the model or ensemble in records and tables")
    p.add_argument("--out", required=True, help="the record (.json)")


def pgd_suite(ev: dict) -> list[dict]:
    """The paper's evaluation as one suite entry: L∞ PGD at 0 (TA), ε (ATA) and a large ε (sanity)."""
    eps = sorted({0.0, ev["eps_255"] / 255, ev["large_eps_255"] / 255})
    return [{"name": "chen-pgd-linf", "attack": "pgd", "threat_model": "white-box", "norm": "linf", "eps": eps,
             "steps": ev["steps"], "step_size": ev["step_255"] / 255, "restarts": ev["restarts"],
             "batch_size": ev["batch_size"]}]


def load_members(spec: dict, weights: list[str], n_classes: int, device: torch.device) -> torch.nn.Module:
    """One classifier, or the `SoftmaxEnsemble` of several (each built from its own run)."""
    runs = spec["members"]
    if len(runs) != len(weights):
        raise ConfigError(f"pgd-eval: {len(weights)} weights for {len(runs)} members in the spec")
    models = [common.load_classifier({**spec, "run": run}, w, n_classes).to(device) for run, w in zip(runs, weights)]
    return models[0] if len(models) == 1 else SoftmaxEnsemble(models).eval()


@command("pgd-eval", _pgd_args)
def pgd_eval(args: argparse.Namespace) -> None:
    """TA and PGD ATA of one classifier or a softmax ensemble (Chen et al.'s protocol); one record."""
    spec, log = args.spec, common.make_logger(args.log)
    ev, dev = spec["chen_eval"], common.device(spec)
    x, y, k = common.first_test_examples(spec, ev["n_examples"])
    model = load_members(spec, args.weights, k, dev)
    generator = common.seeded_generator(spec, dev)
    log(f"pgd-eval {args.model_id}: {len(args.weights)} member(s), {ev['steps']}-step PGD on {len(y)} test images")
    result, = run_suite(model, x.to(dev), y.to(dev), pgd_suite(ev), generator=generator, log=log)
    checks = sanity_checks([result], k, False, large_eps=ev["large_eps_255"] / 255)
    write_record(args.out, _pgd_record(args, spec, result, checks, len(y), str(dev)))
    acc = {round(r["eps"] * 255, 2): round(r["accuracy"], 4) for r in result["rows"]}
    log(f"accuracy by eps (1/255): {acc}; failed checks: {common.failed_checks(checks)}")


def _pgd_record(args: argparse.Namespace, spec: dict, result: dict, checks: list[dict], n: int, dev: str) -> dict:
    runs, ev = spec["members"], spec["chen_eval"]
    cells = [grid_cell(run, obj) for run, obj in zip(runs, spec["pretrain_objectives"])]
    cell = cells[0] if len(cells) == 1 else ensemble_cell(cells)
    return make_record(
        args.model_id, result["evaluation"], spec["profile"], result["rows"], n_examples=n, params=result["params"],
        provenance=provenance(spec, spec["seed"], dev, result["wall_time_s"], common.evaluated_subset(spec, n)),
        paper=["chen"],
        scale_note=spec["scale_note"], attack=result["attack"], threat_model=result["threat_model"],
        attack_steps=ev["steps"], attack_step_255=ev["step_255"], headline_eps=ev["eps_255"] / 255,
        chen_kind="single" if len(runs) == 1 else "ensemble", chen_task=cell["task"],
        chen_pretraining=cell["pretraining"], chen_finetuning=cell["finetuning"],
        members=",".join(r["id"] for r in runs), init=_joined([r.get("init") for r in runs]),
        method=",".join(r["method"]["name"] for r in runs), backbone=runs[0].get("backbone") or spec["model"]["arch"],
        member_cells=cells, sanity_checks=checks)


def _joined(values: list) -> str | None:
    """One member's value as is; several members' values joined with commas."""
    return values[0] if len(values) == 1 else ",".join(str(v) for v in values)
