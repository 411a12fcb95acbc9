"""Do two runs carry the same numbers? Compare two ``results/<profile>`` folders record by record.

    python -m robust_mim.reporting.compare results-before/smoke results/smoke

Every record (``records/**.json``) and every training log (``metrics.jsonl``) is compared value by value,
ignoring what a rerun may change without changing a result: wall times, dates, the git commit, the host
and the environment block. A refactor must leave them all identical (CONTRIBUTING.md); exit status 1
lists the first differences otherwise.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

IGNORED = {"date", "git_commit", "git_dirty", "host", "device_name", "environment"}


def ignored(key: str) -> bool:
    """Keys a rerun changes without changing a result (wall times such as ``wall_time_s``, dates, commit, host)."""
    return key in IGNORED or "time" in key or key.endswith("_s")


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Every difference between two JSON values (NaN equals NaN), as ``path: a vs b`` lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if ignored(str(k)):
                continue
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'the second' if k not in a else 'the first'}")
            else:
                out += differences(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def _read(path: Path) -> Any:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return json.loads(path.read_text(encoding="utf-8"))


def compare_results(first: Path, second: Path) -> dict[str, list[str]]:
    """File (relative path) -> its differences, for every record and metrics.jsonl of either folder."""
    files = lambda root: {p.relative_to(root) for pattern in ("records/**/*.json", "**/metrics.jsonl")
                          for p in root.glob(pattern)}
    a, b = files(first), files(second)
    out = {str(rel): ["only in the first"] for rel in sorted(a - b)}
    out.update({str(rel): ["only in the second"] for rel in sorted(b - a)})
    for rel in sorted(a & b):
        found = differences(_read(first / rel), _read(second / rel))
        if found:
            out[str(rel)] = found
    return {k: v for k, v in out.items() if v} | {"": [f"{len(a | b)} files compared"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robust_mim.reporting.compare", description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="results/<profile> of one run")
    parser.add_argument("second", type=Path, help="results/<profile> of the other")
    args = parser.parse_args(argv)
    found = compare_results(args.first, args.second)
    summary = found.pop("")
    for rel, lines in found.items():
        print(f"{rel}:", *lines[:5], sep="\n  ")
    print(f"{summary[0]}; {len(found)} differ (ignoring wall times, dates, commit, host)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
