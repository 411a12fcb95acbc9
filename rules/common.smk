# Configuration, validation and the small get_* helpers every rule file uses.
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import yaml

from robust_mim.config import compose_schema, resolve_run, validate_config
from robust_mim.data_check import check_dataset
from robust_mim.errors import ConfigError, RobustMimError
from robust_mim.notebook import notebook_parameters
from robust_mim.papers import PAPERS

REPO = Path(workflow.basedir)


def load_profile(overrides):
    """The smoke profile unless --configfile named another; --config values override it."""
    base = {}
    if "profile" not in overrides:
        base = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    merged = {**base, **overrides}
    schema = compose_schema(yaml.safe_load((REPO / "config" / "schema.yaml").read_text()), {
        p.key: yaml.safe_load(p.schema_path.read_text()) for p in PAPERS.values() if p.schema_path.is_file()})
    try:
        return validate_config(merged, schema)
    except ConfigError as exc:
        raise SystemExit(f"robust_mim: {exc}") from None


config.update(load_profile(dict(config)))
try:  # the data must be there before any job is planned: a missing split would otherwise surface after training
    check_dataset(config["data"]["name"], config["data"]["root"], config["data"]["download"])
except RobustMimError as exc:
    raise SystemExit(f"robust_mim: {exc}") from None


def cap_cores_to_machine():
    """`--cores 8` on a 2-core laptop would run 8 torch jobs on 2 cores; cap the local scheduler
    at the machine's cores instead (cluster executors are unaffected)."""
    machine = os.cpu_count() or 1
    try:
        requested = workflow.cores
    except Exception:  # dry runs and cluster executors may leave cores unset
        return
    if getattr(workflow, "local_exec", True) and requested and requested > machine:
        print(f"robust_mim: --cores {requested} exceeds this machine's {machine} cores; using {machine}", file=sys.stderr)
        workflow.global_resources["_cores"] = machine


cap_cores_to_machine()
PROFILE = config["profile"]
RES = f"results/{PROFILE}"
FIG = f"figures/{PROFILE}"
THREADS = max(1, min(config["threads"], os.cpu_count() or 1))
PRETRAIN_RUNS = sorted(config["pretrain"]["runs"])
MODELS = sorted(config["finetune"]["runs"])


wildcard_constraints:
    run="|".join(PRETRAIN_RUNS) or "__none__",
    model="|".join(MODELS) or "__none__",


# Scheduling-only keys (the resources of a job) stay out of job specs, so changing them neither reruns
# finished jobs nor changes a run's hash (a resumed run may get more GPUs or time).
RESOURCE_KEYS = ("gpus", "runtime_min", "mem_mb")


def job_spec(**parts):
    """Path of the JSON spec of one job (the profile-wide settings plus the job's own slice).

    The file is named by its content's hash (results/<profile>/specs/<sha>.json): a changed spec is a
    changed parameter, so Snakemake reruns the job, while logs show a short path instead of the JSON.
    """
    shared = {k: config[k] for k in ("profile", "scale_note", "seed", "device", "data", "model")}
    parts = {k: {kk: vv for kk, vv in v.items() if kk not in RESOURCE_KEYS} if isinstance(v, dict) else v
             for k, v in parts.items()}
    text = json.dumps({**shared, **parts}, sort_keys=True)
    path = Path(RES) / "specs" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{text}\n", encoding="utf-8")
        os.replace(tmp, path)
    return str(path)


def pretrain_run(run):
    return resolve_run(config["pretrain"], run)


def finetune_run(model):
    return resolve_run(config["finetune"], model)


def pretrain_weights(run):
    return f"{RES}/pretrain/{run}/model.safetensors"


def finetune_weights(model):
    return f"{RES}/finetune/{model}/model.safetensors"


# run key naming an auxiliary run -> its weights path (paper rule files add theirs, e.g. vq in rules/dat.smk)
AUX_WEIGHTS = {"init": pretrain_weights, "denoiser": pretrain_weights}


def finetune_inputs(wildcards):
    """Pretrained encoder, frozen denoiser, VQ autoencoder ... a fine-tuning run starts from, if any."""
    run = finetune_run(wildcards.model)
    return {k: weights(run[k]) for k, weights in AUX_WEIGHTS.items() if run.get(k)}


def launcher(gpus):
    """`python`, or torchrun with one process per GPU (DDP on one node) when a job gets >1 GPU."""
    gpus = int(gpus)
    return "python" if gpus <= 1 else f"torchrun --standalone --nnodes 1 --nproc_per_node {gpus}"


def optional_flags(inputs, names):
    """``--name path`` for each named input present, paths shell-quoted."""
    return " ".join(f"--{n} {shlex.quote(str(inputs[n]))}" for n in names if n in inputs.keys())


def models_of(paper):
    """Model ids whose runs list ``paper`` (all models for None)."""
    return [m for m in MODELS if paper is None or paper in finetune_run(m).get("papers", [])]


def robustness_records(models):
    return [f"{RES}/records/{m}/robustness" for m in models]


# notebook -> paper key in finetune runs' `papers` (None: every model); one notebook per registered paper
NOTEBOOK_PAPER = {"00_overview": None, **{p.notebook: p.key for p in PAPERS.values()}, "06_leaderboard": None}
# notebook -> function(models) giving extra inputs (paper rule files register theirs)
NOTEBOOK_EXTRA_INPUTS = {}


def notebook_inputs(wildcards):
    paper = NOTEBOOK_PAPER.get(wildcards.notebook)
    models = models_of(paper)
    extra = NOTEBOOK_EXTRA_INPUTS.get(wildcards.notebook, lambda ms: [])(models)
    return {"notebook": str(REPO / "notebooks" / f"{wildcards.notebook}.ipynb"),
            "records": robustness_records(models) + list(extra)}


# profile values a notebook receives when its parameters cell names them (a notebook run by hand reads them
# from the records instead, e.g. robust_mim.reporting.claims.profile_headline_eps_255)
NOTEBOOK_PROFILE_VALUES = {"headline_eps_255": config["evaluation"]["headline_eps_255"]}


def notebook_flags(notebook):
    """``-p name value`` (shell-quoted) for each profile value that ``notebook``'s parameters cell names."""
    names = notebook_parameters(notebook)
    return " ".join(f"-p {k} {shlex.quote(str(v))}" for k, v in NOTEBOOK_PROFILE_VALUES.items() if k in names)


# further targets of `rule all` beyond the notebooks (rules/report.smk adds claims.md and the notebooks' HTML)
REPORT_TARGETS = []


def all_targets():
    return [f"{RES}/notebooks/{nb}.ipynb" for nb in config["notebooks"]] + REPORT_TARGETS
