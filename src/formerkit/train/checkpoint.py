"""Resumable training checkpoints, written atomically and verified when read.

A checkpoint is a directory ``DIR/checkpoint/step_00000123/`` holding ``model.safetensors``
(weights), ``state.pt`` (optimizer, scheduler, grad scaler, RNG states, data position, step and
trainer bookkeeping; loaded with ``torch.load(weights_only=True)``), ``settings.json`` (the
settings the run was trained with, when the trainer knows them) and ``meta.json`` (sha256 and
size of each). It is first written to a hidden temporary directory, every file is fsync'ed, and
only then is the directory renamed into place, so a run killed at any moment leaves either a
complete checkpoint or none. Reading recomputes the checksums: a corrupt or truncated
checkpoint is reported and the previous good one is used instead; when none verifies, the run
stops rather than silently starting over (``resume_point``).
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
SETTINGS = "settings.json"
PREFIX = "step_"
TMP_PREFIX = ".tmp-"
CORRUPT_PREFIX = "corrupt-"
# meta.json may only name these files: a name like ``../../etc/hostname`` is never read.
REQUIRED_FILES = (WEIGHTS, STATE)
KNOWN_FILES = (WEIGHTS, STATE, SETTINGS)
RESTART_HINT = "--restart (formerkit.train(..., restart=True))"


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
                    state: dict[str, Any], *, keep: int, settings: dict[str, Any] | None = None,
                    verified: set[Path] | None = None) -> Path:
    """Atomically write checkpoint ``step`` under ``root`` and keep only the last ``keep``.

    Args:
        root: the run's ``checkpoint/`` directory.
        step: optimizer steps done; names the directory.
        weights: full model state dict.
        state: everything else (tensors, numbers, strings, lists and dicts of them).
        keep: number of verified checkpoints kept (older ones are deleted after the new one is
            in place; a corrupt one never counts as kept, see ``prune_checkpoints``).
        settings: the settings the run was trained with, written as ``settings.json``.
        verified: checkpoints known to be good (this one is added); the others are verified
            before they count as kept.

    Returns:
        The checkpoint directory.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f"{TMP_PREFIX}{PREFIX}{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _write_checkpoint_files(tmp, step, weights, state, settings)
    except BaseException:  # a full disk or a kill: leave no half-written folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # a re-run that saves the same step again
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    verified = verified if verified is not None else set()
    verified.add(final)
    prune_checkpoints(root, keep, verified)
    return final


def _write_checkpoint_files(tmp: Path, step: int, weights: dict[str, torch.Tensor],
                            state: dict[str, Any], settings: dict[str, Any] | None) -> None:
    save_state_dict(weights, tmp / WEIGHTS)
    torch.save(state, tmp / STATE)
    names = [WEIGHTS, STATE]
    if settings is not None:
        (tmp / SETTINGS).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        names.append(SETTINGS)
    meta: dict[str, Any] = {"step": step, "files": {}}
    for name in names:
        _fsync_file(tmp / name)
        meta["files"][name] = {"sha256": sha256_of(tmp / name), "size": (tmp / name).stat().st_size}
    with open(tmp / META, "w") as handle:
        json.dump(meta, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(tmp)


def prune_checkpoints(root: Path, keep: int, verified: set[Path]) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints that verify; returns the deleted ones.

    A checkpoint not in ``verified`` is checked before it counts as kept (and added to the
    set); one that fails is set aside as ``corrupt-step_N`` rather than kept in place of a good
    one or deleted.
    """
    kept: list[Path] = []
    deleted: list[Path] = []
    for path in reversed(list_checkpoints(root)):
        if len(kept) >= keep:
            shutil.rmtree(path, ignore_errors=True)
            verified.discard(path)
            deleted.append(path)
            continue
        if path not in verified:
            try:
                verify_checkpoint(path)
            except CheckpointError as err:
                aside = set_aside(path)
                warnings.warn(f"{_one_line(err)}; set aside as {aside.name}", stacklevel=2)
                continue
            verified.add(path)
        kept.append(path)
    return deleted


def set_aside(path: Path) -> Path:
    """Rename a corrupt checkpoint to ``corrupt-step_N`` (``-2``, ... if taken): no longer
    resumed from or counted as kept, but not deleted either."""
    target = path.with_name(f"{CORRUPT_PREFIX}{path.name}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{CORRUPT_PREFIX}{path.name}-{n}")
    os.replace(path, target)
    return target


def remove_temporaries(root: Path) -> list[Path]:
    """Delete the ``.tmp-step_N-PID`` folders of saves that were killed half-way (call it
    only while holding the run's lock, when no other process can be writing one)."""
    if not root.is_dir():
        return []
    stale = [p for p in root.iterdir() if p.name.startswith(TMP_PREFIX) and p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories under ``root``, oldest first (temporary leftovers excluded)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
             and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check sizes and checksums against ``meta.json``; return the meta data.

    ``meta.json`` must list ``model.safetensors`` and ``state.pt`` and may name no file other
    than the checkpoint's own, so an edited one can neither switch verification off nor make
    formerkit read a file outside the checkpoint.

    Raises:
        CheckpointError: naming the file that is missing, truncated or corrupt.
    """
    meta_file = path / META
    try:
        meta = json.loads(meta_file.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} is incomplete: {META} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint file {meta_file} is corrupt: {err}") from None
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, dict):
        raise CheckpointError(f"checkpoint file {meta_file} is corrupt: it has no 'files' table")
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise CheckpointError(f"checkpoint file {meta_file} is corrupt: it lists no checksum "
                              f"for {', '.join(missing)}")
    for name, expected in files.items():
        if name not in KNOWN_FILES:
            raise CheckpointError(f"checkpoint file {meta_file} is corrupt: it names {name!r}, "
                                  f"which is not a checkpoint file ({', '.join(KNOWN_FILES)})")
        if not (isinstance(expected, dict) and isinstance(expected.get("size"), int)
                and isinstance(expected.get("sha256"), str)):
            raise CheckpointError(f"checkpoint file {meta_file} is corrupt: the entry of "
                                  f"{name} needs an integer 'size' and a 'sha256'")
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


def read_settings(path: Path) -> dict[str, Any] | None:
    """The settings a (verified) checkpoint records, or ``None`` for one written before
    checkpoints recorded them."""
    file = path / SETTINGS
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint file {file} is corrupt: {err}") from None


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


def resume_point(root: Path) -> Path | None:
    """The checkpoint a run resumes from: the newest one that verifies, or ``None`` when
    ``root`` holds no checkpoint.

    Corrupt checkpoints newer than it are set aside (``corrupt-step_N``) with a warning, so
    they are neither resumed from later nor kept by the cleanup in place of good ones.

    Raises:
        CheckpointError: checkpoints exist but none verifies; the message names each and the
            flag that starts afresh. Nothing is moved or deleted then.
    """
    found = list_checkpoints(root)
    problems: list[tuple[Path, CheckpointError]] = []
    for path in reversed(found):
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            problems.append((path, err))
            continue
        for bad, err in problems:
            aside = set_aside(bad)
            warnings.warn(f"{_one_line(err)}; set aside as {aside.name}, resuming from "
                          f"{path.name}", stacklevel=2)
        return path
    if not found:
        return None
    detail = "; ".join(_one_line(err) for _, err in problems)
    raise CheckpointError(f"no checkpoint in {root} verifies, so the run cannot resume and "
                          f"was not restarted either ({detail}); repair or move them, or start "
                          f"afresh with {RESTART_HINT}, which keeps the old files aside")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
