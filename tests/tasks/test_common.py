"""Helpers every task shares: the split an evaluation reads and its errors."""

from __future__ import annotations

import pytest

from formerkit.tasks.common import split_to_evaluate


def test_split_to_evaluate_returns_the_split_and_names_what_emptied_it():
    splits = {"val": [], "test": [1, 2]}
    assert split_to_evaluate(splits, "test", "data.val_fraction=0") == [1, 2]
    with pytest.raises(ValueError, match=r"^there is no validation split \(data.val_fraction=0\)"
                                         r"; set trainer.eval_every=0"):
        split_to_evaluate(splits, "val", "data.val_fraction=0")
    with pytest.raises(KeyError, match=r"split must be one of \['test', 'val'\], got 'train'"):
        split_to_evaluate(splits, "train", "data.val_fraction=0")


@pytest.mark.parametrize("task_name", ["image-classification", "image-mae"])
def test_image_tasks_refuse_an_empty_validation_split(task_name):
    pytest.importorskip("sklearn")
    from formerkit.tasks.base import get_task

    task = get_task(task_name)
    data = task.data_config.from_dict({"val_fraction": 0.0})
    setup = task.setup({"name": "vit" if task_name == "image-classification" else "vit-mae",
                        "preset": "digits", "n_layers": 1, "d_model": 16, "n_heads": 2,
                        "d_ff": 32}, data, task.task_config(), seed=0)
    with pytest.raises(ValueError, match="no validation split .data.val_fraction=0."):
        setup.evaluate(setup.model, "val")
    assert setup.evaluate(setup.model, "test")["loss"] > 0
