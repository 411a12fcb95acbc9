"""The whole ``all`` target: wall time and peak memory per Snakemake job, from its benchmark files.

Every rule writes ``results/<profile>/benchmarks/<rule>/<id>.tsv`` (Snakemake's ``benchmark:``
directive: columns ``s``, ``h:m:s``, ``max_rss`` (MB), ``max_vms``, ``max_uss``, ``max_pss``,
``io_in``, ``io_out``, ``mean_load``, ``cpu_time``). This reads them and prints every job
slowest first, the per-rule totals, and the totals: summed job wall time (the time on one
core, one job after another), summed CPU time, and the largest peak resident memory.

Snakemake *samples* a job's CPU time: every 0.5 s for the first 15 s, then every 30 s. A job
that ends between two samples loses the CPU time since the last one, so for jobs longer than
15 s ``cpu_time`` and ``mean_load`` are lower bounds (a 40 s job at 100 % shows about 15 s).
Wall time and peak memory are exact. For an exact CPU total, use ``--run-pipeline``.

Nothing is run unless ``--run-pipeline`` is given, which runs
``snakemake --cores N all --configfile config/<profile>.yaml`` first and also records its
elapsed wall-clock time (jobs overlap, so that is below the summed job time) and the exact
CPU time of the whole run (user + system of every child process, from ``getrusage``).

    python -m benchmarks.bench_pipeline --profile smoke [--run-pipeline --cores 2]
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import machine_info

NUMERIC = ("s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load", "cpu_time")


def _number(text: str | None) -> float | None:
    """A TSV cell as a float; ``NA``, ``-`` or empty (Snakemake's missing values) → None."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_benchmark_file(path: Path) -> dict:
    """One job's benchmark TSV → ``{rule, id, s, max_rss, cpu_time, ...}`` (mean over repeated rows)."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out: dict = {"rule": path.parent.name, "id": path.stem, "repeats": len(rows)}
    for key in NUMERIC:
        values = [v for v in (_number(row.get(key)) for row in rows) if v is not None]
        out[key] = sum(values) / len(values) if values else None
    return out


def read_benchmarks(bench_dir: Path) -> list[dict]:
    """Every ``<rule>/<id>.tsv`` under ``bench_dir``, slowest job first."""
    jobs = [read_benchmark_file(p) for p in sorted(bench_dir.glob("*/*.tsv"))]
    return sorted(jobs, key=lambda j: -(j["s"] or 0.0))


def per_rule(jobs: list[dict]) -> list[dict]:
    """Jobs, summed wall and CPU seconds, largest peak memory, per rule; slowest rule first."""
    rules: dict[str, dict] = {}
    for job in jobs:
        r = rules.setdefault(job["rule"], {"rule": job["rule"], "jobs": 0, "wall_s": 0.0, "cpu_s": 0.0,
                                           "peak_rss_mb": 0.0})
        r["jobs"] += 1
        r["wall_s"] += job["s"] or 0.0
        r["cpu_s"] += job["cpu_time"] or 0.0
        r["peak_rss_mb"] = max(r["peak_rss_mb"], job["max_rss"] or 0.0)
    return sorted(rules.values(), key=lambda r: -r["wall_s"])


def totals(jobs: list[dict]) -> dict:
    """Summed wall and CPU seconds over all jobs, the largest peak memory, the mean CPU use (%) of a job."""
    loads = [j["mean_load"] for j in jobs if j["mean_load"] is not None]
    return {"jobs": len(jobs), "wall_s_sum": sum(j["s"] or 0.0 for j in jobs),
            "cpu_s_sum": sum(j["cpu_time"] or 0.0 for j in jobs),
            "peak_rss_mb": max((j["max_rss"] or 0.0 for j in jobs), default=0.0),
            "mean_cpu_percent": sum(loads) / len(loads) if loads else None}


def run_pipeline(profile: str, cores: int) -> tuple[float, float]:
    """Run ``snakemake all`` on the profile here: (elapsed s, CPU s of all its processes); raises on failure."""
    import resource

    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "all", "--configfile", f"config/{profile}.yaml"]
    print("running:", " ".join(cmd[1:]), flush=True)
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(cmd, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - start, cpu


def how_to_produce(profile: str) -> str:
    return (f"no Snakemake benchmark files under results/{profile}/benchmarks/: produce them with "
            f"`snakemake --cores 2 all --configfile config/{profile}.yaml` (or `make all` for smoke), "
            f"or rerun this with --run-pipeline")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--results", type=Path, default=Path("results"), help="the pipeline's results folder")
    parser.add_argument("--run-pipeline", action="store_true", help="run `snakemake all` first (long)")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores with --run-pipeline")
    parser.add_argument("--top", type=int, default=25, help="jobs printed (all are in the JSON)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pipeline.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    elapsed, cpu = run_pipeline(args.profile, args.cores) if args.run_pipeline else (None, None)
    bench_dir = args.results / args.profile / "benchmarks"
    jobs = read_benchmarks(bench_dir) if bench_dir.is_dir() else []
    result = {"benchmark": "pipeline_all", "profile": args.profile, "benchmark_dir": str(bench_dir),
              "status": "ok" if jobs else "missing", "pipeline_elapsed_s": elapsed, "pipeline_cpu_s": cpu, "jobs": jobs,
              "rules": per_rule(jobs), "totals": totals(jobs), **machine_info()}
    if not jobs:
        result["message"] = how_to_produce(args.profile)
    print_table(result, args.top)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(result: dict, top: int = 25) -> None:
    if result["status"] != "ok":
        print(result["message"])
        return
    print(f"pipeline `all`, profile {result['profile']}: {len(result['jobs'])} jobs from {result['benchmark_dir']}")
    print(f"  {'rule':<24}{'id':<34}{'wall s':>9}{'cpu s*':>9}{'peak MB':>9}{'cpu %*':>7}")
    for job in result["jobs"][:top]:
        load = f"{job['mean_load']:.0f}" if job["mean_load"] is not None else "-"
        print(f"  {job['rule']:<24}{job['id'][:33]:<34}{job['s'] or 0:>9.1f}{job['cpu_time'] or 0:>9.1f}"
              f"{job['max_rss'] or 0:>9.0f}{load:>7}")
    if len(result["jobs"]) > top:
        print(f"  ... {len(result['jobs']) - top} more jobs in the JSON")
    print(f"  {'per rule':<24}{'jobs':<34}{'wall s':>9}{'cpu s*':>9}{'peak MB':>9}")
    for r in result["rules"]:
        print(f"  {r['rule']:<24}{r['jobs']:<34}{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}{r['peak_rss_mb']:>9.0f}")
    t = result["totals"]
    elapsed = f", elapsed {result['pipeline_elapsed_s']:.0f} s" if result["pipeline_elapsed_s"] else ""
    elapsed += f", {result['pipeline_cpu_s']:.0f} s CPU (exact)" if result.get("pipeline_cpu_s") else ""
    print(f"  total: {t['jobs']} jobs, {t['wall_s_sum']:.0f} s summed wall (one core, serial), "
          f"{t['cpu_s_sum']:.0f} s CPU*, peak {t['peak_rss_mb']:.0f} MB{elapsed}")
    print("  * sampled by Snakemake (every 0.5 s for 15 s, then every 30 s): lower bounds for jobs over 15 s")


if __name__ == "__main__":
    main()
