"""Atomic writes: the umask's file mode, one line on a full disk, byte-identical safetensors."""
import errno
import hashlib
import os
import subprocess
import sys

import pytest
import torch

from conftest import ENV, REPO
from robust_mim import io
from robust_mim.errors import RobustMimError
from robust_mim.io import atomic_torch_save, atomic_write_text, load_weights, save_weights

METADATA = {k: f"value {i}" for i, k in enumerate(["kind", "config_hash", "arch", "mean", "std", "classes", "é"])}


@pytest.fixture
def umask_027():
    before = os.umask(0o027)
    yield
    os.umask(before)


def test_atomic_writes_get_the_umask_mode_as_open_would(tmp_path, umask_027):
    atomic_write_text(tmp_path / "a.json", "{}")
    atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "b.pt")
    save_weights({"w": torch.zeros(2)}, tmp_path / "c.safetensors")
    (tmp_path / "plain.txt").write_text("x")
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["a.json", "b.pt", "c.safetensors", "plain.txt"], 0o640)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on device while writing"),
                                         (errno.EACCES, "cannot write")])
@pytest.mark.parametrize("save", ["text", "torch", "weights"])
def test_a_failed_write_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch, code, words, save):
    path = tmp_path / "ckpt"
    path.write_bytes(b"last good checkpoint")
    real_open = open

    def full_disk_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        if "w" in mode:
            fh.close()
            raise OSError(code, os.strerror(code))
        return fh
    monkeypatch.setattr("builtins.open", full_disk_open)
    write = {"text": lambda: atomic_write_text(path, "new"),
             "torch": lambda: atomic_torch_save({"w": torch.zeros(2)}, path),
             "weights": lambda: save_weights({"w": torch.zeros(2)}, path)}[save]
    with pytest.raises(RobustMimError) as err:
        write()
    monkeypatch.undo()
    assert str(err.value).startswith(f"{words} {path}") and "\n" not in str(err.value)
    assert path.read_bytes() == b"last good checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"], "temporary file left behind"


def test_a_real_device_error_in_torch_save_is_an_oserror(tmp_path, monkeypatch):
    """torch.save onto a path reports a full disk as an opaque RuntimeError; through a Python file it is ENOSPC."""
    monkeypatch.setattr(io, "open", lambda *a, **k: open("/dev/full", "wb"), raising=False)
    with pytest.raises(io.WriteFailed, match="no space left on device"):
        atomic_torch_save({"w": torch.zeros(1000)}, tmp_path / "ckpt.pt")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_identical_saves_give_identical_bytes_in_one_process(tmp_path):
    state = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(3, dtype=torch.float16)}
    for i in range(8):
        save_weights(state, tmp_path / f"{i}.safetensors", METADATA)
    assert len({_sha(p) for p in tmp_path.iterdir()}) == 1


SAVE = """
import sys, torch
from robust_mim.io import save_weights
from test_io import METADATA
save_weights({"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(3, dtype=torch.float16)}, sys.argv[1], METADATA)
"""


def test_identical_saves_give_identical_bytes_across_processes(tmp_path):
    for seed in ("0", "1", "random"):
        env = {**ENV, "PYTHONHASHSEED": seed, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
        subprocess.run([sys.executable, "-c", SAVE, str(tmp_path / f"{seed}.safetensors")], env=env, check=True,
                       timeout=300)
    assert len({_sha(p) for p in tmp_path.iterdir()}) == 1


def test_the_sorted_file_loads_with_safetensors_own_reader(tmp_path):
    from safetensors import safe_open

    state = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(3, dtype=torch.float16), "c": torch.zeros(5, 7)}
    save_weights(state, tmp_path / "w.safetensors", METADATA)
    loaded = load_weights(tmp_path / "w.safetensors")
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as fh:
        assert fh.metadata() == METADATA
    assert int.from_bytes((tmp_path / "w.safetensors").read_bytes()[:8], "little") % 8 == 0
