"""Checkpoint averaging: the mean of a run's last checkpoints as a new run directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import toytask
from safetensors.torch import load_file, save_file

import formerkit
from formerkit import cli
from formerkit.train.averaging import average_run, average_weights
from formerkit.train.checkpoint import CheckpointError, list_checkpoints, save_checkpoint


def _trained_run(tmp_path: Path) -> Path:
    """A toy run with a checkpoint every 2 of its 8 steps, the last 3 kept."""
    recipe = toytask.write_recipe(tmp_path / "toy.yaml", max_steps=8, eval_every=0,
                                  checkpoint_every=2, keep_checkpoints=3)
    run = tmp_path / "run"
    formerkit.train(recipe, output_dir=run)
    return run


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_average_run_writes_the_mean_as_a_new_run(tmp_path):
    run = _trained_run(tmp_path)
    before = _files(run)
    checkpoints = list_checkpoints(run / "checkpoint")
    assert [p.name for p in checkpoints] == ["step_00000004", "step_00000006", "step_00000008"]
    used = average_run(run, tmp_path / "avg", last=2)
    assert used == checkpoints[-2:]
    a, b = (load_file(str(p / "model.safetensors")) for p in used)
    averaged = load_file(str(tmp_path / "avg" / "model" / "model.safetensors"))
    assert set(averaged) == set(a)
    for name in a:
        torch.testing.assert_close(averaged[name], (a[name] + b[name]) / 2)
    assert not torch.equal(a["head.weight"], b["head.weight"])  # the steps really differ
    # The model directory keeps everything but the weights; the run itself is untouched.
    copied = set(_files(tmp_path / "avg" / "model")) - {"model.safetensors"}
    assert copied == set(_files(run / "model")) - {"model.safetensors"}
    assert (tmp_path / "avg" / "recipe.yaml").read_bytes() == (run / "recipe.yaml").read_bytes()
    record = json.loads((tmp_path / "avg" / "averaged.json").read_text())
    assert record["checkpoints"] == ["step_00000006", "step_00000008"]
    assert _files(run) == before
    model = formerkit.from_pretrained(tmp_path / "avg" / "model")
    torch.testing.assert_close(model.state_dict()["head.weight"], averaged["head.weight"])


def test_average_command_and_its_errors(tmp_path, capsys):
    run = _trained_run(tmp_path)
    out = tmp_path / "avg3"
    assert cli.main(["average", str(run), "--last", "3", "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    # The averaged run evaluates like any run.
    assert cli.main(["evaluate", str(out), "--split", "test", "--trust-imports"]) == 0
    assert "test_loss" in json.loads(capsys.readouterr().out)
    with pytest.raises(FileExistsError, match="avg3 already exists"):
        average_run(run, out, last=2)
    with pytest.raises(ValueError, match=r"keeps 3 checkpoint\(s\), fewer than the 4"):
        average_run(run, tmp_path / "other", last=4)
    with pytest.raises(ValueError, match="last must be an integer >= 2"):
        average_run(run, tmp_path / "other", last=1)
    with pytest.raises(FileNotFoundError, match="not a finished run directory"):
        average_run(run / "checkpoint", tmp_path / "other", last=2)
    bare = shutil.copytree(run / "model", tmp_path / "bare")  # a model directory, no run
    assert cli.main(["average", str(bare), "-o", str(tmp_path / "x")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "other").exists() and not (tmp_path / "x").exists()


def _checkpoint(root: Path, step: int, **tensors: torch.Tensor) -> Path:
    return save_checkpoint(root, step, tensors, {"step": step}, keep=10)


def test_average_weights_keeps_dtypes_and_checks_the_checkpoints(tmp_path):
    root = tmp_path / "checkpoint"
    half = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    one = _checkpoint(root, 1, w=half, steps=torch.tensor([3]))
    two = _checkpoint(root, 2, w=half * 3, steps=torch.tensor([3]))
    mean = average_weights([one, two])
    assert mean["w"].dtype == torch.bfloat16 and mean["w"].tolist() == [2.0, 4.0]
    assert mean["steps"].tolist() == [3]
    other = _checkpoint(root, 3, w=half, steps=torch.tensor([4]))
    with pytest.raises(ValueError, match="integer tensor 'steps' differs"):
        average_weights([one, other])
    renamed = _checkpoint(root, 4, v=half, steps=torch.tensor([3]))
    with pytest.raises(ValueError, match="hold different tensors"):
        average_weights([one, renamed])
    wide = _checkpoint(root, 5, w=torch.zeros(3, dtype=torch.bfloat16), steps=torch.tensor([3]))
    with pytest.raises(ValueError, match=r"'w' has shape \(3,\)"):
        average_weights([one, wide])
    save_file({"w": torch.zeros(2)}, str(two / "model.safetensors"))  # edited after saving
    with pytest.raises(CheckpointError, match="corrupt"):
        average_weights([one, two])
    with pytest.raises(ValueError, match="no checkpoints"):
        average_weights([])


def test_average_run_refuses_checkpoints_that_do_not_match_the_saved_model(tmp_path):
    run = _trained_run(tmp_path)
    weights = run / "model" / "model.safetensors"
    state = load_file(str(weights))
    renamed = dict(state)
    renamed["extra.weight"] = renamed.pop("head.weight")
    save_file(renamed, str(weights))
    with pytest.raises(ValueError, match="do not hold the tensors of .*'extra.weight'"):
        average_run(run, tmp_path / "avg", last=2)
    reshaped = dict(state)
    reshaped["head.weight"] = torch.zeros(1, *state["head.weight"].shape)
    save_file(reshaped, str(weights))
    with pytest.raises(ValueError, match="tensor 'head.weight' is .* in the checkpoints"):
        average_run(run, tmp_path / "avg", last=2)
    assert not (tmp_path / "avg").exists()
