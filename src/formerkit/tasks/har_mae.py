"""Task ``har-mae``: masked-autoencoder pre-training of the activity model's encoder on UCI HAR
training windows, labels unused (``formerkit.models.timeseries.har_mae``).

Metric: ``loss``, the mean squared error of the normalised signal over the removed steps,
under masks drawn from ``task.eval_seed`` (the same masks at every evaluation, so the curve
compares like with like). Fine-tune with recipe ``har-uci`` and ``task.init_from=RUN``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from formerkit.config import ConfigBase, check_positive
from formerkit.data.har import HARSplit, HARWindows, load_uci_har
from formerkit.tasks.base import Task, TaskSetup, register_task
from formerkit.tasks.common import masked_reconstruction_loss, split_to_evaluate
from formerkit.tasks.har import HARDataConfig, build_har_model


@dataclasses.dataclass
class HARMAETaskConfig(ConfigBase):
    """The recipe's ``task`` section.

    Attributes:
        eval_batch_size: windows per forward pass in evaluation.
        eval_seed: seed of the evaluation masks.
    """

    eval_batch_size: int = 512
    eval_seed: int = 0

    def validate(self) -> None:
        check_positive(self, "eval_batch_size")


@torch.no_grad()
def evaluate_reconstruction(model: nn.Module, split: HARSplit, *, batch_size: int = 512,
                            seed: int = 0) -> dict[str, float]:
    """Mean masked-step MSE over ``split`` under masks drawn from ``seed``."""
    n_spans = split.x.shape[1] // model.config.span
    return masked_reconstruction_loss(model, split.x, input_name="inputs", n_units=n_spans,
                                      batch_size=batch_size, seed=seed)


class _Signals(HARWindows):
    """Items ``{"inputs": (T, C)}``: the augmented windows without their labels."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"inputs": super().__getitem__(index)["inputs"]}


@register_task
class HARMAETask(Task):
    name = "har-mae"
    description = "masked-autoencoder pre-training of the activity encoder on unlabelled windows"
    data_config = HARDataConfig
    task_config = HARMAETaskConfig

    def setup(self, model: dict[str, Any], data: HARDataConfig, task: HARMAETaskConfig, *,
              seed: int) -> TaskSetup:
        if data.mode != "windows":
            raise ValueError("task har-mae pre-trains on windows; data.mode must be 'windows'")
        if data.label_fraction != 1:
            raise ValueError("task har-mae uses no labels; data.label_fraction applies to the "
                             "fine-tuning recipe (har-uci), not to pre-training")
        dataset = load_uci_har(data.path, n_val_subjects=data.n_val_subjects,
                               split_seed=data.split_seed)
        network = build_har_model({"name": "har-mae", **model}, dataset)
        if not hasattr(network.config, "mask_ratio"):
            raise ValueError(f"task har-mae pre-trains a masked autoencoder (model.name: "
                             f"har-mae), not {type(network).__name__}")
        if dataset.train.x.shape[1] % network.config.span:
            raise ValueError(f"the {dataset.train.x.shape[1]}-step windows are not a multiple "
                             f"of model.span={network.config.span}")
        network.normalize.set_statistics(torch.from_numpy(dataset.train.x))
        train = _Signals(dataset.train, augment=data.augment, time_shift=data.time_shift,
                         jitter=data.jitter, scale=data.scale, rotate=data.rotate,
                         stitch_prob=data.stitch_prob)
        splits = {"val": dataset.val, "test": dataset.test}

        def evaluate(module: nn.Module, split: str) -> dict[str, float]:
            windows = split_to_evaluate(splits, split, "data.n_val_subjects=0")
            return evaluate_reconstruction(module, windows,
                                           batch_size=task.eval_batch_size,
                                           seed=task.eval_seed)

        return TaskSetup(model=network, train_dataset=train, evaluate=evaluate)
