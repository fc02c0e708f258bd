"""Fault injection on whole runs of the toy task: what a run does when its checkpoints are
corrupt, its directory is busy or left half-written, its settings changed, or the disk is full.
docs/guarantees.md names these tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import toytask

import formerkit
from formerkit import cli
from formerkit.train import checkpoint as ckpt
from formerkit.train.run_lock import RunDirectoryBusy, RunLock

TRAINER = {"max_steps": 6, "checkpoint_every": 2, "eval_every": 0, "keep_checkpoints": 2}


def _train(tmp_path: Path, out: Path, **options) -> dict[str, float]:
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    trainer = {**TRAINER, **options.pop("trainer", {})}
    return formerkit.train(recipe, output_dir=out, trainer=trainer, **options)


def _steps(run: Path) -> list[int]:
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r["step"] for r in lines if "loss" in r]


def _flip(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x10
    file.write_bytes(bytes(data))


@pytest.mark.slow  # three toy runs
def test_every_checkpoint_corrupt_stops_instead_of_restarting(tmp_path, capsys):
    run = tmp_path / "run"
    _train(tmp_path, run)
    checkpoints = ckpt.list_checkpoints(run / "checkpoint")
    for path in checkpoints:
        _flip(path / ckpt.STATE)
    log_before = (run / "log.jsonl").read_text()
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    argv = ["train", str(recipe), "-o", str(run)] + [f"trainer.{k}={v}" for k, v in
                                                     TRAINER.items()]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--restart" in err
    assert all(path.name in err for path in checkpoints)
    assert (run / "log.jsonl").read_text() == log_before  # history untouched
    assert ckpt.list_checkpoints(run / "checkpoint") == checkpoints

    assert cli.main(argv + ["--restart"]) == 0  # afresh, the old run kept aside
    assert _steps(run) == [1, 2, 3, 4, 5, 6]
    previous = list((run / "previous").iterdir())
    assert len(previous) == 1 and (previous[0] / "log.jsonl").read_text() == log_before
    assert {"recipe.yaml", "metrics.json", "model", "after_training.txt"} <= \
        {p.name for p in previous[0].iterdir()}
    assert sorted(p.name for p in (previous[0] / "checkpoint").iterdir() if
                  p.name.startswith("step_")) == [p.name for p in checkpoints]


def test_cleanup_keeps_new_good_checkpoints_not_old_corrupt_ones(tmp_path):
    run = tmp_path / "run"
    _train(tmp_path, run, trainer={"max_steps": 4})
    _flip(run / "checkpoint" / "step_00000004" / ckpt.WEIGHTS)  # newest corrupt
    _train(tmp_path, run, trainer={"max_steps": 4})  # resumes from 2, saves 4 again
    names = sorted(p.name for p in (run / "checkpoint").iterdir() if p.name != "best")
    assert names == ["corrupt-step_00000004", "step_00000002", "step_00000004"]
    for path in ckpt.list_checkpoints(run / "checkpoint"):
        ckpt.verify_checkpoint(path)


def test_stale_temporary_folders_are_removed_on_start(tmp_path, capsys):
    run = tmp_path / "run"
    _train(tmp_path, run, trainer={"max_steps": 2})
    stale = [run / "checkpoint" / ".tmp-step_00000004-999999", run / ".recipe.yaml.tmp"]
    stale[0].mkdir()
    stale[1].write_text("half")
    capsys.readouterr()
    _train(tmp_path, run, trainer={"max_steps": 2})
    assert not any(path.exists() for path in stale)
    assert "removed 2 temporary file(s)" in capsys.readouterr().err


def test_checkpoints_record_their_settings(tmp_path):
    run = tmp_path / "run"
    _train(tmp_path, run, trainer={"max_steps": 2, "lr": 0.02})
    settings = ckpt.read_settings(run / "checkpoint" / "step_00000002")
    assert settings["trainer"]["lr"] == 0.02 and settings["imports"] == ["toytask"]
    assert settings["model"]["name"] == "toy-lm" and settings["model"]["d_model"] == 16
    assert settings["data"]["n_train"] == 64 and settings["task"]["name"] == "toy-seq"


def test_resuming_with_changed_settings_lists_them(tmp_path, capsys):
    run = tmp_path / "run"
    _train(tmp_path, run, trainer={"max_steps": 4, "lr": 0.01})
    log_before = (run / "log.jsonl").read_text()
    with pytest.raises(ValueError) as info:
        _train(tmp_path, run, trainer={"max_steps": 6, "lr": 0.02, "seed": 3})
    message = str(info.value)
    for change in ("trainer.lr: 0.01 -> 0.02", "trainer.max_steps: 4 -> 6",
                   "trainer.seed: 0 -> 3", "--resume-with-changes"):
        assert change in message
    assert (run / "log.jsonl").read_text() == log_before
    # Only how it is shown and saved changed: no difference.
    _train(tmp_path, run, trainer={"max_steps": 4, "lr": 0.01, "progress": True,
                                   "log_every": 2, "checkpoint_every": 4})

    _train(tmp_path, run, trainer={"max_steps": 6, "lr": 0.02}, resume_with_changes=True)
    assert _steps(run) == [1, 2, 3, 4, 5, 6]
    kept = json.loads((run / "settings.step_00000004.json").read_text())
    assert kept["trainer"]["lr"] == 0.01 and kept["trainer"]["max_steps"] == 4
    assert ckpt.read_settings(run / "checkpoint" / "step_00000006")["trainer"]["lr"] == 0.02


def test_trainer_without_a_recipe_records_and_checks_its_config(tmp_path):
    from formerkit.train import Trainer, TrainerConfig

    def fit(lr: float, **options) -> None:
        model = toytask.ToyLM(toytask.ToyConfig())
        data = toytask.ToyDataset(toytask.make_sequences(32, 8, 11, _generator()))
        config = TrainerConfig(max_steps=2, batch_size=8, lr=lr, progress=False)
        Trainer(model, data, config=config, output_dir=tmp_path / "py", **options).fit()

    fit(0.01)
    settings = ckpt.read_settings(tmp_path / "py" / "checkpoint" / "step_00000002")
    assert settings["model"]["class"] == "ToyLM" and settings["trainer"]["lr"] == 0.01
    with pytest.raises(ValueError, match="trainer.lr: 0.01 -> 0.03"):
        fit(0.03)


def _generator():
    import torch

    return torch.Generator().manual_seed(0)


def test_a_busy_run_directory_is_refused_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    with RunLock(run):
        with pytest.raises(RunDirectoryBusy):
            _train(tmp_path, run)
        assert cli.main(["train", str(recipe), "-o", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is in use by process" in err
    assert not (run / "log.jsonl").exists() and not (run / "recipe.yaml").exists()
    _train(tmp_path, run, trainer={"max_steps": 2})  # free again once released


def test_full_disk_is_a_one_line_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch,
                                                                      capsys):
    run = tmp_path / "run"
    _train(tmp_path, run, trainer={"max_steps": 2})

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    argv = ["train", str(recipe), "-o", str(run), "trainer.max_steps=4",
            "trainer.checkpoint_every=2", "trainer.eval_every=0", "--resume-with-changes"]
    capsys.readouterr()
    assert cli.main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("formerkit: error: cannot write to") and "disk full" in last
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoint")] == ["step_00000002"]
    assert not list((run / "checkpoint").glob(".tmp-*"))


def test_output_dir_that_is_a_file_is_one_line_exit_2(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("not a directory")
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    assert cli.main(["train", str(recipe), "-o", str(target)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("recipe, override, match", [
    ("toy", "model.n_layers=100000000", "more than this machine's"),
    ("toy", "model.d_model=1000000", "more than this machine's"),
    ("gpt-shakespeare-char", "data.dataset=../../../../etc", "must be a plain name"),
])
def test_impossible_sizes_and_path_names_are_one_line_exit_2(tmp_path, capsys, recipe,
                                                             override, match):
    if recipe == "toy":
        recipe = str(toytask.write_recipe(tmp_path / "toy.yaml"))
    assert cli.main(["train", recipe, "-o", str(tmp_path / "r"), override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and match in err


def test_full_disk_while_saving_the_model_is_one_line_too(tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError

    import formerkit.models.base as base

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")

    run = tmp_path / "run"
    _train(tmp_path, run, trainer={"max_steps": 2})
    (run / "model").rename(run / "model-kept")
    monkeypatch.setattr(base, "save_state_dict", full_disk)
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    argv = ["train", str(recipe), "-o", str(run)] + [f"trainer.{k}={v}" for k, v in
                                                     {**TRAINER, "max_steps": 2}.items()]
    capsys.readouterr()
    assert cli.main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("formerkit: error: cannot write to") and "os error 28" in last
