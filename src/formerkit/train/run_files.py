"""The files of a run directory: ``recipe.yaml``, ``log.jsonl``, ``metrics.json``,
``checkpoint/`` and ``model/``; only the main process writes them, and only while it holds the
directory's lock (``run_lock.py``)."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from formerkit.train.checkpoint import atomic_write_text, fsync_dir
from formerkit.train.run_lock import LOCK_FILE

RECIPE_FILE = "recipe.yaml"
LOG_FILE = "log.jsonl"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoint"
MODEL_DIR = "model"
PREVIOUS_DIR = "previous"
# A restart moves everything else aside (run files, task artifacts, kept settings).
KEPT_ON_RESTART = (LOCK_FILE, PREVIOUS_DIR)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunFiles:
    """Paths of a run directory and the writes to it (no-ops when ``enabled`` is False)."""

    def __init__(self, root: Path, *, enabled: bool = True,
                 report_to: list[str] | None = None) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.report_to = list(report_to or [])
        self.loggers: list[Any] = []
        self.checkpoint_dir = self.root / CHECKPOINT_DIR
        self.best_dir = self.checkpoint_dir / "best"
        self.model_dir = self.root / MODEL_DIR
        self.log_file = self.root / LOG_FILE

    def start(self, recipe: dict[str, Any] | None, step: int) -> None:
        """Create the directory, write the recipe, and drop log lines after ``step`` (left by
        a run that was killed after its last checkpoint) so a resumed log has no duplicates."""
        if not self.enabled:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        if recipe is not None:
            import yaml

            atomic_write_text(self.root / RECIPE_FILE,
                              yaml.safe_dump(recipe, sort_keys=False, default_flow_style=False))
        if self.log_file.exists():
            kept = []
            for line in self.log_file.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if record.get("step", 0) <= step and not record.get("final"):
                    kept.append(line)
            atomic_write_text(self.log_file, "".join(f"{line}\n" for line in kept))
        self._start_loggers()

    def _start_loggers(self) -> None:
        from formerkit.train.loggers import build_loggers

        self.loggers = build_loggers(self.report_to, self.root)
        records = [json.loads(line) for line in self.log_file.read_text().splitlines()] \
            if self.log_file.exists() else []
        for logger in self.loggers:
            logger.start(records)

    def clean_leftovers(self) -> list[Path]:
        """Remove what killed runs leave behind (``.tmp-step_N-PID`` folders, ``.NAME.tmp``
        files); a ``model/`` that was being replaced is restored from ``.model.old``.
        Returns what was removed. Call only while holding the run's lock."""
        from formerkit.train.checkpoint import remove_temporaries

        if not self.enabled:
            return []
        removed = remove_temporaries(self.checkpoint_dir) + remove_temporaries(self.best_dir)
        old = self.root / f".{MODEL_DIR}.old"
        if old.is_dir() and not self.model_dir.exists():  # killed between the two renames
            os.replace(old, self.model_dir)
        for path in [old, *self.root.glob(".*.tmp")]:
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed.append(path)
        return removed

    def archive(self) -> Path | None:
        """Move everything of an earlier run (its files, task artifacts, kept settings) into
        ``previous/<UTC time>/``: a restart keeps them rather than deleting them. ``None`` when
        there was nothing to move."""
        present = sorted(p.name for p in self.root.iterdir() if p.name not in KEPT_ON_RESTART) \
            if self.root.is_dir() else []
        if not self.enabled or not present:
            return None
        target = self.root / PREVIOUS_DIR / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        n = 1
        while target.exists():
            n += 1
            target = target.with_name(f"{target.name.split('.')[0]}.{n}")
        target.mkdir(parents=True)
        for name in present:
            os.replace(self.root / name, target / name)
        fsync_dir(self.root)
        return target

    def keep_settings(self, step: int, settings: dict[str, Any]) -> Path | None:
        """Write the settings steps up to ``step`` were trained with to
        ``settings.step_N.json``, before a resume with changed settings goes on."""
        if not self.enabled:
            return None
        kept = self.root / f"settings.step_{step:08d}.json"
        atomic_write_text(kept, json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return kept

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {k: _json_value(v) for k, v in record.items()}
        with open(self.log_file, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        for logger in self.loggers:
            logger.log(record)

    def close(self) -> None:
        """Flush and close the ``report_to`` loggers."""
        for logger in self.loggers:
            logger.close()
        self.loggers = []

    def write_metrics(self, metrics: dict[str, float]) -> None:
        if self.enabled:
            text = json.dumps({k: _json_value(v) for k, v in metrics.items()}, indent=2)
            atomic_write_text(self.root / METRICS_FILE, text + "\n")


def save_model(model: nn.Module, path: Path, *, weights: dict[str, torch.Tensor] | None = None,
               save_artifacts: Callable[[Path], None] | None = None) -> Path:
    """Save ``model`` to ``path`` through a temporary directory renamed into place.

    A ``PreTrainedModel`` uses ``save_pretrained``; any other module gets
    ``model.safetensors``. ``weights`` (a gathered FSDP state dict) replaces the module's own
    sharded state. ``save_artifacts(dir)`` then adds what the task needs (tokenizer, scalers).
    """
    from formerkit.models.base import WEIGHTS_NAME, PreTrainedModel, save_state_dict

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if isinstance(model, PreTrainedModel):
        to_save = model
        if weights is not None:  # FSDP: an unsharded copy built on the meta device
            with torch.device("meta"):
                to_save = type(model)(model.config)
            to_save.load_state_dict(weights, assign=True)
            to_save.tokenizer, to_save.generation_config = model.tokenizer, \
                model.generation_config
        to_save.save_pretrained(tmp)
    else:
        tmp.mkdir(parents=True)
        state = weights if weights is not None else model.state_dict()
        save_state_dict(state, tmp / WEIGHTS_NAME)
    if save_artifacts is not None:
        save_artifacts(tmp)
    old = path.with_name(f".{path.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path
