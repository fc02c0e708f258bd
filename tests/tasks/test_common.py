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


def test_masked_reconstruction_loss_uses_the_same_masks_every_time():
    import numpy as np
    import torch

    import formerkit
    from formerkit.tasks.common import masked_reconstruction_loss

    torch.manual_seed(0)
    mae = formerkit.create_model("vit-mae", preset="digits", n_layers=1)
    images = np.random.default_rng(0).uniform(-1, 1, (10, 1, 8, 8)).astype(np.float32)
    loss = masked_reconstruction_loss(mae, images, input_name="pixel_values", n_units=16,
                                      batch_size=4, seed=3)["loss"]
    generator = torch.Generator().manual_seed(3)  # batches of 4, 4 and 2, one generator
    expected = 0.0
    with torch.no_grad():
        for start in (0, 4, 8):
            batch = torch.from_numpy(images[start:start + 4])
            noise = torch.rand(len(batch), 16, generator=generator)
            expected += mae(batch, noise=noise).loss.item() * len(batch)
    assert loss == pytest.approx(expected / 10, rel=1e-6)
    assert loss == masked_reconstruction_loss(mae, images, input_name="pixel_values",
                                              n_units=16, batch_size=4, seed=3)["loss"]
    assert loss != masked_reconstruction_loss(mae, images, input_name="pixel_values",
                                              n_units=16, batch_size=4, seed=4)["loss"]
