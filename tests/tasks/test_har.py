"""Task ``har``: a tiny end-to-end run from the recipe, then predict, plot and export."""

from __future__ import annotations

import json

import numpy as np
import pytest

import formerkit
from formerkit.tasks.base import get_task
from formerkit.tasks.har import read_recording

TINY = ["model.d_model=16", "model.n_heads=2", "model.n_layers=1", "model.d_ff=32",
        "trainer.max_steps=30", "trainer.batch_size=32", "trainer.lr=0.003",
        "trainer.warmup_steps=0", "trainer.eval_every=0", "trainer.progress=false",
        "task.stream_stride=128"]


@pytest.mark.slow
def test_tiny_har_run_predict_plot_export(tmp_path, data_dir):
    run = tmp_path / "run"
    metrics = formerkit.train("har-uci", output_dir=run, overrides=TINY)
    for key in ("val_accuracy", "test_accuracy", "test_macro_f1", "test_step_accuracy",
                "test_change_step_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["test_accuracy"] > 0.4  # 6 balanced-ish classes: chance is ~0.18
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    confusion = json.loads((run / "confusion.json").read_text())
    matrix = np.array(confusion["matrix"])
    assert matrix.sum() == 2947 and len(confusion["labels"]) == 6
    assert np.trace(matrix) / matrix.sum() == pytest.approx(metrics["test_accuracy"])

    # predict: a CSV with a header in another channel order, two activities in a row
    data = np.load(data_dir / "har" / "uci_har.npz")
    signal = np.concatenate([data["X_test"][0], data["X_test"][200]])  # (256, 9)
    names = ["total_acc_x", "total_acc_y", "total_acc_z", "body_acc_x", "body_acc_y",
             "body_acc_z", "body_gyro_x", "body_gyro_y", "body_gyro_z"]
    order = [6, 7, 8, 0, 1, 2, 3, 4, 5]
    csv_file = tmp_path / "recording.csv"
    np.savetxt(csv_file, signal[:, order], delimiter=",", header=",".join(names), comments="")
    np.testing.assert_allclose(read_recording(csv_file, names[3:6] + names[6:] + names[:3], 9),
                               signal, atol=1e-6)
    rows = get_task("har").predict(run, csv_file).splitlines()
    assert rows[0] == "step,time_s,activity,confidence" and len(rows) == 256 + 1
    assert rows[1].split(",")[2] in confusion["labels"]
    summary = get_task("har").predict(run, csv_file, summary=True)
    assert " s  " in summary.splitlines()[0]

    from formerkit.viz import PLOT_COMMANDS

    class Args:
        run = tmp_path / "run"
        output = None

    assert PLOT_COMMANDS["confusion"].run(Args()).stat().st_size > 1000
    from formerkit.export import export_model

    assert export_model(run).is_file()  # verifies onnxruntime parity itself


def test_predict_rejects_missing_values(tmp_path):
    csv_file = tmp_path / "gap.csv"
    csv_file.write_text("a,b,c\n1,2,3\n4,,6\n")
    values = read_recording(csv_file, None, 3)
    assert np.isnan(values[1, 1])
    with pytest.raises(ValueError, match="3 columns.*expects 2"):
        read_recording(csv_file, None, 2)
    bad = tmp_path / "text.csv"
    bad.write_text("1,2\n3,x\n")
    with pytest.raises(ValueError, match="line 2"):
        read_recording(bad, None, 2)


def test_setup_builds_normalised_model_and_stream_mode(data_dir):
    from formerkit.tasks.har import HARDataConfig, HARTaskConfig

    setup = get_task("har").setup({"name": "har", "preset": "tiny", "max_seq_len": 256},
                                  HARDataConfig(mode="streams"), HARTaskConfig(), seed=0)
    model = setup.model
    assert model.config.class_names[5] == "LAYING" and model.config.n_channels == 9
    assert model.normalize.mean[6].item() == pytest.approx(0.80, abs=0.05)  # gravity on x, g
    item = setup.train_dataset[0]
    assert item["inputs"].shape == (256, 9) and item["labels"].shape == (256,)
    assert setup.metric_for_best == "accuracy" and setup.greater_is_better
    with pytest.raises(ValueError, match="mode"):
        HARDataConfig(mode="frames")


def test_no_validation_subjects_trains_on_all_and_says_why_val_is_missing(data_dir):
    from formerkit.tasks.har import HARDataConfig, HARTaskConfig

    setup = get_task("har").setup({"name": "har", "preset": "tiny"},
                                  HARDataConfig(n_val_subjects=0, augment=False),
                                  HARTaskConfig(), seed=0)
    assert len(setup.train_dataset) == 7352  # every training subject
    with pytest.raises(ValueError, match="no validation split.*eval_every=0"):
        setup.evaluate(setup.model.eval(), "val")
    with pytest.raises(KeyError, match=r"one of \['test', 'val'\], got 'train'"):
        setup.evaluate(setup.model, "train")
