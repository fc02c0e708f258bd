"""A run killed with SIGKILL at a random moment and then resumed ends bitwise equal to an
uninterrupted run (CPU, same seed)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import toytask
from safetensors.torch import load_file

SETTINGS = ["trainer.max_steps=14", "trainer.checkpoint_every=3", "trainer.eval_every=5",
            "trainer.batch_size=16", "model.dropout=0.1"]


def _cmd(recipe: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "formerkit", "train", str(recipe), "--output-dir", str(out),
            *SETTINGS]


def _last_step(log: Path) -> int:
    steps = [0]
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                steps.append(json.loads(line)["step"])
            except (json.JSONDecodeError, KeyError):
                pass
    return max(steps)


@pytest.mark.slow  # three training subprocesses
def test_sigkill_then_resume_is_bitwise_exact(tmp_path):
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    env = toytask.subprocess_env()
    ref = tmp_path / "ref"
    subprocess.run(_cmd(recipe, ref), env=env, check=True, capture_output=True, timeout=300)

    rng = random.Random(os.getpid() ^ int(time.time()))
    killed = tmp_path / "killed"
    target = rng.randint(2, 12)  # a step to reach, then a random extra delay
    proc = subprocess.Popen(_cmd(recipe, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while proc.poll() is None and _last_step(killed / "log.jsonl") < target and \
            time.time() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    result = subprocess.run(_cmd(recipe, killed), env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("model/model.safetensors", "checkpoint/step_00000014/model.safetensors"):
        a, b = load_file(str(ref / name)), load_file(str(killed / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key} differs (killed at ~{target})"
    assert json.loads((killed / "metrics.json").read_text()) == \
        json.loads((ref / "metrics.json").read_text())
    steps = [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 15))  # no step logged twice after resuming
