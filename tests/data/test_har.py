"""UCI HAR data: subject splits, stitched streams with per-step labels, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from formerkit.data.har import (
    HARSplit,
    HARStreamSequences,
    HARWindows,
    load_uci_har,
    random_rotation,
    rotate_triples,
    stitch_streams,
)


def synthetic_split() -> HARSplit:
    """Two subjects; subject 1 has a 3-window recording of class 0 then 2 windows of class 1,
    subject 2 one window of class 2. Windows of 8 steps overlap by 4, as in UCI HAR."""
    rng = np.random.default_rng(0)
    recording_a = rng.normal(size=(16, 2)).astype(np.float32)  # windows at 0, 4, 8
    recording_b = rng.normal(size=(12, 2)).astype(np.float32) + 10  # windows at 0, 4
    windows = [recording_a[s:s + 8] for s in (0, 4, 8)] + [recording_b[s:s + 8] for s in (0, 4)]
    windows.append(rng.normal(size=(8, 2)).astype(np.float32) - 10)
    return HARSplit(np.stack(windows), np.array([0, 0, 0, 1, 1, 2]),
                    np.array([1, 1, 1, 1, 1, 2]))


def test_stitch_streams_rejoins_recordings_with_per_step_labels():
    split = synthetic_split()
    streams = stitch_streams(split)
    assert [s.subject for s in streams] == [1, 2]
    first = streams[0]
    assert first.x.shape == (16 + 12, 2)
    np.testing.assert_array_equal(first.y, [0] * 16 + [1] * 12)
    np.testing.assert_array_equal(first.starts, [0, 4, 8, 16, 20])
    for i, start in enumerate(first.starts):  # every window is found verbatim
        np.testing.assert_array_equal(first.x[start:start + 8], split.x[i])
    np.testing.assert_array_equal(streams[1].x, split.x[5])


def test_windows_without_augmentation_are_the_file_windows():
    split = synthetic_split()
    item = HARWindows(split)[3]
    assert torch.equal(item["inputs"], torch.from_numpy(split.x[3]))
    assert torch.equal(item["labels"], torch.ones(8, dtype=torch.long))


def test_time_shift_crops_the_recording_and_stitch_mixes_activities():
    split = synthetic_split()
    stream = stitch_streams(split)[0]
    shifted = HARWindows(split, augment=True, time_shift=3)
    torch.manual_seed(0)
    seen = set()
    for _ in range(30):
        item = shifted[1]
        start = next(s for s in range(len(stream.y) - 7)
                     if np.array_equal(stream.x[s:s + 8], item["inputs"].numpy()))
        np.testing.assert_array_equal(item["labels"].numpy(), stream.y[start:start + 8])
        seen.add(start)
    assert seen <= set(range(1, 8)) and len(seen) > 3  # window 1 starts at 4, shift <= 3
    stitched = HARWindows(split, augment=True, stitch_prob=1.0)[0]
    labels = stitched["labels"].tolist()
    assert labels[0] == 0 and labels[-1] == 1  # subject 1's other activity is class 1
    cut = labels.index(1)
    np.testing.assert_array_equal(stitched["inputs"][cut:].numpy(), split.x[3, :8 - cut])


def test_jitter_and_scale_are_seeded_and_change_values():
    split = synthetic_split()
    data = HARWindows(split, augment=True, jitter=0.1, scale=0.1)
    torch.manual_seed(1)
    a = data[2]["inputs"]
    torch.manual_seed(1)
    b = data[2]["inputs"]
    assert torch.equal(a, b)
    assert not torch.allclose(a, torch.from_numpy(split.x[2]))
    with pytest.raises(ValueError, match="stitch_prob"):
        HARWindows(split, stitch_prob=1.5)


def test_random_rotation_is_a_rotation_within_the_angle():
    torch.manual_seed(0)
    for _ in range(20):
        rotation = random_rotation(15.0).double()
        torch.testing.assert_close(rotation @ rotation.T, torch.eye(3, dtype=torch.float64))
        assert torch.linalg.det(rotation).item() == pytest.approx(1.0, abs=1e-6)
        angle = torch.rad2deg(torch.arccos((rotation.trace() - 1) / 2)).item()
        assert angle <= 15.0 + 1e-3
    angles = [torch.rad2deg(torch.arccos((random_rotation(90.0).trace() - 1).clamp(-2, 2) / 2))
              for _ in range(50)]
    assert max(angles) > 45.0  # the angle is drawn over the whole range, not fixed


def test_rotation_turns_every_triple_alike_and_keeps_lengths():
    x = torch.randn(5, 6)
    rotation = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 deg about z
    turned = rotate_triples(x, rotation)
    torch.testing.assert_close(turned[:, 0], -x[:, 1])
    torch.testing.assert_close(turned[:, 1], x[:, 0])
    torch.testing.assert_close(turned[:, 3:], torch.stack([-x[:, 4], x[:, 3], x[:, 5]], 1))
    split = synthetic_split()
    six = HARSplit(np.concatenate([split.x, -split.x, 2 * split.x], -1), split.y, split.subject)
    item = HARWindows(six, augment=True, rotate=30.0)[2]["inputs"]
    original = torch.from_numpy(six.x[2].copy())
    torch.testing.assert_close(item.reshape(8, 2, 3).norm(dim=-1),
                               original.reshape(8, 2, 3).norm(dim=-1))
    assert not torch.allclose(item, original)
    with pytest.raises(ValueError, match="x/y/z channel triples"):
        HARWindows(split, augment=True, rotate=10.0)  # 2 channels


def test_uci_har_official_and_validation_splits(data_dir):
    data = load_uci_har(n_val_subjects=3, split_seed=0)
    assert data.train.x.shape[1:] == (128, 9) and len(data.test) == 2947
    assert len(data.train) + len(data.val) == 7352
    train, val, test = (set(s.subject.tolist()) for s in (data.train, data.val, data.test))
    assert len(val) == 3 and not (train & val) and not (train & test) and not (val & test)
    assert test == {2, 4, 9, 10, 12, 13, 18, 20, 24}
    assert data.activities[3:5] == ["SITTING", "STANDING"]
    assert data.channels[-1] == "total_acc_z"
    streams = stitch_streams(data.test)
    assert len(streams) == 9
    assert sum(int((s.y[1:] != s.y[:-1]).sum()) for s in streams) == 111  # activity changes
    with pytest.raises(ValueError, match="n_val_subjects"):
        load_uci_har(n_val_subjects=21)


def test_stream_sequences_cover_each_stream_with_per_step_labels():
    split = synthetic_split()
    data = HARStreamSequences(split, length=12, hop=8)
    stream = stitch_streams(split)[0]  # 28 steps; subject 2's 8-step stream is too short
    assert data.items == [(0, 0), (0, 8), (0, 16)]
    item = data[2]
    np.testing.assert_array_equal(item["inputs"].numpy(), stream.x[16:28])
    np.testing.assert_array_equal(item["labels"].numpy(), [1] * 12)
    assert set(data[1]["labels"].tolist()) == {0, 1}  # crosses the activity change
    with pytest.raises(ValueError, match="length"):
        HARStreamSequences(split, length=0)


def test_labelled_subset_is_stratified_seeded_and_keeps_every_class():
    from formerkit.data.har import labelled_subset

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [100, 40, 3])
    split = HARSplit(rng.normal(size=(len(y), 4, 2)).astype(np.float32), y,
                     np.ones(len(y), dtype=np.int64))
    part = labelled_subset(split, 0.1, seed=0)
    assert np.bincount(part.y).tolist() == [10, 4, 1]  # at least one of the rare class
    chosen = [np.flatnonzero((split.x == window).all(axis=(1, 2)))[0] for window in part.x]
    assert chosen == sorted(chosen)  # the file's order
    np.testing.assert_array_equal(labelled_subset(split, 0.1, seed=0).x, part.x)
    assert not np.array_equal(labelled_subset(split, 0.1, seed=1).x, part.x)
    assert labelled_subset(split, 1.0) is split
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="label_fraction must be in"):
            labelled_subset(split, bad)
