"""Task contract: what a recipe's ``task`` section turns into for the trainer.

A task ties a model, its data and its objective together. ``formerkit train RECIPE`` reads the
recipe, calls the registered task's ``setup`` and hands the resulting ``TaskSetup`` to the
``Trainer``. The CLI commands that work on a finished run (``generate``, ``predict``) call the
task's optional hooks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from formerkit.config import ConfigBase, suggest

Batch = dict[str, torch.Tensor]


@dataclasses.dataclass
class TaskSetup:
    """Everything the trainer needs for one run.

    Attributes:
        model: the model to train; ``model(**batch)`` returns an output with ``.loss``
            unless ``compute_loss`` is given.
        train_dataset: map-style dataset; ``collate_fn`` turns a list of its items into a batch.
        collate_fn: list of items -> dict of tensors (``None``: items are already dicts of
            equal-shape tensors and are stacked).
        evaluate: ``evaluate(model, split)`` with split ``"val"`` or ``"test"`` returns metrics
            without prefix, e.g. ``{"loss": 1.7}``; the trainer adds ``val_``/``test_``.
            Must evaluate every example of the split (no dropped last batch).
        compute_loss: ``compute_loss(model, batch) -> scalar loss`` (mean over the batch).
        batch_sampler: optional ``batch_sampler(epoch) -> iterable of index lists`` that forms
            global batches itself (token-capped seq2seq batches); when given, the trainer
            shards each global batch across processes instead of sampling ``batch_size`` items.
        count_tokens: ``count_tokens(batch) -> int`` for ``tokens_per_s`` (default: samples/s).
        save_artifacts: ``save_artifacts(model_dir)`` writes what the model needs beside its
            weights (tokenizer, scaler statistics) when the trainer saves the model.
        after_training: ``after_training(model, output_dir)`` runs on rank 0 after the final
            evaluation (e.g. prints a generated sample).
        metric_for_best: validation metric (without prefix) used to choose the best checkpoint.
        greater_is_better: whether a larger ``metric_for_best`` is better.
    """

    model: nn.Module
    train_dataset: Any
    evaluate: Callable[[nn.Module, str], dict[str, float]]
    collate_fn: Callable[[list[Any]], Batch] | None = None
    compute_loss: Callable[[nn.Module, Batch], torch.Tensor] | None = None
    batch_sampler: Callable[[int], Iterable[list[int]]] | None = None
    count_tokens: Callable[[Batch], int] | None = None
    save_artifacts: Callable[[Path], None] | None = None
    after_training: Callable[[nn.Module, Path], None] | None = None
    metric_for_best: str = "loss"
    greater_is_better: bool = False


class Task:
    """A named objective. Subclasses set ``name``, ``description``, the config dataclasses of
    their recipe's ``data`` and ``task`` sections (so overrides are type-checked against them),
    and implement ``setup``."""

    name: str = ""
    description: str = ""
    data_config: type[ConfigBase] = ConfigBase
    task_config: type[ConfigBase] = ConfigBase

    def setup(self, model: dict[str, Any], data: Any, task: Any, *, seed: int) -> TaskSetup:
        """Build model, datasets and evaluation from a recipe's sections.

        Args:
            model: the recipe's ``model`` section: ``name``, optional ``preset``, config
                fields (already checked against the model's config dataclass).
            data: the ``data`` section as a ``self.data_config`` instance.
            task: the ``task`` section (without ``name``) as a ``self.task_config`` instance.
            seed: the run's seed, for data splits and initialisation.
        """
        raise NotImplementedError

    def generate(self, model_dir: Path, prompt: str, **options: Any) -> str:
        """Generate text from a saved model directory (CLI ``generate``)."""
        raise ValueError(f"task {self.name!r} does not support 'generate'")

    def predict(self, model_dir: Path, input_path: Path, **options: Any) -> Any:
        """Predict for a user's file (CLI ``predict``)."""
        raise ValueError(f"task {self.name!r} does not support 'predict'")

    def score_file(self, model_dir: Path, input_path: Path, reference_path: Path,
                   **options: Any) -> dict[str, Any]:
        """Score predictions for a user's file against references (CLI ``evaluate --input
        --reference``)."""
        raise ValueError(f"task {self.name!r} does not support scoring a file against "
                         "references")


_TASKS: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator registering a ``Task`` subclass under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a task name")
    _TASKS[cls.name] = cls()
    return cls


def get_task(name: str) -> Task:
    import formerkit.tasks  # noqa: F401  (registers the built-in tasks)

    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}{suggest(name, list(_TASKS))}; "
                         f"available: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def list_tasks() -> list[str]:
    import formerkit.tasks  # noqa: F401

    return sorted(_TASKS)
