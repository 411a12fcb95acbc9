"""Typed result records: one JSON file per (model, evaluation), with provenance.

A record holds numbers as numbers, in ``rows`` (a flat table: one dict per ε, σ or radius),
plus who/what/where: model id, evaluation name, threat model, attack or certification
parameters, sample counts, and provenance (git commit, config hash, seed, package versions,
device, wall time, date). Records are written atomically and never edited by hand; notebooks
read them with `read_records` and never recompute.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from robust_mim.errors import ConfigError, RobustMimError
from robust_mim.io import atomic_write_text

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("model_id", "evaluation", "profile", "rows", "n_examples", "params", "provenance")
PROVENANCE_KEYS = ("git_commit", "config_hash", "seed", "versions", "device", "wall_time_s", "date")
TRACKED_PACKAGES = ("torch", "torchvision", "timm", "numpy", "adversarial-robustness-toolbox", "pyautoattack",
                    "vector-quantize-pytorch", "safetensors", "robust_mim")
LOCK_FILE = Path(__file__).resolve().parent.parent / "requirements.lock"


def config_hash(spec: Any) -> str:
    """Short, stable hash of a JSON-serialisable configuration (sorted keys)."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def git_commit() -> dict[str, Any]:
    """Commit of the code that ran (the checkout holding this package), and whether it was dirty."""
    repo = Path(__file__).resolve().parent.parent
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "", None
    return {"git_commit": commit or "unknown", "git_dirty": dirty}


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that determine the numbers."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.lru_cache(maxsize=1)
def lock_status(lock: Path = LOCK_FILE) -> dict[str, Any]:
    """Whether the installed packages are exactly those of ``requirements.lock``.

    Returns ``{"lock_sha256": first 12 hex digits of the lock file (or "missing"),
    "matches_lock": bool | None, "differs_from_lock": ["name==locked (installed x)", ...]}``;
    None when there is no lock file (an installed wheel outside the checkout).
    """
    if not lock.is_file():
        return {"lock_sha256": "missing", "matches_lock": None, "differs_from_lock": []}
    text = lock.read_text(encoding="utf-8")
    have = {_canonical(d.metadata["Name"] or ""): d.version for d in metadata.distributions()}
    differs = []
    for line in text.splitlines():
        name, _, pinned = line.split(";")[0].strip().partition("==")
        if not pinned or name.startswith("#") or not _marker_applies(line):
            continue
        installed = have.get(_canonical(name), "not installed")
        if installed != pinned.strip():
            differs.append(f"{name}=={pinned.strip()} (installed {installed})")
    return {"lock_sha256": hashlib.sha256(text.encode()).hexdigest()[:12], "matches_lock": not differs,
            "differs_from_lock": differs}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _marker_applies(line: str) -> bool:
    if ";" not in line:
        return True
    from packaging.markers import Marker
    return Marker(line.split(";", 1)[1]).evaluate()


def device_name(device: str) -> str:
    """The hardware behind ``device``: the GPU's name for ``cuda*``, else the CPU's model (``/proc/cpuinfo``)
    and its logical core count, e.g. ``AMD EPYC 9B14 (2 logical cores)``."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux
        pass
    return f"{model} ({os.cpu_count()} logical cores)"


def provenance(spec: Any, seed: int, device: str, wall_time_s: float,
               subset: dict[str, Any] | None = None) -> dict[str, Any]:
    """Provenance block for a record produced from configuration ``spec``; ``subset`` says which examples
    were evaluated (`robust_mim.data.evaluation_subset`: first n or class-stratified, and their hash)."""
    return {**git_commit(), "config_hash": config_hash(spec), "seed": seed, "versions": package_versions(),
            "environment": lock_status(), **({"evaluation_subset": subset} if subset is not None else {}),
            "device": device, "device_name": device_name(device), "host": platform.node(),
            "wall_time_s": round(wall_time_s, 3),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def make_record(model_id: str, evaluation: str, profile: str, rows: list[dict[str, Any]], *,
                n_examples: int, params: dict[str, Any], provenance: dict[str, Any],
                **extra: Any) -> dict[str, Any]:
    """Assemble a record; ``extra`` holds optional fields (paper, threat_model, sanity_checks, scale...)."""
    return {"schema_version": SCHEMA_VERSION, "model_id": model_id, "evaluation": evaluation,
            "profile": profile, "rows": rows, "n_examples": n_examples, "params": params,
            "provenance": provenance, **extra}


def validate_record(record: dict[str, Any]) -> None:
    """Raise ConfigError naming the first missing field of a record or its provenance."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    missing += [f"provenance.{k}" for k in PROVENANCE_KEYS if k not in record.get("provenance", {})]
    if missing:
        raise ConfigError(f"record for '{record.get('model_id')}' lacks {', '.join(missing)}")


def write_record(path: Path | str, record: dict[str, Any]) -> None:
    """Validate and write a record atomically (numbers stay numbers: no string formatting)."""
    validate_record(record)
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=False, allow_nan=True) + "\n")


class BadRecord(RobustMimError):
    """A file under a records folder is not a readable record; the message names the file."""


def read_record(path: Path | str) -> dict[str, Any]:
    """One record file as a dict; truncated or malformed JSON raises `BadRecord` naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadRecord(f"record {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): "
                        "delete it and rerun the rule that writes it") from None
    except UnicodeDecodeError:
        raise BadRecord(f"record {path} is not UTF-8 text: delete it and rerun the rule that writes it") from None


def iter_records(root: Path | str) -> Iterable[dict[str, Any]]:
    """Every record under ``root`` (recursively), sorted by path, each with its ``_path``.

    Only records live under a records folder, so a JSON file that is not one (no ``schema_version``
    or ``provenance``) raises `BadRecord` naming it rather than being skipped.
    """
    for path in sorted(Path(root).rglob("*.json")):
        record = read_record(path)
        lacks = [k for k in ("schema_version", "provenance") if not isinstance(record, dict) or k not in record]
        if lacks:
            raise BadRecord(f"{path} is not a record (no {' or '.join(lacks)}): only records written by the "
                            "pipeline belong under a records folder; move it or rerun the rule that writes it")
        yield {**record, "_path": str(path)}


def read_records(root: Path | str):
    """All records under ``root`` as a pandas DataFrame: one row per record row.

    Columns: the record's scalar fields (model_id, evaluation, threat_model, ...), every key of
    its row (eps, accuracy, radius, ...), ``n_failed_checks`` and ``failed_checks`` (names),
    and provenance flattened as ``prov.<key>``.
    """
    import pandas as pd

    out = []
    for rec in iter_records(root):
        base = {k: v for k, v in rec.items() if not isinstance(v, (dict, list))}
        failed = [c["check"] for c in rec.get("sanity_checks", []) if c.get("passed") is False]
        base.update(n_failed_checks=len(failed), failed_checks=", ".join(failed))
        base.update({f"prov.{k}": v for k, v in rec["provenance"].items() if not isinstance(v, dict)})
        for row in rec["rows"] or [{}]:
            out.append({**base, **row})
    return pd.DataFrame(out)
