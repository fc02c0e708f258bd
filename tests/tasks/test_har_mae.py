"""Task ``har-mae`` on UCI HAR: pre-train a tiny encoder, then fine-tune ``har-uci`` from it on a
small labelled share of the windows."""

from __future__ import annotations

import json

import pytest
import torch

import formerkit
from formerkit.tasks.base import get_task
from formerkit.tasks.har import HARDataConfig, HARTaskConfig

SIZES = ["model.d_model=16", "model.n_heads=2", "model.n_layers=1", "model.d_ff=32"]
QUICK = ["trainer.batch_size=32", "trainer.lr=0.003", "trainer.warmup_steps=0",
         "trainer.progress=false"]


@pytest.mark.slow
def test_pretrain_then_fine_tune_on_five_percent_of_the_labels(tmp_path, data_dir, capsys):
    pre = formerkit.train("har-mae", output_dir=tmp_path / "mae",
                          overrides=SIZES + QUICK + ["trainer.max_steps=40",
                                                     "trainer.eval_every=20"])
    history = [json.loads(line) for line in (tmp_path / "mae" / "log.jsonl").open()]
    val = [row["val_loss"] for row in history if "val_loss" in row]
    assert len(val) >= 2 and val[-1] < val[0]  # reconstruction improves
    assert pre["test_loss"] < 1.0  # predicting 0 (the channel mean) scores about 1

    metrics = formerkit.train(
        "har-uci", output_dir=tmp_path / "fine",
        overrides=QUICK + ["trainer.max_steps=30", "trainer.eval_every=0",
                           "task.stream_stride=128", f"task.init_from={tmp_path / 'mae'}",
                           "data.label_fraction=0.05"])
    assert "309 of 6,184 training windows labelled" in capsys.readouterr().out
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    fine = formerkit.from_pretrained(tmp_path / "fine" / "model")
    assert fine.config.d_model == 16 and fine.config.dropout == 0.1  # sizes from the source
    source = formerkit.from_pretrained(tmp_path / "mae" / "model")
    torch.testing.assert_close(fine.normalize.mean, source.normalize.mean)


def test_init_from_loads_the_pretrained_backbone(tmp_path, data_dir):
    torch.manual_seed(0)
    source = formerkit.create_model("har-mae", "tiny")
    source.normalize.set_statistics(torch.randn(10, 128, 9) + 3)
    source.save_pretrained(tmp_path / "mae")
    setup = get_task("har").setup({"name": "har", "preset": "small", "dropout": 0.2},
                                  HARDataConfig(), HARTaskConfig(init_from=str(tmp_path / "mae")),
                                  seed=0)
    model = setup.model
    assert model.config.d_model == 16 and model.config.dropout == 0.2
    assert model.config.class_names[5] == "LAYING"
    state = source.state_dict()
    for name, tensor in model.state_dict().items():
        if not name.startswith("classifier."):
            torch.testing.assert_close(tensor, state[name], msg=name)

    three = formerkit.create_model("har-mae", "tiny", n_channels=3)
    three.save_pretrained(tmp_path / "three")
    with pytest.raises(ValueError, match="trained on 3 channels, the data has 9"):
        get_task("har").setup({"name": "har"}, HARDataConfig(),
                              HARTaskConfig(init_from=str(tmp_path / "three")), seed=0)
    formerkit.create_model("gpt", "tiny").save_pretrained(tmp_path / "gpt")
    with pytest.raises(ValueError, match="not an activity model"):
        get_task("har").setup({"name": "har"}, HARDataConfig(),
                              HARTaskConfig(init_from=str(tmp_path / "gpt")), seed=0)


def test_pretraining_uses_no_labels_and_rejects_a_label_budget(data_dir):
    from formerkit.tasks.har_mae import HARMAETaskConfig

    setup = get_task("har-mae").setup({"name": "har-mae", "preset": "tiny"}, HARDataConfig(),
                                      HARMAETaskConfig(), seed=0)
    assert set(setup.train_dataset[0]) == {"inputs"}
    assert setup.train_dataset[0]["inputs"].shape == (128, 9)
    first = setup.evaluate(setup.model, "val")["loss"]
    assert setup.evaluate(setup.model, "val")["loss"] == first  # fixed evaluation masks
    with pytest.raises(ValueError, match="uses no labels"):
        get_task("har-mae").setup({"name": "har-mae", "preset": "tiny"},
                                  HARDataConfig(label_fraction=0.1), HARMAETaskConfig(), seed=0)
