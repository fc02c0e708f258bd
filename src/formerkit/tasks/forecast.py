"""Task ``forecast``: long-term multivariate forecasting on ETT or any dated CSV (the
Informer/Autoformer protocol, Zhou et al. 2021), with MSE/MAE on the scaled validation and
test windows and forecasts in original units for a user's CSV."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from formerkit.config import ConfigBase, check_positive
from formerkit.data.timeseries import (
    ETT_NAMES,
    ForecastData,
    StandardScaler,
    calendar_features,
    forecast_errors,
    load_csv_forecast,
    load_ett,
    read_csv_series,
    series_to_csv,
)
from formerkit.models.registry import create_model
from formerkit.tasks.base import Task, TaskSetup, register_task

ARTIFACT_NAME = "forecast.json"
_DATA_FIELDS = ("seq_len", "pred_len", "n_vars", "n_marks")


@dataclasses.dataclass
class ForecastDataConfig(ConfigBase):
    """The recipe's ``data`` section.

    Attributes:
        dataset: an ETT file name (``ETTh1``, ``ETTh2``, ``ETTm1``, ``ETTm2``), standard split.
        path: a CSV of your own (overrides ``dataset``), split 70/10/20 by time.
        date_column: the CSV's date column. columns: value columns to use (default: all).
        seq_len: lookback L. pred_len: horizon H.
        calendar: feed calendar features (hour, weekday, ...) to the model as ``x_mark``.
        download: fetch a missing ETT file from its checksummed public original.
        max_train_windows: train on the first N windows only (quick smoke runs);
            evaluation always covers every window.
    """

    dataset: str = "ETTh1"
    path: str | None = None
    date_column: str = "date"
    columns: list[str] | None = None
    seq_len: int = 96
    pred_len: int = 96
    calendar: bool = False
    download: bool = False
    max_train_windows: int | None = None

    def validate(self) -> None:
        check_positive(self, "seq_len", "pred_len", "max_train_windows")
        if self.path is None and self.dataset not in ETT_NAMES:
            raise ValueError(f"ForecastDataConfig.dataset must be one of {ETT_NAMES} (or set "
                             f"data.path to a CSV), got {self.dataset!r}")


@dataclasses.dataclass
class ForecastTaskConfig(ConfigBase):
    """The recipe's ``task`` section: ``eval_batch_size`` windows per evaluation batch."""

    eval_batch_size: int = 256

    def validate(self) -> None:
        check_positive(self, "eval_batch_size")


def load_data(data: ForecastDataConfig) -> ForecastData:
    """The windows, scaler and split a ``data`` section describes."""
    if data.path is not None:
        return load_csv_forecast(data.path, date_column=data.date_column, columns=data.columns,
                                 seq_len=data.seq_len, pred_len=data.pred_len,
                                 calendar=data.calendar)
    forecast_data = load_ett(data.dataset, seq_len=data.seq_len, pred_len=data.pred_len,
                             calendar=data.calendar, download=data.download)
    if data.columns is not None:
        raise ValueError("data.columns selects columns of a CSV given by data.path; the ETT "
                         "benchmark always uses all 7 columns")
    return forecast_data


def _model_fields(model: dict[str, Any], forecast_data: ForecastData,
                  data: ForecastDataConfig) -> dict[str, Any]:
    """The model section's config fields with the shapes the data dictates filled in."""
    fields = {k: v for k, v in model.items() if k not in ("name", "preset")}
    derived = {"seq_len": data.seq_len, "pred_len": data.pred_len,
               "n_vars": len(forecast_data.columns), "n_marks": forecast_data.n_marks}
    for key in _DATA_FIELDS:
        if key in fields and fields[key] != derived[key]:
            raise ValueError(f"model.{key}={fields[key]!r} disagrees with the data "
                             f"({derived[key]!r}); set it in the data section instead")
    fields.update(derived)
    return fields


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@register_task
class ForecastTask(Task):
    name = "forecast"
    description = "multivariate long-term forecasting (ETT protocol or your CSV), MSE/MAE"
    data_config = ForecastDataConfig
    task_config = ForecastTaskConfig

    def setup(self, model: dict[str, Any], data: ForecastDataConfig, task: ForecastTaskConfig,
              *, seed: int) -> TaskSetup:
        forecast_data = load_data(data)
        torch.manual_seed(seed)
        network = create_model(model["name"], model.get("preset"),
                               **_model_fields(model, forecast_data, data))
        train = forecast_data.train
        if data.max_train_windows is not None and data.max_train_windows < len(train):
            train = torch.utils.data.Subset(train, range(data.max_train_windows))

        @torch.no_grad()
        def evaluate(net: nn.Module, split: str) -> dict[str, float]:
            was_training = net.training
            net.eval()
            device = _device_of(net)

            def predict(batch: dict[str, torch.Tensor]) -> torch.Tensor:
                inputs = {k: v.to(device) for k, v in batch.items() if k != "target"}
                return net(**inputs).prediction.float().cpu()

            metrics = forecast_errors(predict, forecast_data.split(split),
                                      batch_size=task.eval_batch_size)
            net.train(was_training)
            return {"mse": metrics["mse"], "mae": metrics["mae"]}

        def save_artifacts(model_dir: Path) -> None:
            artifact = {"columns": forecast_data.columns, "date_column": data.date_column,
                        "freq": forecast_data.freq, "calendar": data.calendar,
                        "dataset": data.path or data.dataset,
                        "scaler": forecast_data.scaler.to_dict()}
            Path(model_dir).mkdir(parents=True, exist_ok=True)
            (Path(model_dir) / ARTIFACT_NAME).write_text(json.dumps(artifact, indent=2) + "\n")

        return TaskSetup(model=network, train_dataset=train, evaluate=evaluate,
                         save_artifacts=save_artifacts, metric_for_best="mse",
                         greater_is_better=False)

    def predict(self, model_dir: Path, input_path: Path, **options: Any) -> str:
        """Forecast the ``pred_len`` steps after the end of a user's CSV.

        Args:
            model_dir: a run directory (holding ``model/``) or a model directory.
            input_path: CSV with the trained date column and value columns; its last
                ``seq_len`` rows are the lookback.

        Returns:
            CSV text: the future dates and the forecast of every column, in original units.
        """
        network, artifact = load_forecaster(model_dir)
        config = network.config
        series = read_csv_series(input_path, date_column=artifact["date_column"],
                                 columns=artifact["columns"])
        if len(series.values) < config.seq_len:
            raise ValueError(f"{input_path} has {len(series.values)} rows; the model needs the "
                             f"last seq_len={config.seq_len}")
        scaler = StandardScaler.from_dict(artifact["scaler"])
        x = torch.from_numpy(scaler.transform(series.values[-config.seq_len:]))[None]
        step = np.median(np.diff(series.dates[-config.seq_len:]).astype(np.int64))
        future = series.dates[-1] + np.arange(1, config.pred_len + 1) * np.timedelta64(
            int(step), "s")
        inputs: dict[str, torch.Tensor] = {"x": x}
        if config.n_marks:
            inputs["x_mark"] = torch.from_numpy(calendar_features(
                series.dates[-config.seq_len:], artifact["freq"]))[None]
            inputs["y_mark"] = torch.from_numpy(calendar_features(future, artifact["freq"]))[None]
        with torch.no_grad():
            prediction = network(**inputs).prediction[0].numpy()  # (H, C)
        return series_to_csv(future, scaler.inverse_transform(prediction), artifact["columns"],
                             artifact["date_column"])


def load_forecaster(model_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A trained forecaster and its ``forecast.json`` (scaler, columns) from a run or model
    directory."""
    from formerkit.models.auto import from_pretrained

    model_dir = Path(model_dir)
    if (model_dir / "model" / "config.json").is_file():
        model_dir = model_dir / "model"
    artifact_file = model_dir / ARTIFACT_NAME
    if not artifact_file.is_file():
        raise FileNotFoundError(f"{artifact_file} not found: not a model trained by the "
                                "forecast task")
    return from_pretrained(model_dir), json.loads(artifact_file.read_text())


def load_run_data(model_dir: str | Path) -> tuple[nn.Module, dict[str, Any], ForecastData]:
    """A trained forecaster, its artifact and the data split it was trained on (rebuilt from
    ``forecast.json`` and the model config)."""
    network, artifact = load_forecaster(model_dir)
    config = network.config
    data = ForecastDataConfig(seq_len=config.seq_len, pred_len=config.pred_len,
                              calendar=artifact["calendar"], date_column=artifact["date_column"])
    if artifact["dataset"] in ETT_NAMES:
        data.dataset = artifact["dataset"]
    else:
        data.path, data.columns = artifact["dataset"], artifact["columns"]
    return network, artifact, load_data(data)


@torch.no_grad()
def forecast_examples(model_dir: str | Path, *, split: str = "test",
                      windows: list[int] | None = None) -> dict[str, Any]:
    """Lookback, truth and forecast of chosen windows of a split, in original units.

    Returns:
        dict with ``history`` (N, L, C), ``truth`` (N, H, C), ``prediction`` (N, H, C),
        ``windows`` (the indices), ``columns`` and ``split``.
    """
    network, _, data = load_run_data(model_dir)
    split_windows = data.split(split)
    n = len(split_windows)
    windows = [0, n // 2, n - 1] if windows is None else windows
    bad = [w for w in windows if not -n <= w < n]
    if bad:
        raise ValueError(f"windows {bad} out of range: the {split} split has {n} windows")
    items = [split_windows[w] for w in windows]
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    prediction = network(**{k: v for k, v in batch.items() if k != "target"}).prediction
    unscale = data.scaler.inverse_transform
    return {"history": unscale(batch["x"]).numpy(), "truth": unscale(batch["target"]).numpy(),
            "prediction": unscale(prediction).numpy(), "windows": [w % n for w in windows],
            "columns": data.columns, "split": split}
