"""Atomic file writes: write to a temporary file in the same folder, then ``os.replace``.

A killed job therefore leaves either the old file or the complete new one, never a torn file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import Tensor

from robust_mim.errors import CheckpointError


def _atomic(path: Path | str, write: Callable[[str], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    _atomic(path, write)


def atomic_torch_save(obj: object, path: Path | str) -> None:
    """``torch.save`` atomically (for resume checkpoints: tensors and plain values only)."""
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def save_weights(state: Mapping[str, Tensor], path: Path | str, metadata: dict[str, str] | None = None) -> None:
    """Save a state dict as safetensors, atomically (shared tensors are cloned)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    _atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata or {}))


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
