"""The explorer for a run or model directory (``formerkit explain``): loads the model, reads the
input (text, a CSV of the user's, or a window of the data the run was trained on) and writes
the page."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from formerkit.viz.explorer import Explanation, explain, render_html

SPLITS = ("train", "val", "test")


def model_directory(path: str | Path) -> Path:
    """The model directory of a run directory (its ``model/``) or a model directory."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"directory {path} does not exist")
    if (path / "model" / "config.json").is_file():
        return path / "model"
    if (path / "config.json").is_file():
        return path
    raise FileNotFoundError(f"{path} is neither a run directory (with model/config.json) nor a "
                            "model directory (with config.json)")


def explain_directory(path: str | Path, *, text: str | None = None, pair: str | None = None,
                      target: str | None = None, input_path: str | Path | None = None,
                      window: int | None = None, split: str = "test", top_k: int = 5,
                      max_new_tokens: int = 40) -> Explanation:
    """The ``Explanation`` of the model saved in a run or model directory.

    Text models read ``text`` (and ``pair``/``target``). Time-series models read
    ``input_path`` (a CSV as ``formerkit predict`` takes it) or, without one, window
    ``window`` (default 0) of the ``split`` the run was trained and evaluated on.
    """
    from formerkit.models.auto import from_pretrained

    model_dir = model_directory(path)
    model = from_pretrained(model_dir)
    parameters = inspect.signature(model.forward).parameters
    if "input_ids" in parameters:
        if input_path is not None or window is not None:
            raise ValueError(f"{type(model).__name__} reads text: give --text, not --input or "
                             "--window")
        if getattr(model, "tokenizer", None) is None:
            raise ValueError(f"{model_dir} has no tokenizer (tokenizer.json): the explorer "
                             "cannot encode the text")
        return explain(model, text=text, pair=pair, target=target, top_k=top_k,
                       max_new_tokens=max_new_tokens, source=path)
    if text is not None or pair is not None or target is not None:
        raise ValueError(f"{type(model).__name__} reads a time series, not text: give --input "
                         "FILE or --window N")
    if input_path is not None and window is not None:
        raise ValueError("give --input or --window, not both")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if "x" in parameters:
        options = _forecast_input(model_dir, model, input_path, window or 0, split)
    elif "inputs" in parameters:
        options = _recording_input(model, input_path, window or 0, split)
    else:
        raise ValueError(f"the explorer does not know the input of {type(model).__name__}")
    return explain(model, top_k=top_k, source=path, **options)


def _pick(n: int, window: int, what: str) -> int:
    if not -n <= window < n:
        raise ValueError(f"--window {window} is out of range: {what} has {n} windows")
    return window % n


def _forecast_input(model_dir: Path, model: Any, input_path: str | Path | None, window: int,
                    split: str) -> dict[str, Any]:
    """A forecaster's lookback in original units, with its scaler and calendar features:
    the last ``seq_len`` rows of a CSV, or a window of the run's data (with its true future)."""
    import torch

    from formerkit.data.timeseries import StandardScaler, calendar_features, read_csv_series
    from formerkit.tasks.forecast import load_forecaster, load_run_data

    config = model.config
    _, artifact = load_forecaster(model_dir)
    scaler = StandardScaler.from_dict(artifact["scaler"])
    options: dict[str, Any] = {"scaler": scaler, "columns": artifact["columns"]}
    if input_path is not None:
        series = read_csv_series(input_path, date_column=artifact["date_column"],
                                 columns=artifact["columns"])
        if len(series.values) < config.seq_len:
            raise ValueError(f"{input_path} has {len(series.values)} rows; the model reads the "
                             f"last seq_len={config.seq_len}")
        dates = series.dates[-config.seq_len:]
        options["series"] = series.values[-config.seq_len:]
        if config.n_marks:
            step = np.median(np.diff(dates).astype(np.int64))
            future = dates[-1] + np.arange(1, config.pred_len + 1) * np.timedelta64(int(step),
                                                                                   "s")
            options["x_mark"] = calendar_features(dates, artifact["freq"])
            options["y_mark"] = calendar_features(future, artifact["freq"])
        return options
    _, _, data = load_run_data(model_dir)
    windows = data.split(split)
    item = windows[_pick(len(windows), window, f"the {split} split")]
    unscale = scaler.inverse_transform
    options["series"] = unscale(item["x"].numpy())
    options["truth"] = unscale(item["target"].numpy())
    for key in ("x_mark", "y_mark"):
        if isinstance(item.get(key), torch.Tensor):
            options[key] = item[key].numpy()
    return options


def _recording_input(model: Any, input_path: str | Path | None, window: int,
                     split: str) -> dict[str, Any]:
    """A HAR window: the rows of a CSV recording, or window ``window`` of the UCI HAR split."""
    from formerkit.data.har import load_uci_har
    from formerkit.tasks.har import read_recording

    config = model.config
    if input_path is not None:
        values = read_recording(Path(input_path), config.channel_names, config.n_channels)
        if not np.isfinite(values).all():
            raise ValueError(f"{input_path} has missing or NaN values; the model needs every "
                             "channel at every step")
        return {"series": values}
    dataset = load_uci_har()
    data = {"train": dataset.train, "val": dataset.val, "test": dataset.test}[split]
    index = _pick(len(data), window, f"the UCI HAR {split} split")
    return {"series": data.x[index], "true_label": int(data.y[index]),
            "columns": dataset.channels}


def write_directory_page(path: str | Path, output: str | Path, **options: Any) -> Path:
    """Write the explorer page of a run or model directory to ``output`` (``.html``); options
    as ``explain_directory``."""
    output = Path(output)
    if output.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--output must end in .html, got {str(output)!r}")
    page = render_html(explain_directory(path, **options))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    return output
