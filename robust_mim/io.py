"""Atomic file writes: write to a temporary file in the same folder, then ``os.replace``.

A killed job therefore leaves either the old file or the complete new one, never a torn file.
New files get the mode a plain ``open()`` would give them (0666 less the umask), and a full disk
or any other write failure is one `WriteFailed` line that keeps the previous file untouched.
Safetensors files are byte-identical for identical tensors and metadata (sorted JSON header).
"""
from __future__ import annotations

import errno
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import Tensor

from robust_mim.errors import CheckpointError, RobustMimError


class WriteFailed(RobustMimError, OSError):
    """An output file could not be written (full disk, permissions); the previous file is kept."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_failed(path: Path, exc: OSError) -> WriteFailed:
    if exc.errno == errno.ENOSPC:
        return WriteFailed(f"no space left on device while writing {path} (the previous file, if any, is kept)")
    return WriteFailed(f"cannot write {path}: {exc.strerror or exc} (the previous file, if any, is kept)")


def _atomic(path: Path | str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then move it onto ``path``.

    Raises:
        WriteFailed: one line when the disk is full or the folder is not writable; the
            temporary file is removed and an existing ``path`` stays as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; collaborators need the umask's mode
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise _write_failed(path, exc) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _write_bytes(data: bytes) -> Callable[[str], None]:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return write


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    _atomic(path, _write_bytes(text.encode("utf-8")))


def atomic_torch_save(obj: object, path: Path | str) -> None:
    """``torch.save`` atomically (for resume checkpoints: tensors and plain values only).

    The bytes go through a Python file object so that a full disk raises ``OSError`` (torch's
    own file writer reports it as an opaque RuntimeError).
    """
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
    _atomic(path, write)


def canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with its JSON header in sorted-key order (space padded to 8 bytes).

    safetensors serialises ``__metadata__`` from a hash map whose order changes between calls,
    so identical tensors and metadata would otherwise give different bytes (and sha256).
    """
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    blob = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the format allows trailing spaces; keeps tensor data 8-byte aligned
    return struct.pack("<Q", len(blob)) + blob + data[8 + n:]


def save_weights(state: Mapping[str, Tensor], path: Path | str, metadata: dict[str, str] | None = None) -> None:
    """Save a state dict as safetensors, atomically and byte-reproducibly (shared tensors are cloned)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    _atomic(path, _write_bytes(canonical_safetensors(save(tensors, metadata=metadata or {}))))


def load_weights(path: Path | str) -> dict[str, Tensor]:
    """Load a safetensors state dict; a missing or corrupt file raises CheckpointError."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise CheckpointError(f"weights file '{path}' does not exist (run the rule that produces it)")
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure to parse is corruption
        raise CheckpointError(f"cannot read weights '{path}' ({type(exc).__name__}: {exc}); "
                              "delete it and rerun the rule that produces it") from None
