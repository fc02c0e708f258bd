"""Task ``forecast``: a tiny end-to-end run, metrics on every test window, predict on a CSV."""

from __future__ import annotations

import json

import numpy as np
import pytest

import formerkit
from formerkit.data.registry import dataset_file
from formerkit.data.timeseries import forecast_errors, load_ett, read_csv_series, series_to_csv
from formerkit.tasks.base import get_task
from formerkit.tasks.forecast import ForecastDataConfig, ForecastTaskConfig, load_forecaster

TRAINER = {"max_steps": 4, "batch_size": 16, "eval_every": 2, "log_every": 2, "lr": 1e-3,
           "device": "cpu", "progress": False, "seed": 0}


def tiny_recipe(model: str = "itransformer", **data) -> dict:
    return {"model": {"name": model, "d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 16},
            "data": {"dataset": "ETTh1", "seq_len": 24, "pred_len": 12,
                     "max_train_windows": 64, **data},
            "task": {"name": "forecast"}, "trainer": dict(TRAINER)}


def test_tiny_run_metrics_cover_every_test_window(tmp_path):
    metrics = formerkit.train(tiny_recipe(), output_dir=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("val_mse", "val_mae", "test_mse", "test_mae"):
        assert np.isfinite(saved[key]) and saved[key] == pytest.approx(metrics[key])
    # Re-evaluating the saved model over all test windows reproduces test_mse.
    model, artifact = load_forecaster(tmp_path / "run")
    data = load_ett("ETTh1", seq_len=24, pred_len=12)
    assert len(data.test) == 14400 - 11520 - 12 + 1
    again = forecast_errors(lambda b: model(b["x"]).prediction, data.test, batch_size=1000)
    assert again["mse"] == pytest.approx(saved["test_mse"], rel=1e-5)
    assert again["mae"] == pytest.approx(saved["test_mae"], rel=1e-5)
    assert artifact["columns"] == data.columns
    np.testing.assert_allclose(artifact["scaler"]["mean"], data.scaler.mean)


def test_predict_forecasts_after_the_last_row(tmp_path):
    formerkit.train(tiny_recipe("patchtst", calendar=True) | {
        "model": {"name": "patchtst", "d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 16,
                  "patch_len": 8, "stride": 4}}, output_dir=tmp_path / "run")
    series = read_csv_series(dataset_file("ett", "ETTh1.csv"))
    user_csv = tmp_path / "recent.csv"
    user_csv.write_text(series_to_csv(series.dates[1000:1050], series.values[1000:1050],
                                      series.columns))
    text = get_task("forecast").predict(tmp_path / "run", user_csv)
    lines = text.strip().splitlines()
    assert lines[0] == "date," + ",".join(series.columns)
    assert len(lines) == 1 + 12
    assert lines[1].startswith(str(series.dates[1050]).replace("T", " "))
    values = np.array([[float(v) for v in line.split(",")[1:]] for line in lines[1:]])
    assert values.shape == (12, 7) and np.isfinite(values).all()
    # Forecasts come back in original units (oil temperature OT is around 5-50 degrees).
    assert np.abs(values[:, -1]).max() < 200
    short = tmp_path / "short.csv"
    short.write_text(series_to_csv(series.dates[:10], series.values[:10], series.columns))
    with pytest.raises(ValueError, match="seq_len=24"):
        get_task("forecast").predict(tmp_path / "run", short)


def test_forecast_plot_command(tmp_path):
    from formerkit.tasks.forecast import forecast_examples
    from formerkit.viz import PLOT_COMMANDS

    formerkit.train(tiny_recipe(), output_dir=tmp_path / "run")
    examples = forecast_examples(tmp_path / "run", windows=[0, -1])
    n_test = 14400 - 11520 - 12 + 1
    assert examples["windows"] == [0, n_test - 1]
    data = load_ett("ETTh1", seq_len=24, pred_len=12)
    last = data.scaler.inverse_transform(data.test[n_test - 1]["target"].numpy())
    np.testing.assert_allclose(examples["truth"][1], last, rtol=1e-5, atol=1e-4)
    assert examples["prediction"].shape == (2, 12, 7)
    command = PLOT_COMMANDS["forecast"]
    parser = __import__("argparse").ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "run"), "--windows", "0,5", "--variates", "OT,HUFL"])
    path = command.run(args)
    assert path == tmp_path / "run" / "forecast.png" and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="out of range"):
        forecast_examples(tmp_path / "run", windows=[n_test])


def test_custom_csv_with_chosen_columns(tmp_path):
    series = read_csv_series(dataset_file("ett", "ETTh1.csv"))
    path = tmp_path / "mine.csv"
    path.write_text(series_to_csv(series.dates[:600], series.values[:600], series.columns))
    setup = get_task("forecast").setup(
        {"name": "itransformer", "d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 16},
        ForecastDataConfig(path=str(path), columns=["OT", "HUFL"], seq_len=24, pred_len=12),
        ForecastTaskConfig(), seed=0)
    assert setup.model.config.n_vars == 2 and len(setup.train_dataset) == 420 - 35
    metrics = setup.evaluate(setup.model, "test")
    assert set(metrics) == {"mse", "mae"} and metrics["mse"] > 0


def test_data_and_model_shapes_must_agree():
    with pytest.raises(ValueError, match="model.seq_len=48"):
        get_task("forecast").setup({"name": "patchtst", "seq_len": 48},
                                   ForecastDataConfig(seq_len=24, pred_len=12),
                                   ForecastTaskConfig(), seed=0)
    with pytest.raises(ValueError, match="ETTh9"):
        ForecastDataConfig(dataset="ETTh9")
