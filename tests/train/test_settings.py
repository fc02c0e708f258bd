"""What differs between the settings a checkpoint recorded and a new run's."""

from __future__ import annotations

from formerkit.train.settings import flatten, settings_diff


def test_flatten_nests_with_dots():
    assert flatten({"trainer": {"lr": 0.1, "betas": [1, 2]}, "imports": []}) == \
        {"trainer.lr": 0.1, "trainer.betas": [1, 2], "imports": []}


def test_diff_lists_changed_added_and_removed_keys():
    old = {"trainer": {"lr": 0.01, "seed": 0, "progress": True}, "model": {"dropout": 0.0}}
    new = {"trainer": {"lr": 0.02, "seed": 0, "progress": False},
           "model": {"dropout": 0.0, "extra": 1}, "description": "edited"}
    assert settings_diff(old, new) == ["model.extra: (unset) -> 1", "trainer.lr: 0.01 -> 0.02"]


def test_tuples_and_lists_compare_equal():
    assert settings_diff({"model": {"sizes": (1, 2)}}, {"model": {"sizes": [1, 2]}}) == []
