"""Long-term forecasting data (the Informer/Autoformer protocol of Zhou et al. 2021): ETT and
any dated CSV, split by time, scaled with train-row statistics and cut into windows.

The standard ETT split: ETTh* rows [0, 8640) train, [8640 - L, 11520) validation,
[11520 - L, 14400) test (12/4/4 months; ETTm* the same months at 4x the rows); a
``StandardScaler`` fitted on the training rows only, over all columns; windows of lookback L
and horizon H; MSE/MAE on the scaled values. Other CSVs split 70/10/20 by time in the same way.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from formerkit.data.registry import dataset_file

ETT_NAMES = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
SPLITS = ("train", "val", "test")
FREQS = ("min", "h", "d")
_HOUR_BORDERS = (8640, 11520, 14400)  # 12, 16 and 20 months of hourly rows


@dataclasses.dataclass
class Series:
    """A dated multivariate series: ``dates`` (T,) datetime64[s], ``values`` (T, C) float32."""

    dates: np.ndarray
    values: np.ndarray
    columns: list[str]


def read_csv_series(path: str | Path, *, date_column: str = "date",
                    columns: list[str] | None = None) -> Series:
    """Read a CSV (``.csv`` or ``.csv.gz``) with a date column and numeric columns.

    Args:
        path: the file.
        date_column: name of the column holding ``YYYY-MM-DD[ HH:MM[:SS]]`` dates.
        columns: value columns to keep, in this order (default: every other column).

    Returns:
        ``Series`` with dates (T,), values (T, C) and column names.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2:
        raise ValueError(f"{path} has no data rows")
    header, body = [name.strip() for name in rows[0]], [row for row in rows[1:] if row]
    if date_column not in header:
        raise ValueError(f"date_column={date_column!r} is not a column of {path}; "
                         f"columns: {header}")
    columns = [c for c in header if c != date_column] if columns is None else list(columns)
    missing = [c for c in columns if c not in header]
    if missing or not columns:
        raise ValueError(f"columns {missing or columns} are not value columns of {path}; "
                         f"columns: {header}")
    date_index = header.index(date_column)
    try:
        dates = np.array([row[date_index].strip() for row in body], dtype="datetime64[s]")
    except ValueError as err:
        raise ValueError(f"cannot parse dates in column {date_column!r} of {path}: {err}") \
            from None
    picked = [header.index(c) for c in columns]
    try:
        values = np.array([[float(row[i]) for i in picked] for row in body], dtype=np.float32)
    except (ValueError, IndexError) as err:
        raise ValueError(f"non-numeric or missing value in {path}: {err}") from None
    if not np.isfinite(values).all():
        raise ValueError(f"{path} holds NaN or infinite values in {columns}")
    return Series(dates, values, columns)


class StandardScaler:
    """Per-column (x - mean) / std with statistics from the rows given to ``fit``."""

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> None:
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)

    def fit(self, values: np.ndarray) -> StandardScaler:
        """values (T, C): population mean and std (as scikit-learn), std 0 treated as 1."""
        values = np.asarray(values, dtype=np.float64)
        self.mean = values.mean(axis=0)
        std = values.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)
        return self

    def transform(self, values: np.ndarray) -> np.ndarray:
        self._check()
        return ((values - self.mean) / self.std).astype(np.float32)

    def inverse_transform(self, values: np.ndarray | torch.Tensor) -> Any:
        self._check()
        if isinstance(values, torch.Tensor):
            return values * torch.as_tensor(self.std, dtype=values.dtype) \
                + torch.as_tensor(self.mean, dtype=values.dtype)
        return (values * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        self._check()
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, values: dict[str, list[float]]) -> StandardScaler:
        return cls(values["mean"], values["std"])

    def _check(self) -> None:
        if self.mean is None or self.std is None:
            raise ValueError("StandardScaler is not fitted: call fit(train_values) first")


def infer_freq(dates: np.ndarray) -> str:
    """``"min"``, ``"h"`` or ``"d"`` from the median step between dates."""
    if len(dates) < 2:
        raise ValueError("need at least two dates to infer the frequency")
    step = np.median(np.diff(dates).astype("timedelta64[s]").astype(np.int64))
    return "min" if step < 3600 else "h" if step < 86400 else "d"


def calendar_features(dates: np.ndarray, freq: str = "h") -> np.ndarray:
    """Calendar features in [-0.5, 0.5] (Time-Series-Library ``timeenc=1``).

    ``"h"``: hour of day, day of week, day of month, day of year; ``"min"`` adds minute of hour
    first; ``"d"``: the last three.

    Args:
        dates: (T,) datetime64.
        freq: one of ``FREQS``.

    Returns:
        (T, F) float32 with F = 5, 4 or 3.
    """
    if freq not in FREQS:
        raise ValueError(f"freq must be one of {FREQS}, got {freq!r}")
    dates = dates.astype("datetime64[s]")
    days = dates.astype("datetime64[D]")
    seconds = (dates - days).astype(np.int64)
    day_of_week = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    day_of_month = (days - days.astype("datetime64[M]")).astype(np.int64)
    day_of_year = (days - days.astype("datetime64[Y]")).astype(np.int64)
    features = [day_of_week / 6.0, day_of_month / 30.0, day_of_year / 365.0]
    if freq in ("h", "min"):
        features.insert(0, (seconds // 3600) / 23.0)
    if freq == "min":
        features.insert(0, ((seconds // 60) % 60) / 59.0)
    return (np.stack(features, axis=1) - 0.5).astype(np.float32)


def ett_borders(name: str, seq_len: int) -> dict[str, tuple[int, int]]:
    """Row ranges [start, end) of the standard ETT split; val and test start L rows early so
    their first window's target begins exactly at the split border."""
    if name not in ETT_NAMES:
        raise ValueError(f"ETT dataset name must be one of {ETT_NAMES}, got {name!r}")
    scale = 4 if name.startswith("ETTm") else 1
    train_end, val_end, test_end = (scale * b for b in _HOUR_BORDERS)
    return {"train": (0, train_end), "val": (train_end - seq_len, val_end),
            "test": (val_end - seq_len, test_end)}


def ratio_borders(n_rows: int, seq_len: int, train: float = 0.7, test: float = 0.2
                  ) -> dict[str, tuple[int, int]]:
    """Row ranges of a 70/10/20 split by time (Time-Series-Library ``Dataset_Custom``)."""
    n_train, n_test = int(n_rows * train), int(n_rows * test)
    n_val = n_rows - n_train - n_test
    return {"train": (0, n_train), "val": (n_train - seq_len, n_train + n_val),
            "test": (n_rows - n_test - seq_len, n_rows)}


class ForecastWindows(Dataset):
    """Sliding windows over one split: item i is lookback rows [i, i + L) and target rows
    [i + L, i + L + H) of the split, as ``{"x": (L, C), "target": (H, C)}`` plus
    ``"x_mark": (L, F)`` and ``"y_mark": (H, F)`` when calendar features are given."""

    def __init__(self, values: torch.Tensor, seq_len: int, pred_len: int,
                 marks: torch.Tensor | None = None) -> None:
        if values.ndim != 2:
            raise ValueError(f"values must be (T, C), got shape {tuple(values.shape)}")
        self.values, self.marks = values, marks
        self.seq_len, self.pred_len = seq_len, pred_len
        self.n_windows = values.shape[0] - seq_len - pred_len + 1
        if self.n_windows < 1:
            raise ValueError(f"a split of {values.shape[0]} rows is too short for seq_len="
                             f"{seq_len} + pred_len={pred_len}")

    def __len__(self) -> int:
        return self.n_windows

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -self.n_windows <= index < self.n_windows:
            raise IndexError(f"window {index} out of range for {self.n_windows} windows")
        start = index % self.n_windows
        mid, end = start + self.seq_len, start + self.seq_len + self.pred_len
        item = {"x": self.values[start:mid], "target": self.values[mid:end]}
        if self.marks is not None:
            item["x_mark"], item["y_mark"] = self.marks[start:mid], self.marks[mid:end]
        return item

    def batches(self, batch_size: int):
        """Every window in order, as stacked batches (a strided view, no copies per item)."""
        length = self.seq_len + self.pred_len
        windows = self.values.unfold(0, length, 1).transpose(1, 2)  # (N, L + H, C)
        marks = None if self.marks is None else self.marks.unfold(0, length, 1).transpose(1, 2)
        for start in range(0, self.n_windows, batch_size):
            chunk = windows[start:start + batch_size]
            batch = {"x": chunk[:, :self.seq_len], "target": chunk[:, self.seq_len:]}
            if marks is not None:
                chunk_marks = marks[start:start + batch_size]
                batch["x_mark"] = chunk_marks[:, :self.seq_len]
                batch["y_mark"] = chunk_marks[:, self.seq_len:]
            yield batch


@dataclasses.dataclass
class ForecastData:
    """The three splits of one series, the fitted scaler and what ``predict`` needs later."""

    train: ForecastWindows
    val: ForecastWindows
    test: ForecastWindows
    scaler: StandardScaler
    columns: list[str]
    borders: dict[str, tuple[int, int]]
    freq: str
    n_marks: int

    def split(self, name: str) -> ForecastWindows:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)


def make_forecast_data(series: Series, borders: dict[str, tuple[int, int]], *, seq_len: int,
                       pred_len: int, calendar: bool = False, freq: str | None = None
                       ) -> ForecastData:
    """Fit the scaler on the training rows only, scale every row, cut each split's windows."""
    for name, value in (("seq_len", seq_len), ("pred_len", pred_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if borders["test"][1] > len(series.values):
        raise ValueError(f"the split needs {borders['test'][1]} rows, the series has "
                         f"{len(series.values)}")
    train_start, train_end = borders["train"]
    scaler = StandardScaler().fit(series.values[train_start:train_end])
    scaled = torch.from_numpy(scaler.transform(series.values))
    freq = freq or infer_freq(series.dates)
    marks = torch.from_numpy(calendar_features(series.dates, freq)) if calendar else None
    windows = {name: ForecastWindows(scaled[a:b], seq_len, pred_len,
                                     None if marks is None else marks[a:b])
               for name, (a, b) in borders.items()}
    return ForecastData(windows["train"], windows["val"], windows["test"], scaler,
                        list(series.columns), dict(borders), freq,
                        0 if marks is None else marks.shape[1])


def load_ett(name: str = "ETTh1", *, seq_len: int = 96, pred_len: int = 96,
             calendar: bool = False, download: bool = False) -> ForecastData:
    """The standard ETT benchmark split (all 7 columns, multivariate).

    Finds ``ett/NAME.csv`` or ``ett/NAME.csv.gz`` through ``formerkit.data.registry``.
    """
    if name not in ETT_NAMES:
        raise ValueError(f"ETT dataset name must be one of {ETT_NAMES}, got {name!r}")
    try:
        path = dataset_file("ett", f"{name}.csv", download=download)
    except FileNotFoundError:
        path = dataset_file("ett", f"{name}.csv.gz", download=download)
    series = read_csv_series(path)
    return make_forecast_data(series, ett_borders(name, seq_len), seq_len=seq_len,
                              pred_len=pred_len, calendar=calendar)


def load_csv_forecast(path: str | Path, *, date_column: str = "date",
                      columns: list[str] | None = None, seq_len: int = 96, pred_len: int = 96,
                      calendar: bool = False) -> ForecastData:
    """Any dated CSV, chosen target columns, split 70/10/20 by time."""
    series = read_csv_series(path, date_column=date_column, columns=columns)
    return make_forecast_data(series, ratio_borders(len(series.values), seq_len),
                              seq_len=seq_len, pred_len=pred_len, calendar=calendar)


@torch.no_grad()
def forecast_errors(predict, windows: ForecastWindows, *, batch_size: int = 256
                    ) -> dict[str, float]:
    """MSE and MAE over every element of every window of a split (no window dropped).

    Args:
        predict: ``predict(batch) -> (B, H, C)`` on scaled values.
        windows: the split.
        batch_size: windows per call.

    Returns:
        ``{"mse": ..., "mae": ..., "n_windows": N}``.
    """
    sq_sum = abs_sum = 0.0
    count = 0
    for batch in windows.batches(batch_size):
        error = predict(batch).double() - batch["target"].double()
        sq_sum += float((error * error).sum())
        abs_sum += float(error.abs().sum())
        count += error.numel()
    return {"mse": sq_sum / count, "mae": abs_sum / count, "n_windows": len(windows)}


def series_to_csv(dates: np.ndarray, values: np.ndarray, columns: list[str],
                  date_column: str = "date") -> str:
    """Dates (T,) and values (T, C) as CSV text with a header."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([date_column, *columns])
    for date, row in zip(dates.astype("datetime64[s]"), values):
        writer.writerow([str(date).replace("T", " "), *(f"{v:.6g}" for v in row)])
    return out.getvalue()
