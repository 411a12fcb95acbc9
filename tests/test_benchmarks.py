"""Smoke tests of the benchmark code paths (``python -m benchmarks``) at tiny sizes.

They check that every benchmark runs and that the JSON has its fields; they never assert
timings (performance is measured by running the benchmarks, not in tests).
"""
import json
import sys

import pytest
import torch

from conftest import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import benchmarks  # noqa: E402
from benchmarks import __main__ as bench_all  # noqa: E402
from benchmarks import bench_pipeline  # noqa: E402

@pytest.fixture(autouse=True, scope="module")
def keep_torch_threads():
    """``python -m benchmarks`` fixes torch's thread count; give the other test files theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


TSV_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """One ``python -m benchmarks --quick`` run over every benchmark (no pipeline results here)."""
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "report.json"
    bench_all.main(["--quick", "--out", str(out), "--results", str(tmp / "no-results")])
    return json.loads(out.read_text())


def test_quick_run_writes_every_benchmark_with_machine_fields(quick_report):
    assert set(quick_report["benchmarks"]) == set(bench_all.BENCHMARKS)
    errors = {k: v["error"] for k, v in quick_report["benchmarks"].items() if v.get("status") == "error"}
    assert not errors
    machine = quick_report["machine"]
    for key in ("machine_id", "hostname", "cpu_model", "torch", "torch_threads", "load_average"):
        assert key in machine
    assert quick_report["torch_threads"] == machine["torch_threads"] == 1
    assert quick_report["quick"] is True


def test_engine_and_mae_report_both_sides_and_their_ratio(quick_report):
    engine = quick_report["benchmarks"]["engine"]
    assert {r["model"] for r in engine["runs"]} == {"classifier", "mae"}
    for run in engine["runs"]:
        plain, ours = run["results"]["plain"], run["results"]["engine.train_one_epoch"]
        assert len(plain["runs_s"]) == len(ours["runs_s"]) == engine["repeats"]
        assert run["ratio"] == pytest.approx(ours["images_per_s"] / plain["images_per_s"])
        assert run["paired_ratios"]["min"] <= run["paired_ratios"]["median"] <= run["paired_ratios"]["max"]
        assert "checkpoint_per_epoch_us" in run["breakdown_us_per_step"]
    mae = quick_report["benchmarks"]["mae"]["runs"][0]
    masked, full = mae["results"]["encoder mask0.75"], mae["results"]["encoder mask0"]
    assert mae["encoder_ratio"] == pytest.approx(full["median_s"] / masked["median_s"])
    assert mae["encoder_flop_ratio"] > 2.0  # 16 patches, 4 visible: the encoder does far less work
    assert mae["token_ratio"] == pytest.approx(17 / 5)


def test_certify_batch_compares_with_the_profiles_setting_on_the_same_noise(quick_report):
    run = quick_report["benchmarks"]["certify_batch"]
    base = run["results"][run["baseline"]]
    assert run["baseline"] == "fp32 batch 60" and base["ratio"] == pytest.approx(1.0) and base["same_result"]
    assert set(run["results"]) == {"fp32 batch 20", "fp32 batch 60", "bf16 batch 20", "bf16 batch 60"}
    for row in run["results"].values():
        assert row["ratio"] == pytest.approx(base["seconds"] / row["seconds"]) and isinstance(row["same_result"], bool)
    assert run["ratio"] == max(r["ratio"] for r in run["results"].values())


def test_summary_has_a_row_per_comparison_and_pipeline_says_how_to_produce(quick_report):
    rows = {r["benchmark"]: r for r in quick_report["summary"]}
    for name in ("engine/classifier", "engine/mae", "pgd/cnn", "pgd/cnn/art-numpy", "certify/cnn", "autoattack/vit"):
        assert rows[name]["ratio"] is not None and rows[name]["ratio"] > 0
    pipeline = quick_report["benchmarks"]["pipeline"]
    assert pipeline["status"] == "missing" and "snakemake" in pipeline["message"]


def test_a_failing_benchmark_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    def broken(args, tmp):
        raise RuntimeError("boom")

    monkeypatch.setitem(bench_all.BENCHMARKS, "engine", broken)
    report = bench_all.main(["--quick", "--only", "engine,pipeline", "--out", str(tmp_path / "r.json"),
                             "--results", str(tmp_path)])
    assert report["benchmarks"]["engine"] == {"status": "error", "error": "RuntimeError: boom",
                                              "elapsed_s": report["benchmarks"]["engine"]["elapsed_s"]}
    assert report["benchmarks"]["pipeline"]["status"] == "missing"
    assert "ERROR" in report["summary"][0]["note"]


def test_unknown_benchmark_name_is_refused():
    with pytest.raises(SystemExit):
        bench_all.parse_args(["--only", "engine,nope"])


def test_interleaved_times_warms_up_then_alternates_the_order():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = benchmarks.interleaved_times(fns, repeats=3, warmup=1)
    assert calls == list("abc") + list("abc") + list("cba") + list("abc")
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_machine_id_is_file_name_safe():
    mid = benchmarks.machine_id()
    assert mid and all(c.isalnum() or c in "-." for c in mid) and mid == mid.lower()


def _write_tsv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TSV_HEADER + "".join("\t".join(map(str, r)) + "\n" for r in rows))


def test_pipeline_reads_snakemake_benchmark_files_slowest_first(tmp_path):
    bench = tmp_path / "results" / "smoke" / "benchmarks"
    _write_tsv(bench / "pretrain_mim" / "mae.tsv", [[30.0, "0:00:30", 900, 1, 1, 1, 0, 0, 95, 28.5]])
    _write_tsv(bench / "finetune_classifier" / "a.tsv", [[50.0, "0:00:50", 700, 1, 1, 1, 0, 0, 90, 45.0]])
    _write_tsv(bench / "finetune_classifier" / "b.tsv", [[10.0, "0:00:10", "NA", 1, 1, 1, 0, 0, "NA", 9.0]])
    result = bench_pipeline.main(["--profile", "smoke", "--results", str(tmp_path / "results"),
                                  "--out", str(tmp_path / "p.json")])
    assert [(j["rule"], j["id"]) for j in result["jobs"]] == [
        ("finetune_classifier", "a"), ("pretrain_mim", "mae"), ("finetune_classifier", "b")]
    assert result["jobs"][2]["max_rss"] is None
    assert [(r["rule"], r["jobs"], r["wall_s"]) for r in result["rules"]] == [
        ("finetune_classifier", 2, 60.0), ("pretrain_mim", 1, 30.0)]
    assert result["totals"]["wall_s_sum"] == 90.0 and result["totals"]["cpu_s_sum"] == 82.5
    assert result["totals"]["peak_rss_mb"] == 900
    assert json.loads((tmp_path / "p.json").read_text())["status"] == "ok"
