"""The settings a run is trained with, as recorded in each checkpoint, and what changed since.

Every checkpoint holds ``settings.json``: for a recipe run the resolved recipe (model config
with defaults and preset filled in, data, task and trainer sections, imports); for a
``Trainer`` built in Python the ``TrainerConfig`` and the model's config. Resuming compares
them with the new run's settings and refuses on any difference that could change the result,
unless the user asks to resume with the changes.
"""

from __future__ import annotations

import json
from typing import Any

# Keys that change how a run is shown, fed or saved, never what it computes (resuming is bit
# for bit exact whatever the checkpoint cadence).
IGNORED = frozenset({"name", "description", "trainer.progress", "trainer.num_workers",
                     "trainer.log_every", "trainer.checkpoint_every", "trainer.keep_checkpoints"})
RESUME_WITH_CHANGES_HINT = "--resume-with-changes (formerkit.train(..., resume_with_changes=True))"


def normalize(settings: dict[str, Any]) -> dict[str, Any]:
    """A JSON round trip: tuples become lists, as they are once read back from a checkpoint."""
    return json.loads(json.dumps(settings, default=str))


def flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"lr": 1e-3}}`` -> ``{"trainer.lr": 1e-3}``."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``["trainer.lr: 0.01 -> 0.02", ...]`` for every setting that differs (sorted).

    A key present on one side only shows as ``(unset)`` on the other.
    """
    before, after = flatten(normalize(old)), flatten(normalize(new))
    changes = []
    for key in sorted(set(before) | set(after)):
        if key in IGNORED:
            continue
        a, b = before.get(key, _UNSET), after.get(key, _UNSET)
        if a != b:
            changes.append(f"{key}: {_show(a)} -> {_show(b)}")
    return changes


class _Unset:
    def __repr__(self) -> str:
        return "(unset)"


_UNSET = _Unset()
_show = repr
