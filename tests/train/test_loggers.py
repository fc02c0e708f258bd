"""``trainer.report_to``: ``log.csv`` mirrors ``log.jsonl`` (also across a resume) and the
TensorBoard event files hold the same scalars; evaluation shows a progress bar."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
import toytask

import formerkit
from formerkit.train import TrainerConfig
from formerkit.train.loggers import scalar_tag
from formerkit.train.progress import evaluation_bar


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _csv(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _same(csv_rows: list[dict], records: list[dict]) -> None:
    assert len(csv_rows) == len(records)
    for row, record in zip(csv_rows, records):
        assert {k for k, v in row.items() if v != ""} == set(record)
        for key, value in record.items():
            assert row[key] == str(value)


def test_csv_mirrors_the_jsonl_log_and_survives_a_resume(tmp_path):
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    run = tmp_path / "run"
    formerkit.train(recipe, output_dir=run, trainer={"report_to": ["csv"], "max_steps": 3,
                                                     "checkpoint_every": 3})
    _same(_csv(run), _log(run))
    assert {"val_loss", "test_loss", "loss", "lr"} <= set(_csv(run)[0])
    formerkit.train(recipe, output_dir=run, resume_with_changes=True,
                    trainer={"report_to": "csv", "max_steps": 6,
                                                     "checkpoint_every": 3})
    _same(_csv(run), _log(run))  # resumed: the dropped final lines are gone from both
    assert [r["step"] for r in _log(run) if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_tensorboard_event_files_hold_the_logged_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    run = tmp_path / "run"
    formerkit.train(recipe, output_dir=run, trainer={"report_to": ["tensorboard", "csv"]})
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/loss", "val/accuracy", "test/loss"} <= tags
    logged = [(r["step"], r["loss"]) for r in _log(run) if "loss" in r]
    scalars = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in scalars] == [s for s, _ in logged]
    assert [v for _, v in scalars] == pytest.approx([v for _, v in logged], rel=1e-6)
    assert (run / "log.csv").is_file()


def test_report_to_rejects_unknown_loggers():
    with pytest.raises(ValueError, match="report_to.*wandb"):
        TrainerConfig(report_to=["wandb"])
    assert TrainerConfig(report_to="csv").report_to == ["csv"]


def test_scalar_tags_group_by_split():
    assert scalar_tag("val_loss") == "val/loss"
    assert scalar_tag("test_bleu_cased") == "test/bleu_cased"
    assert scalar_tag("tokens_per_s") == "train/tokens_per_s"


def test_evaluation_bar_counts_model_calls_on_a_terminal(monkeypatch, capsys):
    model = torch.nn.Linear(2, 2)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with evaluation_bar(model, "val") as bar:
        for _ in range(5):
            model(torch.zeros(1, 2))
        assert bar is not None and bar.n == 5
    assert "eval val" in capsys.readouterr().err
    assert not model._forward_hooks  # the hook is removed afterwards
    with evaluation_bar(model, "val", enabled=False) as bar:
        assert bar is None
