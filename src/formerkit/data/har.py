"""UCI HAR raw inertial windows (Anguita et al. 2013): subject splits, per-step labels,
stitched streams across activity changes, and augmentation (jitter, scaling, rotation, time
shift).

The dataset holds 2.56 s windows (128 steps at 50 Hz, 9 channels) cut with 50% overlap from
longer recordings. Consecutive windows whose halves coincide are rejoined into the recording
they came from, so a training crop can start anywhere (a true time shift) and a subject's
windows can be laid end to end as one stream whose activity changes carry per-step labels.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from formerkit.data.registry import dataset_file

CHANNELS = ["body_acc_x", "body_acc_y", "body_acc_z", "body_gyro_x", "body_gyro_y",
            "body_gyro_z", "total_acc_x", "total_acc_y", "total_acc_z"]
ACTIVITIES = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING",
              "LAYING"]


@dataclasses.dataclass
class HARSplit:
    """Windows of one split: ``x`` (N, T, C) float32, ``y`` (N,) int64, ``subject`` (N,)."""

    x: np.ndarray
    y: np.ndarray
    subject: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def select(self, keep: np.ndarray) -> HARSplit:
        return HARSplit(self.x[keep], self.y[keep], self.subject[keep])


@dataclasses.dataclass
class HARData:
    train: HARSplit
    val: HARSplit
    test: HARSplit
    channels: list[str]
    activities: list[str]


def load_uci_har(path: str | Path | None = None, *, n_val_subjects: int = 3,
                 split_seed: int = 0) -> HARData:
    """Load ``har/uci_har.npz`` with the official subject split plus a validation split.

    Args:
        path: the ``.npz`` file (default: ``dataset_file("har", "uci_har.npz")``).
        n_val_subjects: training subjects held out (whole) for validation; 0 for none.
        split_seed: seed choosing those subjects.

    Returns:
        ``HARData`` whose train/val/test splits keep the file's window order.
    """
    file = Path(path) if path else dataset_file("har", "uci_har.npz")
    with np.load(file) as arrays:
        train = HARSplit(arrays["X_train"], arrays["y_train"], arrays["subject_train"])
        test = HARSplit(arrays["X_test"], arrays["y_test"], arrays["subject_test"])
    channels, activities = CHANNELS, ACTIVITIES
    meta_file = file.with_name("uci_har_meta.json")
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        channels, activities = meta.get("channels", channels), meta.get("activities", activities)
    subjects = np.unique(train.subject)
    if not 0 <= n_val_subjects < len(subjects):
        raise ValueError(f"n_val_subjects must be in [0, {len(subjects)}), got {n_val_subjects}")
    rng = np.random.default_rng(split_seed)
    val_subjects = rng.choice(subjects, size=n_val_subjects, replace=False)
    is_val = np.isin(train.subject, val_subjects)
    return HARData(train.select(~is_val), train.select(is_val), test, list(channels),
                   list(activities))


def labelled_subset(split: HARSplit, fraction: float, *, seed: int = 0) -> HARSplit:
    """A class-stratified ``fraction`` of a split's windows, at least one per class, in the
    file's order: the labelled part of a small label budget (the rest count as unlabelled).

    Raises:
        ValueError: ``fraction`` is not in (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return split
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(split.y):
        index = np.flatnonzero(split.y == label)
        count = max(1, round(fraction * len(index)))
        keep.append(rng.choice(index, size=count, replace=False))
    return split.select(np.sort(np.concatenate(keep)))


@dataclasses.dataclass
class Stream:
    """One subject's windows laid end to end: ``x`` (L, C), ``y`` (L,) per-step labels and
    ``starts`` (N,), where window i of the subject begins in the stream."""

    x: np.ndarray
    y: np.ndarray
    starts: np.ndarray
    subject: int


def stitch_streams(split: HARSplit) -> list[Stream]:
    """Join each subject's consecutive windows into one stream with per-step labels.

    A window that continues the previous one (its first half equals the previous window's
    second half) adds only its new half; any other window, including every change of
    activity, is appended whole. Activity changes thus fall between recordings, as a
    continuous wearer would produce them.
    """
    streams = []
    for subject in dict.fromkeys(split.subject.tolist()):  # subjects in file order
        index = np.flatnonzero(split.subject == subject)
        x, y = split.x[index], split.y[index]
        half = x.shape[1] // 2
        continues = np.zeros(len(index), dtype=bool)
        continues[1:] = (y[1:] == y[:-1]) & np.all(x[1:, :half] == x[:-1, -half:], axis=(1, 2))
        pieces, labels, starts, position = [], [], [], 0
        for i in range(len(index)):
            piece = x[i, half:] if continues[i] else x[i]
            starts.append(position - half if continues[i] else position)
            pieces.append(piece)
            labels.append(np.full(len(piece), y[i], dtype=np.int64))
            position += len(piece)
        streams.append(Stream(np.concatenate(pieces), np.concatenate(labels),
                              np.asarray(starts), int(subject)))
    return streams


class HARWindows(torch.utils.data.Dataset):
    """Windows of a split with per-step labels, optionally augmented.

    Each item is ``{"inputs": (T, C) float32, "labels": (T,) int64}``. Augmentation draws from
    torch's global generator (seeded by the trainer; DataLoader workers get their own seeds).

    Args:
        split: the windows.
        augment: apply the augmentations below.
        time_shift: shift each window by up to this many steps along its subject's stream.
        jitter: Gaussian noise, in units of each channel's standard deviation.
        scale: per-channel gain drawn from N(1, scale).
        rotate: largest angle, in degrees, of a random 3-D rotation (uniform axis, uniform
            angle in [-rotate, rotate]) applied to every x/y/z channel triple alike, as a
            sensor worn at a slightly different angle would record. Needs C divisible by 3.
        stitch_prob: chance of replacing the window's tail, from a random cut point, with the
            start of a window of another activity of the same subject (teaches labelling across
            activity changes).
    """

    def __init__(self, split: HARSplit, *, augment: bool = False, time_shift: int = 0,
                 jitter: float = 0.0, scale: float = 0.0, rotate: float = 0.0,
                 stitch_prob: float = 0.0) -> None:
        for name, value in (("time_shift", time_shift), ("jitter", jitter), ("scale", scale),
                            ("rotate", rotate)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if rotate and split.x.shape[-1] % 3:
            raise ValueError(f"rotate needs x/y/z channel triples, but the data has "
                             f"{split.x.shape[-1]} channels")
        if not 0.0 <= stitch_prob <= 1.0:
            raise ValueError(f"stitch_prob must be in [0, 1], got {stitch_prob}")
        self.split, self.augment = split, augment
        self.time_shift, self.jitter, self.scale = time_shift, jitter, scale
        self.rotate = rotate
        self.stitch_prob = stitch_prob
        self.window = split.x.shape[1]
        self.streams = stitch_streams(split) if augment else []
        # window i of the split -> (its subject's stream, its start in that stream)
        self.stream_of = np.zeros(len(split), dtype=np.int64)
        self.start_of = np.zeros(len(split), dtype=np.int64)
        self.by_subject: dict[int, np.ndarray] = {}
        for number, stream in enumerate(self.streams):
            index = np.flatnonzero(split.subject == stream.subject)
            self.stream_of[index], self.start_of[index] = number, stream.starts
            self.by_subject[stream.subject] = index
        if augment:
            self.channel_std = torch.from_numpy(split.x.reshape(-1, split.x.shape[-1]).std(0))

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not self.augment:
            x = torch.from_numpy(self.split.x[index])
            return {"inputs": x, "labels": torch.full((len(x),), int(self.split.y[index]))}
        x, y = self._crop(index)
        if self.stitch_prob and torch.rand(()) < self.stitch_prob:
            x, y = self._stitch(index, x, y)
        if self.rotate:
            x = rotate_triples(x, random_rotation(self.rotate))
        if self.scale:
            x = x * (1 + self.scale * torch.randn(x.shape[-1]))
        if self.jitter:
            x = x + self.jitter * self.channel_std * torch.randn_like(x)
        return {"inputs": x, "labels": y}

    def _crop(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        stream, start = self.streams[self.stream_of[index]], int(self.start_of[index])
        if self.time_shift:
            start += int(torch.randint(-self.time_shift, self.time_shift + 1, ()))
            start = min(max(start, 0), len(stream.y) - self.window)
        end = start + self.window
        return (torch.from_numpy(stream.x[start:end].copy()),
                torch.from_numpy(stream.y[start:end].copy()))

    def _stitch(self, index: int, x: torch.Tensor, y: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        subject = int(self.split.subject[index])
        candidates = self.by_subject[subject]
        others = candidates[self.split.y[candidates] != self.split.y[index]]
        if len(others) == 0:
            return x, y
        other = int(others[int(torch.randint(len(others), ()))])
        cut = int(torch.randint(self.window // 8, self.window - self.window // 8 + 1, ()))
        tail = torch.from_numpy(self.split.x[other, :self.window - cut])
        x = torch.cat([x[:cut], tail])
        y = torch.cat([y[:cut], torch.full((self.window - cut,), int(self.split.y[other]))])
        return x, y


def random_rotation(max_degrees: float) -> torch.Tensor:
    """A (3, 3) rotation about a uniformly random axis by an angle uniform in
    [-max_degrees, max_degrees] (Rodrigues' formula), drawn from torch's global generator."""
    axis = torch.randn(3, dtype=torch.float64)
    axis = axis / axis.norm()
    angle = torch.deg2rad((2 * torch.rand((), dtype=torch.float64) - 1) * max_degrees)
    cross = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]],
                          [-axis[1], axis[0], 0.0]], dtype=torch.float64)
    rotation = torch.eye(3, dtype=torch.float64) + angle.sin() * cross \
        + (1 - angle.cos()) * cross @ cross
    return rotation.float()


def rotate_triples(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate every consecutive x/y/z channel triple of ``x`` (T, C) by ``rotation`` (3, 3)."""
    steps, channels = x.shape
    return (x.reshape(steps, channels // 3, 3) @ rotation.T).reshape(steps, channels)


class HARStreamSequences(torch.utils.data.Dataset):
    """Stitched-stream mode: fixed-length sequences cut from each subject's stream, so one
    item may hold several activities, each step with its own label.

    Each item is ``{"inputs": (length, C) float32, "labels": (length,) int64}``; sequences
    start every ``hop`` steps (the last one of a stream is aligned to its end) and a stream
    shorter than ``length`` is skipped.

    Args:
        split: the windows to stitch (see ``stitch_streams``).
        length: steps per sequence (at most the model's ``max_seq_len``).
        hop: steps between sequence starts (default ``length // 2``).
    """

    def __init__(self, split: HARSplit, *, length: int, hop: int | None = None) -> None:
        hop = hop or max(length // 2, 1)
        if length <= 0 or hop <= 0:
            raise ValueError(f"length and hop must be positive, got {length} and {hop}")
        self.streams = stitch_streams(split)
        self.length = length
        self.items: list[tuple[int, int]] = []
        for number, stream in enumerate(self.streams):
            last = len(stream.y) - length
            if last < 0:
                continue
            starts = list(range(0, last + 1, hop))
            if starts[-1] != last:
                starts.append(last)
            self.items += [(number, start) for start in starts]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        number, start = self.items[index]
        stream, end = self.streams[number], start + self.length
        return {"inputs": torch.from_numpy(stream.x[start:end].copy()),
                "labels": torch.from_numpy(stream.y[start:end].copy())}
