"""Makefile targets: `make help` lists them, `make dry-run` really dry-runs the pipeline, `make report` builds the report."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV, REPO

VENV = Path(sys.prefix)  # the environment running the tests: make must neither create nor reinstall it


def make(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = ["make", "-C", str(REPO), "--no-print-directory", f"VENV={VENV}", "-o", str(VENV / ".installed"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def phony_targets() -> list[str]:
    line = next(l for l in (REPO / "Makefile").read_text().splitlines() if l.startswith(".PHONY:"))
    return line.split(":", 1)[1].split()


def test_help_describes_every_target():
    out = make("help")
    assert out.returncode == 0, out.stderr
    described = re.findall(r"^make ([\w-]+)", out.stdout, flags=re.M)
    assert sorted(described) == sorted(t for t in phony_targets() if t != "help")


@pytest.mark.parametrize("target, command", [("dry-run", "snakemake -n all"),
                                             ("report", "snakemake --report results/smoke/report.html"),
                                             ("reference", "python -m robust_mim.reporting.reference render")])
def test_targets_run_their_snakemake_command(target, command):
    out = make("-n", target)
    assert out.returncode == 0, out.stderr
    assert command in [line.strip() for line in out.stdout.splitlines()]


def test_make_all_ends_by_pointing_to_claims_report_and_notebooks():
    out = make("-n", "all")
    assert out.returncode == 0, out.stderr
    for where in ("results/smoke/claims.md", "results/smoke/report.html", "results/smoke/html/"):
        assert where in out.stdout


def test_dry_run_plans_the_pipeline_without_running_a_job():
    out = make("dry-run", "SNAKEFLAGS=--forceall")  # plans every job even after `make all` finished them
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "This was a dry-run" in text and "finetune_classifier" in text
    # job specs travel as content-addressed files, not as JSON echoed into every log line
    specs = re.findall(r"--spec (results/smoke/specs/[0-9a-f]{16}\.json)", text)
    assert specs and "--spec '{" not in text
    assert json.loads((REPO / specs[0]).read_text())["profile"] == "smoke"
