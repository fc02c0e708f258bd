"""``torchrun --nproc_per_node 2 -m formerkit train`` on CPU (gloo): DDP follows the
single-process loss curve within 1e-4, and FSDP trains, checkpoints and resumes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import toytask
from safetensors.torch import load_file

import formerkit

SETTINGS = ["trainer.max_steps=4", "trainer.batch_size=8", "trainer.eval_every=2",
            "trainer.checkpoint_every=2"]


def _losses(run: Path) -> torch.Tensor:
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return torch.tensor([r["loss"] for r in lines if "loss" in r])


def _torchrun(recipe: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "formerkit", "train", str(recipe), "--output-dir", str(out), *SETTINGS,
           *overrides]
    result = subprocess.run(cmd, env=toytask.subprocess_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture
def single(tmp_path):
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    out = tmp_path / "single"
    formerkit.train(recipe, output_dir=out, overrides=SETTINGS)
    return recipe, out


def test_ddp_two_processes_follow_one_process(single, tmp_path):
    recipe, one = single
    two = tmp_path / "ddp"
    result = _torchrun(recipe, two, "trainer.grad_accum=2")  # 2 samples per micro-batch
    torch.testing.assert_close(_losses(two), _losses(one), atol=1e-4, rtol=0)
    metrics_one = json.loads((one / "metrics.json").read_text())
    metrics_two = json.loads((two / "metrics.json").read_text())
    assert metrics_two.keys() == metrics_one.keys()
    assert all(abs(metrics_two[k] - metrics_one[k]) < 1e-4 for k in metrics_one)
    assert result.stdout.count('"val_loss"') == 1  # only rank 0 reports


@pytest.mark.slow  # two torchrun launches
def test_fsdp_trains_and_resumes(single, tmp_path):
    recipe, one = single
    out = tmp_path / "fsdp"
    _torchrun(recipe, out, "trainer.strategy=fsdp")
    torch.testing.assert_close(_losses(out), _losses(one), atol=1e-4, rtol=0)
    first = load_file(str(out / "model" / "model.safetensors"))
    assert first.keys() == load_file(str(one / "model" / "model.safetensors")).keys()
    # Resume from step 2: the gathered checkpoint is loaded back into the sharded model.
    shutil.rmtree(out / "checkpoint" / "step_00000004")
    shutil.rmtree(out / "model")
    result = _torchrun(recipe, out, "trainer.strategy=fsdp")
    assert "resuming from" in result.stderr and "(step 2)" in result.stderr
    again = load_file(str(out / "model" / "model.safetensors"))
    for key in first:
        torch.testing.assert_close(again[key], first[key], atol=1e-6, rtol=0)


@pytest.mark.slow  # a torchrun launch
def test_a_busy_run_directory_stops_every_process(tmp_path):
    import os

    from formerkit.train.run_lock import RunLock

    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    out = tmp_path / "busy"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "formerkit", "train", str(recipe), "--output-dir", str(out), *SETTINGS]
    with RunLock(out):
        result = subprocess.run(cmd, env=toytask.subprocess_env(), capture_output=True,
                                text=True, timeout=300)  # no rank may wait for the other
    assert result.returncode != 0
    # Both ranks, one message each; the two processes' writes may share a line on stderr.
    errors = result.stderr.split("formerkit: error: ")[1:]
    assert len(errors) == 2, result.stderr[-3000:]
    assert all(f"in use by process {os.getpid()}" in error for error in errors)
    assert not (out / "log.jsonl").exists()
