"""Resumable training checkpoints, written atomically and verified when read.

A checkpoint is a directory ``DIR/checkpoint/step_00000123/`` holding ``model.safetensors``
(weights), ``state.pt`` (optimizer, scheduler, grad scaler, RNG states, data position, step and
trainer bookkeeping; loaded with ``torch.load(weights_only=True)``) and ``meta.json`` (sha256 and
size of both). It is first written to a hidden temporary directory, every file is fsync'ed, and
only then is the directory renamed into place, so a run killed at any moment leaves either a
complete checkpoint or none. Reading recomputes the checksums: a corrupt or truncated
checkpoint is reported and the previous good one is used instead.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from formerkit.data.registry import sha256_of
from formerkit.models.base import save_state_dict

WEIGHTS = "model.safetensors"
STATE = "state.pt"
META = "meta.json"
PREFIX = "step_"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be used (missing, truncated or corrupt file)."""


def fsync_dir(path: Path) -> None:
    """Make a rename or new file in ``path`` durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(file: Path, text: str) -> None:
    """Write ``text`` to ``file`` through a temporary file, fsync and rename."""
    file = Path(file)
    tmp = file.with_name(f".{file.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, file)
    fsync_dir(file.parent)


def _fsync_file(file: Path) -> None:
    with open(file, "rb+") as handle:
        os.fsync(handle.fileno())


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states (tensors and plain values only)."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: Path, step: int, weights: dict[str, torch.Tensor],
                    state: dict[str, Any], *, keep: int) -> Path:
    """Atomically write checkpoint ``step`` under ``root`` and keep only the last ``keep``.

    Args:
        root: the run's ``checkpoint/`` directory.
        step: optimizer steps done; names the directory.
        weights: full model state dict.
        state: everything else (tensors, numbers, strings, lists and dicts of them).
        keep: number of checkpoints kept (older ones are deleted after the new one is in place).

    Returns:
        The checkpoint directory.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_state_dict(weights, tmp / WEIGHTS)
    torch.save(state, tmp / STATE)
    meta = {"step": step, "files": {}}
    for name in (WEIGHTS, STATE):
        _fsync_file(tmp / name)
        meta["files"][name] = {"sha256": sha256_of(tmp / name), "size": (tmp / name).stat().st_size}
    with open(tmp / META, "w") as handle:
        json.dump(meta, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(tmp)
    if final.exists():  # a re-run that saves the same step again
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories under ``root``, oldest first (temporary leftovers excluded)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
             and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check sizes and checksums against ``meta.json``; return the meta data.

    Raises:
        CheckpointError: naming the file that is missing, truncated or corrupt.
    """
    meta_file = path / META
    try:
        meta = json.loads(meta_file.read_text())
        files = meta["files"]
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} is incomplete: {META} is missing") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path} has a corrupt {META}: {err}") from None
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
        size = file.stat().st_size
        if size != expected["size"]:
            raise CheckpointError(f"checkpoint file {file} is truncated or corrupt: "
                                  f"{size} bytes, expected {expected['size']}")
        if sha256_of(file) != expected["sha256"]:
            raise CheckpointError(f"checkpoint file {file} is corrupt: sha256 does not match "
                                  f"{META}")
    return meta


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Verify and read one checkpoint: ``(weights, state)`` on CPU."""
    verify_checkpoint(path)
    from safetensors.torch import load_file

    try:
        weights = load_file(str(path / WEIGHTS))
        state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch raise assorted types on bad data
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from None
    return weights, state


def find_resumable(root: Path) -> Path | None:
    """The newest checkpoint under ``root`` that verifies; corrupt ones are reported with a
    warning and skipped (falling back to the previous good one)."""
    for path in reversed(list_checkpoints(root)):
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"{err}; falling back to the previous checkpoint", stacklevel=2)
            continue
        return path
    return None
