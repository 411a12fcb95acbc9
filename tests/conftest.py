import copy
import functools
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch
from torch import nn

from tiny_models import train_digits_cnn

REPO = Path(__file__).resolve().parent.parent


def profile_schema(repo: Path = REPO) -> dict:
    """config/schema.yaml with every registered paper's section schema, as rules/common.smk composes it."""
    import yaml

    from robust_mim.config import compose_schema
    from robust_mim.papers import PAPERS

    return compose_schema(yaml.safe_load((repo / "config" / "schema.yaml").read_text()), {
        p.key: yaml.safe_load(p.schema_path.read_text()) for p in PAPERS.values() if p.schema_path.is_file()})
@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    return profile_schema()


def filled(kind: str, settings: dict) -> dict:
    """``settings`` of a registered objective, method or defense (kind: ``pretrain_objective``,
    ``pretext_objective``, ``finetune_method``, ``defense``) with the schema's defaults filled, as
    `robust_mim.config.validate_config` fills a run's: the factories have no defaults of their own."""
    from robust_mim.config import registered_settings

    return registered_settings(_schema(), kind, settings)


def vq_arch(**overrides) -> dict:
    """A VQ autoencoder's architecture: the schema's defaults (``$defs.vq_arch``), then ``overrides``."""
    from robust_mim.models.vq import VQ_ARCH_KEYS

    props = _schema()["$defs"]["vq_arch"]["properties"]
    return {**{k: props[k]["default"] for k in VQ_ARCH_KEYS}, **overrides}


def evaluation_values(**values) -> dict:
    """A profile's ``evaluation`` section: ``values`` over the schema's defaults, as validate_config fills it
    (what `robust_mim.evaluation.suite.evaluation_suite` and the ``attack`` command receive)."""
    from robust_mim.config import validate_config

    minimal = {"profile": "unit", "data": {"name": "digits"}, "model": {"arch": "vit_nano_patch4_16"}}
    return validate_config({**minimal, "evaluation": values}, _schema())["evaluation"]


torch.set_num_threads(1)  # tiny models: one thread is as fast and never oversubscribes


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def digits16():
    """(train, test) TensorDatasets of sklearn digits at 16x16, as the smoke profile uses."""
    from robust_mim.data import load_dataset

    return load_dataset("digits", "data", "train", 16), load_dataset("digits", "data", "test", 16)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then give back the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a whole test module: tiny models run fastest on one thread, and extra threads
    only spin on a busy 2-core machine. A module asks for it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def fresh_digits_cnn(digits16) -> Callable[[], nn.Module]:
    """Copies of the small CNN of `tiny_models.train_digits_cnn`, trained once per session on digits16's
    train split (clean accuracy ~95%).

    Each call returns a new deep copy (eval mode, free to mutate) and sets torch's global RNG to where
    the training left it, so a module sees the same model and random stream as when it trained its own.
    """
    x, y = digits16[0].tensors
    with torch_threads(1):
        model = train_digits_cnn(x, y)
    after_training = torch.get_rng_state()

    def fresh() -> nn.Module:
        torch.set_rng_state(after_training)
        return copy.deepcopy(model)
    return fresh


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
