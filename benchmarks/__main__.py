"""Every benchmark in one command: ``python -m benchmarks`` (``make bench``).

Runs, in one process with a fixed number of torch threads:

- ``engine``:   training-step throughput, `robust_mim.engine` vs a plain PyTorch + timm loop;
- ``mae``:      MAE step with the encoder on visible tokens (mask 0.75) vs all tokens (mask 0);
- ``pgd``:      PGD-10 of `robust_mim.attacks.core` vs ART's ``ProjectedGradientDescentPyTorch`` and ``...Numpy``;
- ``certify``:  batched randomized-smoothing CERTIFY vs a per-sample loop;
- ``certify_batch``: CERTIFY of the cifar10-cpu ViT at several noise batch sizes and in bf16 vs the profile's setting;
- ``autoattack``: official AutoAttack standard through `robust_mim.attacks.autoattack` vs calling ``pyautoattack`` directly;
- ``cpu_train``: CPU training of the cifar10-cpu model: in-memory vs PIL data, bf16 / compile vs fp32 steps;
- ``gpu``:      training MFU on a GPU (skipped without CUDA);
- ``pipeline``: wall time and peak memory of every job of ``snakemake all`` (from its benchmark files).

Each prints its own table; then one summary table (ours, baseline, ratio, target) is printed
and everything is written to ``benchmarks/results/<machine-id>.json`` (machine id: host name,
CPU model, torch version; ``--quick`` writes ``<machine-id>-quick.json``). A benchmark that
fails is recorded as ``{"status": "error"}`` and the others still run; the exit status is 1 then.

    python -m benchmarks [--quick] [--only engine,mae] [--threads 1] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from benchmarks import load_average, machine_info, machine_id

Runner = Callable[[argparse.Namespace, Path], dict]


def _engine(args: argparse.Namespace, tmp: Path) -> dict:
    from benchmarks import bench_engine
    quick = ["--arch", "vit_nano_patch4_16", "--batch-size", "16", "--steps", "2", "--repeats", "2",
             "--micro-calls", "5"]
    return bench_engine.main((quick if args.quick else []) + ["--out", str(tmp / "engine.json")])


def _mae(args: argparse.Namespace, tmp: Path) -> dict:
    from benchmarks import bench_mae
    quick = ["--configs", "vit_nano_patch4_16:4", "--repeats", "2"]
    return bench_mae.main((quick if args.quick else []) + ["--out", str(tmp / "mae.json")])


def _pgd(args: argparse.Namespace, tmp: Path) -> dict:
    from benchmarks import bench_pgd
    if args.quick:
        models = [["--model", "cnn", "--batch-size", "8", "--steps", "2", "--repeats", "1"]]
    else:  # the reference CNN and the project's micro ViT (32x32)
        models = [["--model", "cnn", "--batch-size", "128", "--repeats", "3"],
                  ["--model", "vit", "--batch-size", "64", "--repeats", "3"]]
    runs = [bench_pgd.main(m + ["--threads", str(args.threads), "--out", str(tmp / f"pgd{i}.json")])
            for i, m in enumerate(models)]
    return {"benchmark": "pgd_throughput", "runs": runs, "ratio": min(r["ratio"] for r in runs)}


def _certify(args: argparse.Namespace, tmp: Path) -> dict:
    from benchmarks import bench_certify
    quick = ["--num-images", "1", "--n0", "10", "--n", "30", "--batch-size", "20", "--image-size", "16", "--repeats", "1"]
    models = ["cnn"] if args.quick else ["cnn", "vit"]  # a CIFAR CNN; the smoke profile's certified micro ViT
    runs = [bench_certify.main((quick if args.quick else []) + ["--model", m, "--out", str(tmp / f"certify-{m}.json")])
            for m in models]
    return {"benchmark": "certify_throughput", "runs": runs, "ratio": min(r["speedup"] for r in runs)}


def _certify_batch(args: argparse.Namespace, tmp: Path) -> dict:
    from benchmarks import bench_certify_batch
    quick = ["--num-images", "1", "--n0", "10", "--n", "60", "--batch-sizes", "20", "--baseline-batch-size", "60",
             "--repeats", "1"]
    return bench_certify_batch.main((quick if args.quick else []) + ["--threads", str(args.threads),
                                                                      "--out", str(tmp / "certify_batch.json")])


def _autoattack(args: argparse.Namespace, tmp: Path) -> dict:
    from benchmarks import bench_autoattack
    if args.quick:
        models = [["--model", "vit", "--n-examples", "8", "--apgd-steps", "3", "--target-classes", "2",
                   "--fab-steps", "3", "--square-queries", "10", "--repeats", "1"]]
    else:  # the smoke micro ViT and a CIFAR-sized CNN at 2/255 (points survive APGD-CE), CPU-sized budget
        budget = ["--n-examples", "64", "--eps", str(2 / 255), "--apgd-steps", "20", "--target-classes", "3",
                  "--fab-steps", "20", "--square-queries", "200", "--repeats", "3"]
        models = [["--model", "vit", *budget], ["--model", "cnn", *budget]]
    runs = [bench_autoattack.main(m + ["--threads", str(args.threads), "--out", str(tmp / f"autoattack{i}.json")])
            for i, m in enumerate(models)]
    return {"benchmark": "autoattack_overhead", "runs": runs, "ratio": min(r["ratio"] for r in runs)}


def _cpu_train(args: argparse.Namespace, tmp: Path) -> dict:
    from benchmarks import bench_cpu_train
    quick = ["--arch", "vit_micro_patch4_32", "--batch-size", "8", "--steps", "1", "--repeats", "1",
             "--data-images", "32", "--no-compile"]
    return bench_cpu_train.main((quick if args.quick else []) + ["--threads", str(args.threads),
                                                                  "--out", str(tmp / "cpu_train.json")])


def _gpu(args: argparse.Namespace, tmp: Path) -> dict:
    from benchmarks import bench_gpu
    out = tmp / "gpu.json"
    bench_gpu.main((["--steps", "2", "--warmup", "1"] if args.quick else []) + ["--out", str(out)])
    return json.loads(out.read_text())


def _pipeline(args: argparse.Namespace, tmp: Path) -> dict:
    from benchmarks import bench_pipeline
    run = ["--run-pipeline", "--cores", str(args.cores)] if args.run_pipeline else []
    return bench_pipeline.main(["--profile", args.profile, "--results", str(args.results), "--out",
                                str(tmp / "pipeline.json"), *run])


BENCHMARKS: dict[str, Runner] = {"engine": _engine, "mae": _mae, "pgd": _pgd, "certify": _certify,
                                 "certify_batch": _certify_batch, "autoattack": _autoattack, "cpu_train": _cpu_train,
                                 "gpu": _gpu, "pipeline": _pipeline}


def summary_rows(name: str, result: dict) -> list[dict]:
    """Rows of the summary table for one benchmark's result (ours, baseline, ratio, target, note)."""
    if result.get("status") == "error":
        return [_row(name, note=f"ERROR {result['error']}")]
    return SUMMARIES[name](result)


def _row(name: str, ours: str = "", baseline: str = "", ratio: float | None = None, target: str = "",
         note: str = "") -> dict:
    return {"benchmark": name, "ours": ours, "baseline": baseline, "ratio": ratio, "target": target, "note": note}


def _engine_rows(r: dict) -> list[dict]:
    return [_row(f"engine/{run['model']}", f"{run['results']['engine.train_one_epoch']['images_per_s']:.0f} img/s",
                 f"{run['results']['plain']['images_per_s']:.0f} img/s", run["ratio"], ">= 0.95",
                 f"pairs {run['paired_ratios']['min']:.2f}-{run['paired_ratios']['max']:.2f}; "
                 f"fit() incl. checkpoint {run['ratio_fit']:.2f}") for run in r["runs"]]


def _mae_rows(r: dict) -> list[dict]:
    m = f"mask{r['mask_ratio']:g}"
    return [_row(f"mae/{run['arch']}/{unit}", f"{run['results'][f'{unit} {m}']['images_per_s']:.0f} img/s",
                 f"{run['results'][f'{unit} mask0']['images_per_s']:.0f} img/s", run[f"{unit}_ratio"],
                 "~4" if unit == "encoder" else "", f"FLOP ratio {run[f'{unit}_flop_ratio']:.2f}")
            for run in r["runs"] for unit in ("encoder", "step")]


def _pgd_rows(r: dict) -> list[dict]:
    rows = []
    for run in r["runs"]:
        ours = run["results"]["robust_mim.attacks.core.pgd"]
        for baseline, ratio, suffix in (("PyTorch", "ratio", ""), ("Numpy", "ratio_numpy", "/art-numpy")):
            art = run["results"][f"ART ProjectedGradientDescent{baseline}"]
            rows.append(_row(f"pgd/{run['model']}{suffix}", f"{ours['examples_per_s']:.1f} ex/s",
                             f"{art['examples_per_s']:.1f} ex/s", run[ratio], f">= {run['target_ratio']}",
                             f"ART {baseline} PGD; batch {run['batch_size']}"))
    return rows


def _certify_rows(r: dict) -> list[dict]:
    return [_row(f"certify/{run['model_key']}", f"{run['batched']['samples_per_s']:.0f} samples/s",
                 f"{run['per_sample_loop']['samples_per_s']:.0f} samples/s", run["speedup"], ">= 3",
                 f"per-sample loop; {run['image_size']}x{run['image_size']}; N0={run['n0']} N={run['n']}")
            for run in r["runs"]]


def _certify_batch_rows(r: dict) -> list[dict]:
    base = r["results"][r["baseline"]]
    return [_row(f"certify_batch/{name.replace(' ', '')}", f"{row['samples_per_s']:.0f} samples/s",
                 f"{base['samples_per_s']:.0f} samples/s", row["ratio"], "",
                 f"{r['model']} vs the profile's {r['baseline']}; same result: {row['same_result']}")
            for name, row in r["results"].items() if name != r["baseline"]]


def _autoattack_rows(r: dict) -> list[dict]:
    rows = []
    for run in r["runs"]:
        ours, direct = (run["results"][k] for k in ("robust_mim.attacks.autoattack.autoattack",
                                                    "pyautoattack AutoAttack.run_standard_evaluation"))
        rows.append(_row(f"autoattack/{run['model']}", f"{ours['median_s']:.2f} s", f"{direct['median_s']:.2f} s",
                         run["ratio"], f">= {run['target_ratio']}",
                         f"direct pyautoattack {run['pyautoattack']}; CPU-time ratio {run['ratio_cpu_time']:.2f}; "
                         f"robust acc {ours['robust_accuracy']:.3f} vs "
                         f"{direct['robust_accuracy']:.3f}; n {run['n_examples']}"))
    return rows


def _cpu_train_rows(r: dict) -> list[dict]:
    data = r["data"]["results"]
    rows = [_row("cpu_train/data", f"{data['memory (imagefolder-memory)']['images_per_s']:.0f} img/s",
                 f"{data['PIL (imagefolder)']['images_per_s']:.0f} img/s", r["ratio"], "> 1",
                 f"in-memory uint8 batches vs PIL DataLoader; {r['data']['images']} images")]
    for s in r["steps"]:
        base = s["results"]["fp32"]
        rows += [_row(f"cpu_train/{s['workload']}/{name}", f"{row['images_per_s']:.0f} img/s",
                      f"{base['images_per_s']:.0f} img/s", row["ratio"], "", f"{r['arch']}, vs fp32")
                 for name, row in s["results"].items() if name != "fp32"]
    return rows


def _gpu_rows(r: dict) -> list[dict]:
    if r.get("status") != "ok":
        return [_row("gpu", note=f"skipped ({r.get('reason', 'no GPU')})")]
    return [_row(f"gpu/{w['workload']}/{w['arch']}", f"{w['images_per_s']:.0f} img/s", "", None, "",
                 f"MFU {100 * w['mfu']:.1f}% of measured bf16 peak") for w in r["results"]]


def _pipeline_rows(r: dict) -> list[dict]:
    if r["status"] != "ok":
        return [_row("pipeline", note=r["message"])]
    t = r["totals"]
    return [_row(f"pipeline/{r['profile']}", f"{t['wall_s_sum']:.0f} s summed wall", "", None, "",
                 f"{t['jobs']} jobs, {t['cpu_s_sum']:.0f} s CPU, peak {t['peak_rss_mb']:.0f} MB")]


SUMMARIES: dict[str, Callable[[dict], list[dict]]] = {
    "engine": _engine_rows, "mae": _mae_rows, "pgd": _pgd_rows, "certify": _certify_rows,
    "certify_batch": _certify_batch_rows,
    "autoattack": _autoattack_rows, "cpu_train": _cpu_train_rows, "gpu": _gpu_rows, "pipeline": _pipeline_rows}


def run_one(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    """Run one benchmark; a failure becomes ``{"status": "error", ...}`` instead of stopping the others."""
    print(f"\n=== {name} ===", flush=True)
    start = time.perf_counter()
    try:
        result = BENCHMARKS[name](args, tmp)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - one broken benchmark must not hide the rest
        traceback.print_exc()
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    result["elapsed_s"] = round(time.perf_counter() - start, 1)
    return result


def print_summary(rows: list[dict], info: dict) -> None:
    print(f"\n=== summary: {info['machine_id']}, {info['torch_threads']} torch thread(s), "
          f"load average {info['load_average']} at start ===")
    print(f"{'benchmark':<34}{'ours':>20}{'baseline':>20}{'ratio':>8}{'target':>10}  note")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else ""
        print(f"{r['benchmark']:<34}{r['ours']:>20}{r['baseline']:>20}{ratio:>8}{r['target']:>10}  {r['note']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds each (used by the tests)")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for every benchmark (default 1: stable on a shared machine)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<machine-id>.json")
    parser.add_argument("--profile", default="smoke", help="pipeline profile whose benchmark files are read")
    parser.add_argument("--results", type=Path, default=Path("results"), help="the pipeline's results folder")
    parser.add_argument("--run-pipeline", action="store_true", help="run `snakemake all` first (long)")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores with --run-pipeline")
    args = parser.parse_args(argv)
    names = [n.strip() for n in (args.only or ",".join(BENCHMARKS)).split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine_info()
    out = args.out or Path("benchmarks/results") / f"{info['machine_id']}{'-quick' if args.quick else ''}.json"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="benchmarks_") as tmp:
        results = {name: run_one(name, args, Path(tmp)) for name in args.names}
    rows = [row for name, result in results.items() for row in summary_rows(name, result)]
    report = {"machine_id": machine_id(), "machine": info, "quick": args.quick, "torch_threads": args.threads,
              "load_average_start": info["load_average"], "load_average_end": load_average(),
              "elapsed_s": round(time.perf_counter() - start, 1), "summary": rows, "benchmarks": results}
    print_summary(rows, info)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return report


if __name__ == "__main__":
    report = main()
    raise SystemExit(1 if any(r.get("status") == "error" for r in report["benchmarks"].values()) else 0)
