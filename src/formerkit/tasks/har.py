"""Task ``har``: per-step activity labelling of raw inertial signals (UCI HAR, Anguita et al.
2013) with window-level metrics on the official test subjects and step-level metrics on
stitched test streams.

Metrics: ``accuracy`` and ``macro_f1`` over windows (mean of per-step scores), ``loss`` (mean
per-step cross-entropy); on ``test`` also ``step_accuracy`` over each test subject's windows
laid end to end and labelled by sliding windows, and ``change_step_accuracy`` over the steps
within one window of an activity change.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from formerkit.config import ConfigBase, check_choice, check_positive, check_probability
from formerkit.data.har import (
    HARData,
    HARSplit,
    HARStreamSequences,
    HARWindows,
    labelled_subset,
    load_uci_har,
    stitch_streams,
)
from formerkit.metrics import accuracy, confusion_matrix, macro_f1
from formerkit.models.registry import create_model
from formerkit.tasks.base import Task, TaskSetup, register_task
from formerkit.tasks.common import model_directory, split_to_evaluate

CONFUSION_FILE = "confusion.json"
SAMPLE_RATE_HZ = 50.0


@dataclasses.dataclass
class HARDataConfig(ConfigBase):
    """The recipe's ``data`` section.

    Attributes:
        dataset: only ``uci_har`` (``har/uci_har.npz`` through the dataset registry).
        path: an explicit ``.npz`` file instead.
        n_val_subjects: training subjects held out whole for validation.
        split_seed: seed choosing the validation subjects.
        mode: ``windows`` (training items are the dataset's windows, augmented) or
            ``streams`` (stitched-stream mode: ``max_seq_len``-step sequences cut from each
            training subject's stitched stream, activity changes included, no augmentation).
        augment: augment training windows (the options below).
        time_shift, jitter, scale, rotate, stitch_prob: see ``formerkit.data.har.HARWindows``.
        label_fraction: share of the training windows whose labels are used (class-
            stratified, see ``formerkit.data.har.labelled_subset``); the input normalisation
            still sees every training window, as unlabelled signals are free.
        label_seed: seed choosing those windows.
    """

    dataset: str = "uci_har"
    path: str | None = None
    n_val_subjects: int = 3
    split_seed: int = 0
    mode: str = "windows"
    augment: bool = True
    time_shift: int = 32
    jitter: float = 0.05
    scale: float = 0.1
    rotate: float = 0.0
    stitch_prob: float = 0.3
    label_fraction: float = 1.0
    label_seed: int = 0

    def validate(self) -> None:
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"HARDataConfig.label_fraction must be in (0, 1], got "
                             f"{self.label_fraction}")
        if self.dataset != "uci_har":
            raise ValueError(f"HARDataConfig.dataset must be 'uci_har', got {self.dataset!r}")
        for name in ("n_val_subjects", "time_shift", "jitter", "scale", "rotate"):
            if getattr(self, name) < 0:
                raise ValueError(f"HARDataConfig.{name} must be >= 0, got {getattr(self, name)}")
        check_probability(self, "stitch_prob")
        check_choice(self, "mode", ("windows", "streams"))


@dataclasses.dataclass
class HARTaskConfig(ConfigBase):
    """The recipe's ``task`` section.

    Attributes:
        eval_batch_size: windows per forward pass in evaluation.
        stream_stride: hop of the sliding windows labelling stitched test streams.
        init_from: a ``har-mae`` (or ``har``) model or run directory whose normalisation,
            embedding, positions and encoder start the model (its sizes replace the
            recipe's; dropout and label smoothing stay the recipe's).
    """

    eval_batch_size: int = 512
    stream_stride: int = 32
    init_from: str | None = None

    def validate(self) -> None:
        check_positive(self, "eval_batch_size", "stream_stride")


def evaluate_windows(model: nn.Module, split: HARSplit, *, batch_size: int = 512
                     ) -> dict[str, Any]:
    """Window-level evaluation: mean per-step loss, accuracy, macro F1 and predictions."""
    device = next(model.parameters()).device
    n_classes = model.config.n_classes
    predictions, loss_sum = [], 0.0
    for start in range(0, len(split), batch_size):
        inputs = torch.from_numpy(split.x[start:start + batch_size]).to(device)
        labels = torch.from_numpy(split.y[start:start + batch_size]).to(device)
        logits = model(inputs).logits.float()  # (b, T, n)
        step_labels = labels[:, None].expand(-1, logits.shape[1])  # (b, T)
        loss_sum += F.cross_entropy(logits.reshape(-1, n_classes), step_labels.reshape(-1),
                                    reduction="sum").item() / logits.shape[1]
        predictions.append(model.window_logits(logits).argmax(dim=-1).cpu())
    predicted = torch.cat(predictions).numpy()
    return {"loss": loss_sum / max(len(split), 1), "accuracy": accuracy(predicted, split.y),
            "macro_f1": macro_f1(predicted, split.y, n_classes), "predictions": predicted}


def evaluate_streams(model: nn.Module, split: HARSplit, *, stride: int = 32,
                     batch_size: int = 512) -> dict[str, float]:
    """Step accuracy on each subject's stitched stream, overall and near activity changes."""
    device = next(model.parameters()).device
    correct = total = near_correct = near_total = 0
    window = split.x.shape[1]
    for stream in stitch_streams(split):
        probs = model.label_steps(torch.from_numpy(stream.x).to(device), window=window,
                                  stride=stride, batch_size=batch_size)
        hits = probs.argmax(dim=-1).numpy() == stream.y
        changes = np.flatnonzero(stream.y[1:] != stream.y[:-1]) + 1
        near = np.zeros(len(hits), dtype=bool)
        for change in changes:
            near[max(change - window // 2, 0):change + window // 2] = True
        correct, total = correct + hits.sum(), total + len(hits)
        near_correct, near_total = near_correct + hits[near].sum(), near_total + near.sum()
    return {"step_accuracy": float(correct / total),
            "change_step_accuracy": float(near_correct / max(near_total, 1))}


@register_task
class HARTask(Task):
    name = "har"
    description = "activity recognition: label every step of raw wearable signals (UCI HAR)"
    data_config = HARDataConfig
    task_config = HARTaskConfig

    def setup(self, model: dict[str, Any], data: HARDataConfig, task: HARTaskConfig, *,
              seed: int) -> TaskSetup:
        dataset = load_uci_har(data.path, n_val_subjects=data.n_val_subjects,
                               split_seed=data.split_seed)
        har_model = build_har_model(model, dataset, task.init_from)
        if har_model.config.max_seq_len < dataset.train.x.shape[1]:
            raise ValueError(f"model.max_seq_len={har_model.config.max_seq_len} is shorter "
                             f"than the {dataset.train.x.shape[1]}-step windows")
        if not task.init_from:
            har_model.normalize.set_statistics(torch.from_numpy(dataset.train.x))
        labelled = labelled_subset(dataset.train, data.label_fraction, seed=data.label_seed)
        if data.label_fraction < 1:
            print(f"har: {len(labelled):,} of {len(dataset.train):,} training windows "
                  f"labelled (label_fraction={data.label_fraction}, "
                  f"label_seed={data.label_seed})", flush=True)
        if data.mode == "streams":
            train = HARStreamSequences(labelled, length=har_model.config.max_seq_len)
        else:
            train = HARWindows(labelled, augment=data.augment, time_shift=data.time_shift,
                               jitter=data.jitter, scale=data.scale, rotate=data.rotate,
                               stitch_prob=data.stitch_prob)
        splits = {"val": dataset.val, "test": dataset.test}
        last_test: dict[str, Any] = {}

        def evaluate(module: nn.Module, split: str) -> dict[str, float]:
            windows = split_to_evaluate(splits, split, "data.n_val_subjects=0")
            result = evaluate_windows(module, windows, batch_size=task.eval_batch_size)
            predicted = result.pop("predictions")
            if split == "test":
                last_test["matrix"] = confusion_matrix(predicted, dataset.test.y,
                                                       module.config.n_classes)
                result.update(evaluate_streams(module, dataset.test, stride=task.stream_stride,
                                               batch_size=task.eval_batch_size))
            return result

        def after_training(module: nn.Module, output_dir: Path) -> None:
            if "matrix" not in last_test:
                with torch.no_grad():
                    module.eval()
                    predicted = evaluate_windows(module, dataset.test)["predictions"]
                last_test["matrix"] = confusion_matrix(predicted, dataset.test.y,
                                                       module.config.n_classes)
            write_confusion(Path(output_dir) / CONFUSION_FILE, last_test["matrix"],
                            dataset.activities, split="test (official subjects)")

        return TaskSetup(model=har_model, train_dataset=train, evaluate=evaluate,
                         after_training=after_training, metric_for_best="accuracy",
                         greater_is_better=True)

    def predict(self, model_dir: Path, input_path: Path, **options: Any) -> str:
        """Label a CSV recording step by step; see ``predict_recording``."""
        return predict_recording(model_dir, input_path, **options)


def build_har_model(model: dict[str, Any], dataset: HARData, init_from: str | None = None
                    ) -> nn.Module:
    """The recipe's activity model with the data's channels and classes; with ``init_from``
    one of the pre-trained model's sizes, started from its weights (its input normalisation
    included)."""
    fields = {k: v for k, v in model.items() if k not in ("name", "preset")}
    fields.setdefault("n_channels", dataset.train.x.shape[-1])
    fields.setdefault("n_classes", len(dataset.activities))
    fields.setdefault("class_names", dataset.activities)
    fields.setdefault("channel_names", dataset.channels)
    if not init_from:
        return create_model(model.get("name", "har"), model.get("preset"), **fields)
    from formerkit.models.auto import from_pretrained
    from formerkit.models.timeseries.har import HARBackbone, HARTransformer
    from formerkit.models.timeseries.har_mae import backbone_config, load_pretrained_backbone
    if model.get("name", "har") != "har":
        raise ValueError(f"task.init_from starts a har model; model.name is "
                         f"{model.get('name')!r}")
    source = from_pretrained(model_directory(init_from))
    if not isinstance(source, HARBackbone):
        raise ValueError(f"task.init_from={init_from!r} holds a {type(source).__name__}, not "
                         "an activity model (har or har-mae)")
    if source.config.n_channels != fields["n_channels"]:
        raise ValueError(f"task.init_from={init_from!r} was trained on "
                         f"{source.config.n_channels} channels, the data has "
                         f"{fields['n_channels']}")
    keep = ("dropout", "attn_dropout", "label_smoothing", "n_classes", "class_names",
            "channel_names")
    config = backbone_config(source.config, **{k: v for k, v in fields.items() if k in keep})
    network = HARTransformer(config)
    load_pretrained_backbone(network, source)
    return network


def write_confusion(file: Path, matrix: np.ndarray, labels: list[str], *, split: str) -> None:
    """Save a confusion matrix (row = true, column = predicted) as JSON for ``plot confusion``."""
    file.write_text(json.dumps({"labels": list(labels), "matrix": np.asarray(matrix).tolist(),
                                "split": split}, indent=1) + "\n")


def read_recording(input_path: Path, channel_names: list[str] | None, n_channels: int
                   ) -> np.ndarray:
    """Read a CSV of raw channels, (T, C) float32.

    With a header naming every model channel, those columns are used in the model's order
    (other columns, e.g. time, are ignored); otherwise the file must have exactly
    ``n_channels`` columns in the model's channel order. Empty cells become NaN (which the
    model rejects with a clear error).
    """
    input_path = Path(input_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input file {input_path} does not exist")
    with open(input_path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if not rows:
        raise ValueError(f"{input_path} is empty")
    header = None
    try:
        [float(cell) for cell in rows[0] if cell.strip()]
    except ValueError:
        header, rows = [cell.strip() for cell in rows[0]], rows[1:]
    columns = list(range(len(rows[0]) if rows else 0))
    if header is not None and channel_names and set(channel_names) <= set(header):
        columns = [header.index(name) for name in channel_names]
    elif (len(header) if header is not None else len(columns)) != n_channels:
        found = len(header) if header is not None else len(columns)
        expected = f" named {', '.join(channel_names)}" if channel_names else ""
        raise ValueError(f"{input_path} has {found} columns; the model expects {n_channels} "
                         f"channels{expected} (or a header naming them)")
    values = np.full((len(rows), len(columns)), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            cell = row[column].strip() if column < len(row) else ""
            if cell:
                try:
                    values[i, j] = float(cell)
                except ValueError:
                    raise ValueError(f"{input_path} line {i + 1 + (header is not None)}: "
                                     f"{cell!r} is not a number") from None
    if len(values) == 0:
        raise ValueError(f"{input_path} has no data rows")
    return values


def predict_recording(model_dir: Path, input_path: Path, *, stride: int | None = None,
                      sample_rate: float = SAMPLE_RATE_HZ, summary: bool = False,
                      **_: Any) -> str:
    """Label every step of a recording.

    Args:
        model_dir: a run directory (with ``model/``) or a model directory.
        input_path: CSV of raw channels, one row per step (see ``read_recording``).
        stride: sliding-window hop (default a quarter window).
        sample_rate: steps per second, for the times shown.
        summary: return activity segments instead of one row per step.

    Returns:
        CSV text ``step,time_s,activity,confidence`` with one row per step, or with
        ``summary=True`` one line per segment: ``start-end s  ACTIVITY  (mean confidence)``.
    """
    from formerkit.models.timeseries.har import HARTransformer

    model_dir = Path(model_dir)
    if (model_dir / "model" / "config.json").is_file():
        model_dir = model_dir / "model"
    model = HARTransformer.from_pretrained(model_dir)
    config = model.config
    names = config.class_names or [str(i) for i in range(config.n_classes)]
    signal = read_recording(input_path, config.channel_names, config.n_channels)
    if not np.isfinite(signal).all():
        row = int(np.flatnonzero(~np.isfinite(signal).all(axis=1))[0])
        raise ValueError(f"{input_path}: data row {row + 1} has a missing or NaN value; the "
                         "model needs every channel at every step")
    probs = model.label_steps(torch.from_numpy(signal), stride=stride)  # (T, n)
    confidence, labels = probs.max(dim=-1)
    if not summary:
        rows = ["step,time_s,activity,confidence"]
        rows += [f"{step},{step / sample_rate:.2f},{names[label]},{conf:.4f}"
                 for step, (label, conf) in enumerate(zip(labels.tolist(), confidence.tolist()))]
        return "\n".join(rows)
    lines, start = [], 0
    for end in range(1, len(labels) + 1):
        if end == len(labels) or labels[end] != labels[start]:
            lines.append(f"{start / sample_rate:8.2f}-{end / sample_rate:8.2f} s  "
                         f"{names[int(labels[start])]:<20} "
                         f"({confidence[start:end].mean().item():.2f})")
            start = end
    return "\n".join(lines)
