"""Default loss and evaluation loop for a ``Trainer`` given plain datasets (no task).

The loss follows the HuggingFace convention: ``model(**batch).loss``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from formerkit.train.batches import fetch

Batch = dict[str, torch.Tensor]


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) dict/list/tuple batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def model_loss(output: Any) -> torch.Tensor:
    """The ``loss`` of a model output (dataclass, dict) or the output itself if a scalar."""
    loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", output)
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise ValueError("the model output has no scalar 'loss': pass labels in the batch or "
                         "give the Trainer a compute_loss(model, batch) function")
    return loss


def default_compute_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """``model(**batch).loss``."""
    return model_loss(model(**batch))


def batch_size_of(batch: Any) -> int:
    """Number of samples in a batch: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    values = batch.values() if isinstance(batch, dict) else batch
    for value in values:
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return int(value.shape[0])
    raise ValueError("cannot tell the batch size: the batch holds no tensor")


def make_evaluate(datasets: dict[str, Any], *, batch_size: int,
                  collate_fn: Callable | None = None,
                  metrics: Callable[[Any, Batch], dict[str, float]] | None = None
                  ) -> Callable[[nn.Module, str], dict[str, float]]:
    """An ``evaluate(model, split)`` over whole datasets, in order, in batches.

    Args:
        datasets: ``{"val": dataset, "test": dataset}`` (a missing split returns ``{}``).
        batch_size: evaluation batch size (the last batch may be smaller; nothing is dropped).
        collate_fn: list of items -> batch.
        metrics: ``metrics(model_output, batch) -> {name: value}`` per batch; values are
            averaged over samples (weighted by batch size), as is the model's ``loss``.

    Returns:
        ``evaluate(model, split) -> {"loss": ..., **metrics}``.
    """

    def evaluate(model: nn.Module, split: str) -> dict[str, float]:
        dataset = datasets.get(split)
        if dataset is None:
            return {}
        device = next(model.parameters()).device
        totals: dict[str, float] = {}
        count = 0
        for start in range(0, len(dataset), batch_size):
            indices = list(range(start, min(start + batch_size, len(dataset))))
            batch = to_device(fetch(dataset, indices, collate_fn), device)
            output = model(**batch)
            n = batch_size_of(batch)
            values = {}
            loss = output.get("loss") if isinstance(output, dict) else \
                getattr(output, "loss", None)
            if isinstance(loss, torch.Tensor) and loss.ndim == 0:
                values["loss"] = float(loss)
            if metrics is not None:
                values.update({k: float(v) for k, v in metrics(output, batch).items()})
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + value * n
            count += n
        return {key: value / max(count, 1) for key, value in totals.items()}

    return evaluate
