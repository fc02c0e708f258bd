"""Atomic checkpoints: round trip, keep-last-N, RNG states, corrupt and truncated files."""

from __future__ import annotations

import errno
import json
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


def _flip_last_byte(file):
    data = file.read_bytes()
    file.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))


def test_resume_point_refuses_when_no_checkpoint_verifies(tmp_path):
    paths = [ckpt.save_checkpoint(tmp_path, s, _weights(s), {"step": s}, keep=3) for s in (1, 2)]
    for path in paths:
        _flip_last_byte(path / ckpt.STATE)
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.resume_point(tmp_path)
    message = str(info.value)
    assert "\n" not in message and "--restart" in message
    assert all(str(path / ckpt.STATE) in message for path in paths)
    assert ckpt.list_checkpoints(tmp_path) == paths  # nothing moved or deleted


def test_resume_point_sets_newer_corrupt_checkpoints_aside(tmp_path):
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, _weights(step), {"step": step}, keep=3)
    _flip_last_byte(tmp_path / "step_00000003" / ckpt.WEIGHTS)
    with pytest.warns(UserWarning, match="set aside as corrupt-step_00000003"):
        assert ckpt.resume_point(tmp_path).name == "step_00000002"
    assert (tmp_path / "corrupt-step_00000003" / ckpt.WEIGHTS).is_file()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000001",
                                                                 "step_00000002"]
    assert ckpt.resume_point(tmp_path / "empty") is None


def test_cleanup_never_keeps_a_corrupt_checkpoint_over_a_verified_one(tmp_path):
    # Checkpoints of higher steps that are corrupt (e.g. from before a restart) must not
    # count as the `keep` newest: the new good one would be deleted in their place.
    for path in [ckpt.save_checkpoint(tmp_path, s, _weights(s), {}, keep=3) for s in (6, 9)]:
        _flip_last_byte(path / ckpt.STATE)
    verified = set()
    with pytest.warns(UserWarning, match="set aside"):
        new = ckpt.save_checkpoint(tmp_path, 1, _weights(1), {"step": 1}, keep=2,
                                   verified=verified)
    assert ckpt.list_checkpoints(tmp_path) == [new]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "corrupt-step_00000006", "corrupt-step_00000009", "step_00000001"]
    ckpt.save_checkpoint(tmp_path, 2, _weights(2), {"step": 2}, keep=2, verified=verified)
    ckpt.save_checkpoint(tmp_path, 3, _weights(3), {"step": 3}, keep=2, verified=verified)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000002",
                                                                 "step_00000003"]


def _edit_meta(path, edit):
    meta_file = path / ckpt.META
    if isinstance(edit, bytes):
        meta_file.write_bytes(edit)
        return
    meta = json.loads(meta_file.read_text())
    edit(meta)
    meta_file.write_text(json.dumps(meta))


@pytest.mark.parametrize("edit, match", [
    (b'{"step": 2, "files": {"\xff": 1}}', "meta.json is corrupt"),
    (lambda m: m["files"].update({"../../etc/hostname": {"sha256": "0" * 64, "size": 1}}),
     "not a checkpoint file"),
    (lambda m: m.update({"files": {}}), "lists no checksum for model.safetensors, state.pt"),
    (lambda m: m["files"][ckpt.STATE].update({"size": "12"}), "integer 'size'"),
    (lambda m: m.update({"files": []}), "no 'files' table"),
])
def test_meta_json_cannot_switch_verification_off_or_read_outside(tmp_path, edit, match):
    ckpt.save_checkpoint(tmp_path, 1, _weights(1), {"step": 1}, keep=3)
    latest = ckpt.save_checkpoint(tmp_path, 2, _weights(2), {"step": 2}, keep=3)
    _edit_meta(latest, edit)
    with pytest.raises(ckpt.CheckpointError, match=match) as info:
        ckpt.verify_checkpoint(latest)
    assert str(latest / ckpt.META) in str(info.value)
    with pytest.warns(UserWarning, match="falling back"):
        assert ckpt.find_resumable(tmp_path).name == "step_00000001"


def test_settings_are_recorded_and_checksummed(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, 1, _weights(1), {}, keep=1,
                                settings={"trainer": {"lr": 0.5}})
    assert ckpt.read_settings(path) == {"trainer": {"lr": 0.5}}
    (path / ckpt.SETTINGS).write_text('{"trainer": {"lr": 0.25}}')
    with pytest.raises(ckpt.CheckpointError, match="settings.json"):
        ckpt.verify_checkpoint(path)


def test_stale_temporaries_are_removed(tmp_path):
    ckpt.save_checkpoint(tmp_path, 1, _weights(1), {}, keep=2)
    stale = tmp_path / ".tmp-step_00000002-4242"
    stale.mkdir()
    (stale / ckpt.WEIGHTS).write_bytes(b"partial")
    assert ckpt.remove_temporaries(tmp_path) == [stale]
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000001"]


def test_a_failed_save_leaves_no_temporary_folder(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    good = ckpt.save_checkpoint(tmp_path, 1, _weights(1), {"step": 1}, keep=2)
    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save_checkpoint(tmp_path, 2, _weights(2), {"step": 2}, keep=2)
    assert [p.name for p in tmp_path.iterdir()] == [good.name]
    ckpt.verify_checkpoint(good)
