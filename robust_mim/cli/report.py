"""``model-cards`` and ``claims``: the leaderboard's model cards and the claims table, from records only."""
from __future__ import annotations

import argparse
import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path

from robust_mim.reporting import claims as claims_lib
from robust_mim.reporting import leaderboard as lb
from robust_mim.cli import command
from robust_mim.cli import common
from robust_mim.errors import ConfigError
from robust_mim.io import atomic_write_text
from robust_mim.reporting.pages import markdown_page
from robust_mim.records import git_commit, iter_records

TRAINING_LOG = re.compile(r"= (\d+) process\(es\) x \d+ on (\w+)")


def _cards_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", required=True, help="results/<profile>: records, benchmarks, logs, checkpoints")
    p.add_argument("--out-dir", required=True, help="folder for one <model_id>.json per trained classifier")


def _claims_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-root", required=True, help="folder holding results/<profile>/ of every profile")
    p.add_argument("--out", required=True, help="markdown file to write (results/<profile>/claims.md)")
    p.add_argument("--html", help="also write the table as a styled HTML page (shown inline in the Snakemake report)")


def gpu_processes(results_dir: Path, jobs: set[str]) -> dict[str, int]:
    """Job id -> GPU processes it trained with, from the engine's 'global batch ... on <device>' log line
    of a training rule's log (the last one: a resumed run appends); CPU jobs and jobs without it are left out."""
    out = {}
    for job in jobs:
        for log in [p for d in ("pretrain", "train", "finetune") for p in results_dir.glob(f"logs/{d}*/{job}.log")]:
            found = TRAINING_LOG.findall(log.read_text(encoding="utf-8", errors="replace"))
            if found and found[-1][1] == "cuda":
                out[job] = int(found[-1][0])
    return out


def checkpoint_info(results_dir: Path, model_id: str) -> dict:
    """Path, size and SHA-256 of a fine-tuned model's weights (the checkpoint the model id names)."""
    path = results_dir / "finetune" / model_id / "model.safetensors"
    if not path.is_file():
        return {"path": str(path), "sha256": None, "bytes": None}
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "sha256": digest.hexdigest(), "bytes": path.stat().st_size}


@command("model-cards", _cards_args)
def model_cards(args: argparse.Namespace) -> None:
    """Write one RobustBench-style model card per trained classifier of the profile (atomically)."""
    spec, log, results, out = args.spec, common.make_logger(args.log), Path(args.results_dir), Path(args.out_dir)
    settings = spec["models"]  # model id -> {"run": ..., "upstream": {run id: settings}}; + the profile's headline ε
    df = lb.load_leaderboard_records(results, spec["profile"])
    upstream = {m: list(s["upstream"]) for m, s in settings.items()}
    jobs = set(settings) | {u for us in upstream.values() for u in us}
    costs = lb.training_cost(lb.read_benchmarks(results), upstream, gpu_processes(results, jobs))
    board = lb.leaderboard(df, costs, head_eps_255=spec["headline_eps_255"], models=settings)
    missing = sorted(set(settings) - set(board.index))
    if missing:
        raise ConfigError(f"no robustness records for model(s) {', '.join(missing)}: run rule attack_eval first")
    stale = sorted(set(lb.classifier_ids(df)) - set(settings))
    if stale:
        log(f"records of models no longer in the config are left out: {', '.join(stale)}")
    records: dict[str, list[dict]] = {}
    for rec in iter_records(results / "records"):
        records.setdefault(rec["model_id"], []).append(rec)
    out.mkdir(parents=True, exist_ok=True)
    for m in sorted(settings):
        cost = costs.loc[m].to_dict() if m in costs.index else {}
        card = lb.model_card(m, board, records[m], settings[m], cost, checkpoint_info(results, m), spec)
        atomic_write_text(out / f"{m}.json", json.dumps(card, indent=1, allow_nan=False) + "\n")
    log(f"wrote {len(settings)} model cards to {out}")


def profiles_with_records(root: Path, first: str) -> list[str]:
    """Profiles under ``root`` that have records, ``first`` (this run's profile) first."""
    found = sorted(p.name for p in root.iterdir() if (p / "records").is_dir() and any((p / "records").rglob("*.json")))
    return [first] + [p for p in found if p != first]


@command("claims", _claims_args)
def claims(args: argparse.Namespace) -> None:
    """Write the claims table (markdown): each paper's headline claim judged from every profile's records."""
    spec, log, root = args.spec, common.make_logger(args.log), Path(args.results_root)
    profiles = profiles_with_records(root, spec["profile"])
    judged = {p: claims_lib.judge_profile(root / p, p) for p in profiles}
    scales = {}
    for p in profiles:
        notes = {r.get("scale_note") for r in iter_records(root / p / "records")} - {None}
        scales[p] = "; ".join(sorted(notes)) or "no scale note in the records"
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    provenance = (f"`python -m robust_mim.cli claims` (rule report_claims), code {git_commit()['git_commit'][:12]}, "
                  f"{date}, records of profile(s) {', '.join(profiles)}")
    text = claims_lib.claims_markdown(judged, scales, spec["profile"], spec.get("notebooks", []), provenance)
    atomic_write_text(args.out, text)
    if args.html:
        atomic_write_text(args.html, markdown_page(text, title=f"robust_mim claims — {spec['profile']}"))
    log(f"wrote {args.out}: {len(claims_lib.paper_claims())} papers x {len(profiles)} profile(s)")

