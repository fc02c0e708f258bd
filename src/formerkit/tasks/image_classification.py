"""Task ``image-classification``: one label per image (ViT, or the CNN baseline) on a small
image dataset, with ``loss``, ``accuracy`` and ``macro_f1`` on stratified validation and test
splits and a confusion matrix of the test split (``confusion.json``, for ``plot confusion``).

Any registered model that takes ``pixel_values`` and ``labels`` and returns ``logits`` and
``loss`` fits; ``image_size``, ``n_channels`` and ``num_labels`` default to the data's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from formerkit.config import ConfigBase, check_choice, check_positive
from formerkit.data.images import DATASETS, ImageItems, ImageSplit, load_digits
from formerkit.metrics import accuracy, confusion_matrix, macro_f1
from formerkit.models.registry import create_model
from formerkit.tasks.base import Task, TaskSetup, register_task
from formerkit.tasks.har import CONFUSION_FILE, write_confusion


@dataclasses.dataclass
class ImageDataConfig(ConfigBase):
    """The recipe's ``data`` section.

    Attributes:
        dataset: ``digits`` (scikit-learn's 8x8 handwritten digits).
        val_fraction, test_fraction: share of each class held out.
        split_seed: seed of the split.
    """

    dataset: str = "digits"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0

    def validate(self) -> None:
        check_choice(self, "dataset", DATASETS)


@dataclasses.dataclass
class ImageTaskConfig(ConfigBase):
    """The recipe's ``task`` section: ``eval_batch_size`` images per evaluation pass."""

    eval_batch_size: int = 512

    def validate(self) -> None:
        check_positive(self, "eval_batch_size")


@torch.no_grad()
def evaluate_images(model: nn.Module, split: ImageSplit, *, batch_size: int = 512
                    ) -> dict[str, Any]:
    """Mean cross-entropy, accuracy, macro F1 and the predicted class of every image."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum, predictions = 0.0, []
    for start in range(0, len(split), batch_size):
        pixels = torch.from_numpy(split.x[start:start + batch_size]).to(device)
        labels = torch.from_numpy(split.y[start:start + batch_size]).to(device)
        out = model(pixel_values=pixels, labels=labels)
        loss_sum += out.loss.item() * len(labels)
        predictions.append(out.logits.argmax(dim=-1).cpu())
    predicted = torch.cat(predictions).numpy()
    n_classes = model.config.num_labels
    return {"loss": loss_sum / max(len(split), 1), "accuracy": accuracy(predicted, split.y),
            "macro_f1": macro_f1(predicted, split.y, n_classes), "predictions": predicted}


@register_task
class ImageClassificationTask(Task):
    name = "image-classification"
    description = "image classification (ViT or a CNN baseline) on scikit-learn's digits"
    data_config = ImageDataConfig
    task_config = ImageTaskConfig

    def setup(self, model: dict[str, Any], data: ImageDataConfig, task: ImageTaskConfig, *,
              seed: int) -> TaskSetup:
        dataset = load_digits(val_fraction=data.val_fraction,
                              test_fraction=data.test_fraction, split_seed=data.split_seed)
        fields = {k: v for k, v in model.items() if k not in ("name", "preset")}
        fields.setdefault("image_size", dataset.train.x.shape[-1])
        fields.setdefault("n_channels", dataset.train.x.shape[1])
        fields.setdefault("num_labels", len(dataset.class_names))
        network = create_model(model.get("name", "vit"), model.get("preset"), **fields)
        splits = {"val": dataset.val, "test": dataset.test}
        last_test: dict[str, np.ndarray] = {}

        def evaluate(module: nn.Module, split: str) -> dict[str, float]:
            if split not in splits:
                raise KeyError(f"split must be 'val' or 'test', got {split!r}")
            if len(splits[split]) == 0:
                raise ValueError(f"the {split} split is empty (data.val_fraction=0); set "
                                 "trainer.eval_every=0")
            result = evaluate_images(module, splits[split], batch_size=task.eval_batch_size)
            predicted = result.pop("predictions")
            if split == "test":
                last_test["matrix"] = confusion_matrix(predicted, dataset.test.y,
                                                       module.config.num_labels)
            return result

        def after_training(module: nn.Module, output_dir: Path) -> None:
            if "matrix" not in last_test:
                evaluate(module, "test")
            write_confusion(Path(output_dir) / CONFUSION_FILE, last_test["matrix"],
                            dataset.class_names, split="test")

        return TaskSetup(model=network, train_dataset=ImageItems(dataset.train),
                         evaluate=evaluate, after_training=after_training,
                         metric_for_best="accuracy", greater_is_better=True)
