"""Small image datasets for classification: scikit-learn's handwritten digits (8x8 grey,
1,797 images, 10 classes; the UCI "Optical Recognition of Handwritten Digits" test set), split
into stratified train / validation / test parts with a fixed seed."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from formerkit.extras import require

DATASETS = ("digits",)


@dataclasses.dataclass
class ImageSplit:
    """Images (N, C, H, W) float32 scaled to [-1, 1] and labels (N,) int64."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclasses.dataclass
class ImageDataset:
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    class_names: list[str]


def load_digits(*, val_fraction: float = 0.1, test_fraction: float = 0.2,
                split_seed: int = 0) -> ImageDataset:
    """scikit-learn's digits (shipped with it, no download) as (N, 1, 8, 8) images whose
    pixel counts 0..16 are scaled to [-1, 1]; each class is split in the given fractions."""
    datasets = require("sklearn", "the digits dataset").datasets
    raw = datasets.load_digits()
    x = (raw.images.astype(np.float32)[:, None] / 8.0 - 1.0)  # (N, 1, 8, 8) in [-1, 1]
    y = raw.target.astype(np.int64)
    return split_stratified(x, y, [str(c) for c in raw.target_names],
                            val_fraction=val_fraction, test_fraction=test_fraction,
                            split_seed=split_seed)


def split_stratified(x: np.ndarray, y: np.ndarray, class_names: list[str], *,
                     val_fraction: float, test_fraction: float, split_seed: int
                     ) -> ImageDataset:
    """Shuffle each class with ``split_seed`` and cut it into test, validation and train."""
    if not (0 <= val_fraction < 1 and 0 < test_fraction < 1
            and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} "
                         "must be in [0, 1) and (0, 1) with a sum below 1")
    rng = np.random.default_rng(split_seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in np.unique(y):
        index = rng.permutation(np.flatnonzero(y == label))
        n_test = round(len(index) * test_fraction)
        n_val = round(len(index) * val_fraction)
        parts["test"].append(index[:n_test])
        parts["val"].append(index[n_test:n_test + n_val])
        parts["train"].append(index[n_test + n_val:])
    splits = {}
    for name, pieces in parts.items():
        index = np.sort(np.concatenate(pieces))
        splits[name] = ImageSplit(x[index], y[index])
    return ImageDataset(splits["train"], splits["val"], splits["test"], class_names)


class ImageItems(torch.utils.data.Dataset):
    """Items ``{"pixel_values": (C, H, W), "labels": ()}`` of a split."""

    def __init__(self, split: ImageSplit) -> None:
        self.x, self.y = torch.from_numpy(split.x), torch.from_numpy(split.y)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.x[index], "labels": self.y[index]}
