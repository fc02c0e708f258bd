"""Image tasks on a small image dataset. ``image-classification``: one label per image (ViT,
or the CNN baseline), with ``loss``, ``accuracy`` and ``macro_f1`` on stratified validation and
test splits and a confusion matrix of the test split (``confusion.json``, for ``plot
confusion``); ``task.init_from`` starts a ViT from a pre-trained ViT or MAE. ``image-mae``:
masked-autoencoder pre-training (``vit-mae``), with the reconstruction ``loss`` on validation
and test images under a fixed mask.

Any registered model that takes ``pixel_values`` and ``labels`` and returns ``logits`` and
``loss`` fits the classification task; ``image_size``, ``n_channels`` and ``num_labels``
default to the data's.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from formerkit.config import ConfigBase, check_choice, check_positive
from formerkit.data.images import DATASETS, ImageDataset, ImageItems, ImageSplit, load_digits
from formerkit.metrics import accuracy, confusion_matrix, macro_f1
from formerkit.models.registry import create_model
from formerkit.tasks.base import Task, TaskSetup, register_task
from formerkit.tasks.common import (
    masked_reconstruction_loss,
    model_directory,
    split_to_evaluate,
)
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
    """The recipe's ``task`` section.

    Attributes:
        eval_batch_size: images per evaluation pass.
        init_from: a ViT or MAE model directory (or a run directory holding ``model/``)
            whose encoder weights start the classifier (its sizes replace the recipe's).
    """

    eval_batch_size: int = 512
    init_from: str | None = None

    def validate(self) -> None:
        check_positive(self, "eval_batch_size")


@dataclasses.dataclass
class ImageMAETaskConfig(ConfigBase):
    """The ``image-mae`` task section: ``eval_batch_size`` and ``eval_seed``, the seed of the
    fixed masks the validation and test losses are measured under."""

    eval_batch_size: int = 512
    eval_seed: int = 0

    def validate(self) -> None:
        check_positive(self, "eval_batch_size")


def load_image_data(data: ImageDataConfig) -> ImageDataset:
    """The train / validation / test images a recipe's ``data`` section names."""
    return load_digits(val_fraction=data.val_fraction, test_fraction=data.test_fraction,
                       split_seed=data.split_seed)


def build_image_model(model: dict[str, Any], dataset: ImageDataset,
                      init_from: str | None = None) -> nn.Module:
    """The recipe's model with the data's image size, channels and classes; with
    ``init_from`` a ViT classifier of the pre-trained encoder's sizes and weights."""
    fields = {k: v for k, v in model.items() if k not in ("name", "preset")}
    fields.setdefault("image_size", dataset.train.x.shape[-1])
    fields.setdefault("n_channels", dataset.train.x.shape[1])
    if init_from is None:
        return create_model(model.get("name", "vit"), model.get("preset"), **fields)
    from formerkit.models.auto import from_pretrained
    from formerkit.models.vit import ViTConfig, ViTForImageClassification, load_pretrained_encoder
    if model.get("name", "vit") != "vit":
        raise ValueError(f"task.init_from starts a ViT; model.name is {model.get('name')!r}")
    source = from_pretrained(model_directory(init_from))
    if not isinstance(source.config, ViTConfig):
        raise ValueError(f"task.init_from={init_from!r} holds a {type(source).__name__}, "
                         "not a ViT or MAE")
    keep = ("dropout", "attn_dropout", "problem_type", "num_labels")
    config = source.config.replace(**{k: v for k, v in fields.items() if k in keep})
    if (config.image_size, config.n_channels) != (fields["image_size"], fields["n_channels"]):
        raise ValueError(f"task.init_from={init_from!r} was trained on {config.n_channels}-"
                         f"channel {config.image_size}px images, the data has "
                         f"{fields['n_channels']}-channel {fields['image_size']}px ones")
    network = ViTForImageClassification(config)
    load_pretrained_encoder(network, source)
    return network


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
        dataset = load_image_data(data)
        network = build_image_model({"num_labels": len(dataset.class_names), **model},
                                    dataset, task.init_from)
        splits = {"val": dataset.val, "test": dataset.test}
        last_test: dict[str, np.ndarray] = {}

        def evaluate(module: nn.Module, split: str) -> dict[str, float]:
            images = split_to_evaluate(splits, split, "data.val_fraction=0")
            result = evaluate_images(module, images, batch_size=task.eval_batch_size)
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


@torch.no_grad()
def evaluate_reconstruction(model: nn.Module, split: ImageSplit, *, batch_size: int = 512,
                            seed: int = 0) -> dict[str, float]:
    """MAE's mean loss over ``split`` under masks drawn from ``seed`` (the same every time)."""
    n_patches = (model.config.image_size // model.config.patch_size) ** 2
    return masked_reconstruction_loss(model, split.x, input_name="pixel_values",
                                      n_units=n_patches, batch_size=batch_size, seed=seed)


class _Pixels(ImageItems):
    """Items ``{"pixel_values": (C, H, W)}``: pre-training uses no labels."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.x[index]}


@register_task
class ImageMAETask(Task):
    name = "image-mae"
    description = "masked-autoencoder pre-training of a ViT on images (scikit-learn's digits)"
    data_config = ImageDataConfig
    task_config = ImageMAETaskConfig

    def setup(self, model: dict[str, Any], data: ImageDataConfig, task: ImageMAETaskConfig, *,
              seed: int) -> TaskSetup:
        dataset = load_image_data(data)
        network = build_image_model({"name": "vit-mae", **model}, dataset)
        if "noise" not in inspect.signature(network.forward).parameters:
            raise ValueError(f"task image-mae pre-trains a masked autoencoder (model.name: "
                             f"vit-mae), not {type(network).__name__}")
        splits = {"val": dataset.val, "test": dataset.test}

        def evaluate(module: nn.Module, split: str) -> dict[str, float]:
            images = split_to_evaluate(splits, split, "data.val_fraction=0")
            return evaluate_reconstruction(module, images,
                                           batch_size=task.eval_batch_size,
                                           seed=task.eval_seed)

        return TaskSetup(model=network, train_dataset=_Pixels(dataset.train),
                         evaluate=evaluate)
