"""End to end: the whole Snakemake pipeline on config/test.yaml in a temporary folder."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ENV, REPO, snakemake

pytestmark = pytest.mark.pipeline


def test_records_carry_provenance_and_values_in_range(pipeline):
    records = sorted((pipeline / "results" / "test" / "records").rglob("*.json"))
    assert records
    for path in records:
        rec = json.loads(path.read_text())
        prov = rec["provenance"]
        for key in ("git_commit", "config_hash", "seed", "versions", "device", "wall_time_s", "date"):
            assert key in prov, (path, key)
        assert rec["n_examples"] > 0 and rec["profile"] == "test"
        for row in rec["rows"]:
            if "accuracy" in row:
                assert 0.0 <= row["accuracy"] <= 1.0, (path, row)


def test_notebooks_and_figures_exist(pipeline):
    executed = sorted((pipeline / "results" / "test" / "notebooks").glob("*.ipynb"))
    assert {p.name for p in executed} >= {"00_overview.ipynb"}
    figures = list((pipeline / "figures" / "test").rglob("*.png"))
    assert figures and all(f.stat().st_size > 5000 for f in figures)


def test_a_second_call_has_nothing_to_do(pipeline):
    run = snakemake(pipeline, "-n", "all")
    assert run.returncode == 0
    assert "Nothing to be done" in run.stdout + run.stderr


def test_lint_is_clean():
    run = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True,
                         text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_a_bad_config_stops_with_one_readable_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "config" / "test.yaml").read_text().replace("epochs: 2", "epochs: -2", 1))
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                          str(tmp_path), "--configfile", str(bad), "-n"], capture_output=True, text=True, env=ENV)
    assert run.returncode != 0
    lines = [s for s in run.stderr.splitlines() if "config error" in s]
    assert lines and "pretrain.epochs" in lines[0] and "minimum" in lines[0]


def _planned_jobs(run: subprocess.CompletedProcess) -> dict[str, int]:
    """``{rule: count}`` from the "Job stats" table of a dry run."""
    text = (run.stdout + run.stderr).split("Job stats:")[-1]
    rows = [line.split() for line in text.splitlines()[3:]]
    return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit() and r[0] != "total"}


def test_editing_one_notebook_reruns_only_that_notebook(pipeline):
    """An edit (new content, not just a newer mtime: Snakemake compares small inputs' checksums)
    plans that notebook's execution and HTML export only; the notebook is restored afterwards."""
    notebook = REPO / "notebooks" / "01_nim_de3.ipynb"
    original, stat = notebook.read_bytes(), notebook.stat()
    try:
        notebook.write_bytes(original + b"\n")
        run = snakemake(pipeline, "-n", "all")
    finally:
        notebook.write_bytes(original)
        os.utime(notebook, (stat.st_atime, stat.st_mtime))
    assert run.returncode == 0, run.stderr[-3000:]
    assert _planned_jobs(run) == {"notebook_run": 1, "report_notebook_html": 1, "all": 1}
    assert "wildcards: notebook=01_nim_de3" in run.stdout
