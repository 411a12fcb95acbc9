import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)  # tiny models: one thread is as fast and never oversubscribes


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def digits16():
    """(train, test) TensorDatasets of sklearn digits at 16x16, as the smoke profile uses."""
    from robust_mim.data import load_dataset

    return load_dataset("digits", "data", "train", 16), load_dataset("digits", "data", "test", 16)


ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def snakemake(workdir: Path, *args: str, config: str = "config/test.yaml") -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` with a profile from config/."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(REPO / config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=1700)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> Path:
    """A finished run of ``snakemake all`` on config/test.yaml (shared by every pipeline test)."""
    work = tmp_path_factory.mktemp("pipeline")
    run = snakemake(work, "--cores", "2", "all")
    assert run.returncode == 0, run.stderr[-6000:]
    return work
