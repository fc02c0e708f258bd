"""ETT protocol: split borders, train-only scaler, window counts, calendar features, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from formerkit.data.timeseries import (
    ForecastWindows,
    StandardScaler,
    calendar_features,
    ett_borders,
    forecast_errors,
    load_csv_forecast,
    load_ett,
    ratio_borders,
    read_csv_series,
    series_to_csv,
)


def test_ett_borders_standard_protocol():
    assert ett_borders("ETTh1", 96) == {"train": (0, 8640), "val": (8544, 11520),
                                        "test": (11424, 14400)}
    assert ett_borders("ETTm2", 96) == {"train": (0, 34560), "val": (34464, 46080),
                                        "test": (45984, 57600)}
    with pytest.raises(ValueError, match="ETTx1"):
        ett_borders("ETTx1", 96)


def test_ratio_borders_match_time_series_library():
    # Dataset_Custom: 70 % train, 20 % test, the rest validation, val/test start L early.
    assert ratio_borders(1000, 24) == {"train": (0, 700), "val": (676, 800),
                                       "test": (776, 1000)}


def test_etth1_windows_scaler_and_marks():
    data = load_ett("ETTh1", seq_len=96, pred_len=96, calendar=True)  # shipped in the package
    # (rows - L - H + 1) windows per split, the figures Time-Series-Library reports.
    assert (len(data.train), len(data.val), len(data.test)) == (8449, 2785, 2785)
    raw = read_csv_series(__import__("formerkit.data.registry", fromlist=["x"])
                          .dataset_file("ett", "ETTh1.csv"))
    assert raw.columns == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    train_rows = raw.values[:8640].astype(np.float64)
    np.testing.assert_allclose(data.scaler.mean, train_rows.mean(0), rtol=1e-6)
    np.testing.assert_allclose(data.scaler.std, train_rows.std(0), rtol=1e-6)
    # The scaler is fitted on train rows only: train is standardised, later rows are not.
    assert torch.allclose(data.train.values.mean(0), torch.zeros(7), atol=1e-4)
    assert data.test.values.mean(0).abs().max() > 0.1
    # The first test target starts exactly at row 11520; the last ends at row 14400.
    first, last = data.test[0], data.test[len(data.test) - 1]
    expected_first = data.scaler.transform(raw.values[11520:11616])
    np.testing.assert_allclose(first["target"].numpy(), expected_first, atol=1e-5)
    np.testing.assert_allclose(last["target"].numpy(),
                               data.scaler.transform(raw.values[14304:14400]), atol=1e-5)
    assert first["x_mark"].shape == (96, 4) and first["y_mark"].shape == (96, 4)
    assert data.n_marks == 4 and data.freq == "h"


def test_calendar_features_values():
    dates = np.array(["2016-07-01 00:00:00", "2016-07-04 23:45:00"], dtype="datetime64[s]")
    hourly = calendar_features(dates, "h")
    # 2016-07-01: Friday (4), day 1 of the month, day 183 of a leap year.
    np.testing.assert_allclose(hourly[0], [-0.5, 4 / 6 - 0.5, -0.5, 182 / 365 - 0.5],
                               atol=1e-6)
    np.testing.assert_allclose(hourly[1], [0.5, -0.5, 3 / 30 - 0.5, 185 / 365 - 0.5],
                               atol=1e-6)
    minute = calendar_features(dates, "min")
    assert minute.shape == (2, 5) and minute[1, 0] == pytest.approx(45 / 59 - 0.5)
    assert calendar_features(dates, "d").shape == (2, 3)
    with pytest.raises(ValueError, match="freq"):
        calendar_features(dates, "w")


def test_windows_and_every_window_evaluated():
    values = torch.arange(40, dtype=torch.float32).reshape(20, 2)
    windows = ForecastWindows(values, seq_len=5, pred_len=3)
    assert len(windows) == 13
    item = windows[12]
    assert torch.equal(item["x"], values[12:17]) and torch.equal(item["target"], values[17:20])
    with pytest.raises(IndexError):
        windows[13]
    batches = list(windows.batches(batch_size=5))
    assert [b["x"].shape[0] for b in batches] == [5, 5, 3]  # the last partial batch is kept
    assert torch.equal(torch.cat([b["target"] for b in batches]),
                       torch.stack([windows[i]["target"] for i in range(13)]))
    # Predicting the last lookback value: error is known in closed form.
    metrics = forecast_errors(lambda b: b["x"][:, -1:].expand_as(b["target"]), windows,
                              batch_size=4)
    steps = torch.tensor([1.0, 2.0, 3.0]) * 2  # rows advance by 2 per step
    assert metrics["n_windows"] == 13
    assert metrics["mse"] == pytest.approx(float((steps ** 2).mean()))
    assert metrics["mae"] == pytest.approx(float(steps.mean()))
    with pytest.raises(ValueError, match="too short"):
        ForecastWindows(values[:7], seq_len=5, pred_len=3)


def test_scaler_round_trip_and_unfitted_error():
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.0, size=(50, 3)).astype(np.float32)
    scaler = StandardScaler().fit(values)
    restored = StandardScaler.from_dict(scaler.to_dict())
    np.testing.assert_allclose(restored.inverse_transform(restored.transform(values)), values,
                               atol=1e-5)
    with pytest.raises(ValueError, match="not fitted"):
        StandardScaler().transform(values)


def test_custom_csv_loader(tmp_path):
    dates = np.arange(np.datetime64("2020-01-01T00:00"), np.datetime64("2020-01-06T04:00"),
                      np.timedelta64(1, "h"))
    values = np.stack([np.sin(np.arange(len(dates)) / 5), np.arange(len(dates)) % 7,
                       np.ones(len(dates))], axis=1)
    path = tmp_path / "mine.csv"
    path.write_text(series_to_csv(dates, values, ["a", "b", "c"], date_column="when"))
    data = load_csv_forecast(path, date_column="when", columns=["b", "a"], seq_len=12,
                             pred_len=6, calendar=True)
    n = len(dates)
    assert data.columns == ["b", "a"] and data.freq == "h" and data.n_marks == 4
    assert data.borders == ratio_borders(n, 12)
    assert len(data.train) == int(n * 0.7) - 12 - 6 + 1
    with pytest.raises(ValueError, match="'zz'"):
        load_csv_forecast(path, date_column="when", columns=["zz"])
    with pytest.raises(ValueError, match="date_column='date'"):
        read_csv_series(path)


def test_ettm_gzip_split(data_dir):
    if not (data_dir / "ett" / "ETTm1.csv.gz").is_file():
        pytest.skip("ETTm1.csv.gz not available")
    data = load_ett("ETTm1", seq_len=96, pred_len=96)
    assert (len(data.train), len(data.val), len(data.test)) == (34369, 11425, 11425)
    assert data.freq == "min"
