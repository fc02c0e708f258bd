"""Atomic checkpoints: round trip, keep-last-N, RNG states, corrupt and truncated files."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from formerkit.train import checkpoint as ckpt


def _weights(value: float) -> dict[str, torch.Tensor]:
    return {"a.weight": torch.full((3, 4), float(value)), "a.bias": torch.arange(3.0) + value}


def test_round_trip_and_keep_last(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, _weights(step), {"step": step, "x": [1, 2.5]},
                             keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000003",
                                                                 "step_00000004"]
    weights, state = ckpt.load_checkpoint(ckpt.find_resumable(tmp_path))
    torch.testing.assert_close(weights["a.weight"], torch.full((3, 4), 4.0))
    assert state == {"step": 4, "x": [1, 2.5]}


def test_leftover_temporary_directory_is_ignored(tmp_path):
    ckpt.save_checkpoint(tmp_path, 1, _weights(1), {"step": 1}, keep=2)
    (tmp_path / ".tmp-step_00000002-999").mkdir()  # a save killed half-way
    (tmp_path / ".tmp-step_00000002-999" / "model.safetensors").write_bytes(b"partial")
    assert ckpt.find_resumable(tmp_path).name == "step_00000001"


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_meta", "delete_state"])
def test_corrupt_checkpoint_falls_back_to_previous(tmp_path, damage):
    ckpt.save_checkpoint(tmp_path, 1, _weights(1), {"step": 1}, keep=3)
    latest = ckpt.save_checkpoint(tmp_path, 2, _weights(2), {"step": 2}, keep=3)
    file = latest / ckpt.WEIGHTS
    data = file.read_bytes()
    if damage == "truncate":
        file.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        file.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "delete_meta":
        (latest / ckpt.META).unlink()
    else:
        (latest / ckpt.STATE).unlink()
    with pytest.raises(ckpt.CheckpointError, match=str(latest)):
        ckpt.load_checkpoint(latest)
    with pytest.warns(UserWarning, match="falling back"):
        good = ckpt.find_resumable(tmp_path)
    assert good.name == "step_00000001"
    assert ckpt.load_checkpoint(good)[1] == {"step": 1}


def test_rng_states_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    ckpt.save_checkpoint(tmp_path, 1, _weights(0), {"rng": ckpt.rng_state()}, keep=1)
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    _, state = ckpt.load_checkpoint(ckpt.find_resumable(tmp_path))
    ckpt.set_rng_state(state["rng"])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1]
    assert torch.equal(got[2], expected[2])


def test_atomic_write_text_replaces_whole_file(tmp_path):
    target = tmp_path / "metrics.json"
    ckpt.atomic_write_text(target, "{}\n")
    ckpt.atomic_write_text(target, '{"val_loss": 1.0}\n')
    assert target.read_text() == '{"val_loss": 1.0}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
