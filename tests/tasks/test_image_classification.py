"""Task ``image-classification``: tiny end-to-end runs of the vit-digits recipe and of its CNN
baseline on scikit-learn's digits, then load the saved model and export it to ONNX."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import formerkit
from formerkit.data.images import load_digits, split_stratified

pytest.importorskip("sklearn")

TRAINER = ["trainer.max_steps=100", "trainer.batch_size=64", "trainer.lr=0.003",
           "trainer.warmup_steps=10", "trainer.eval_every=50", "trainer.weight_decay=0.0",
           "trainer.progress=false"]
TINY_VIT = ["model.d_model=32", "model.n_heads=2", "model.n_layers=1", "model.d_ff=64",
            "model.dropout=0.0"]


def test_digits_split_is_stratified_and_scaled():
    data = load_digits(val_fraction=0.1, test_fraction=0.2, split_seed=0)
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert data.train.x.shape[1:] == (1, 8, 8) and data.train.x.dtype == np.float32
    assert data.train.x.min() == -1.0 and data.train.x.max() == 1.0
    counts = np.bincount(data.test.y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # ~20% of each class (174..183 each)
    again = load_digits(val_fraction=0.1, test_fraction=0.2, split_seed=0)
    assert np.array_equal(again.test.y, data.test.y)
    with pytest.raises(ValueError, match="val_fraction"):
        split_stratified(data.train.x, data.train.y, data.class_names, val_fraction=0.5,
                         test_fraction=0.5, split_seed=0)


@pytest.mark.parametrize("recipe,overrides", [("vit-digits", TINY_VIT), ("cnn-digits", [])])
def test_tiny_digits_run_learns_saves_evaluates_and_exports(tmp_path, capsys, recipe,
                                                           overrides):
    run = tmp_path / "run"
    metrics = formerkit.train(recipe, output_dir=run, overrides=TRAINER + overrides)
    for key in ("val_accuracy", "test_accuracy", "test_macro_f1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["test_accuracy"] > 0.5  # ten balanced classes: chance is 0.1
    confusion = json.loads((run / "confusion.json").read_text())
    matrix = np.array(confusion["matrix"])
    assert matrix.sum() == 359 and confusion["labels"] == [str(i) for i in range(10)]
    model = formerkit.from_pretrained(run / "model")
    data = load_digits()
    with torch.no_grad():
        predicted = model(torch.from_numpy(data.test.x)).logits.argmax(-1).numpy()
    assert (predicted == data.test.y).mean() == pytest.approx(np.trace(matrix) / 359)
    from formerkit import cli

    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--split", "test"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["test_accuracy"] == pytest.approx(np.trace(matrix) / 359)
    pytest.importorskip("onnxruntime")
    from formerkit.export import export

    result = export(run)
    assert result.max_abs_diff[result.path] < 1e-4


def test_mae_pretraining_then_fine_tuning_from_its_encoder(tmp_path):
    from formerkit.tasks.base import get_task
    from formerkit.tasks.image_classification import ImageDataConfig, ImageTaskConfig

    tiny = ["model.d_model=32", "model.n_heads=2", "model.n_layers=1", "model.d_ff=64",
            "model.decoder_d_model=16", "model.decoder_n_heads=2", "model.decoder_n_layers=1",
            "model.decoder_d_ff=32"]
    short = ["trainer.max_steps=20", "trainer.eval_every=0", "trainer.progress=false"]
    pre = tmp_path / "mae"
    metrics = formerkit.train("vit-mae-digits", output_dir=pre, overrides=short + tiny)
    assert 0 < metrics["test_loss"] < 2 and 0 < metrics["val_loss"] < 2
    mae = formerkit.from_pretrained(pre / "model")
    setup = get_task("image-classification").setup(
        {"name": "vit", "dropout": 0.0}, ImageDataConfig(),
        ImageTaskConfig(init_from=str(pre)), seed=0)
    classifier = setup.model
    assert classifier.config.d_model == 32 and classifier.config.num_labels == 10
    ours = classifier.vit.state_dict()
    for name, tensor in mae.vit.state_dict().items():
        torch.testing.assert_close(ours[name], tensor, rtol=0, atol=0, msg=name)
    assert classifier.vit.embeddings.position.requires_grad  # fine-tuned like the rest
    run = tmp_path / "fine-tune"
    metrics = formerkit.train("vit-digits", output_dir=run,
                              overrides=short + [f"task.init_from={pre}"])
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    with pytest.raises(ValueError, match="not a ViT or MAE"):
        cnn = tmp_path / "cnn"
        formerkit.create_model("cnn").save_pretrained(cnn)
        get_task("image-classification").setup({"name": "vit"}, ImageDataConfig(),
                                                ImageTaskConfig(init_from=str(cnn)), seed=0)


def test_evaluate_notes_an_empty_validation_split_and_scores_the_others(tmp_path, capsys):
    from formerkit import cli

    run = tmp_path / "run"
    formerkit.train("cnn-digits", output_dir=run,
                    overrides=["trainer.max_steps=2", "trainer.eval_every=0",
                               "trainer.progress=false", "data.val_fraction=0"])
    capsys.readouterr()
    assert cli.main(["evaluate", str(run)]) == 0
    captured = capsys.readouterr()
    assert set(json.loads(captured.out)) >= {"test_accuracy", "test_loss"}
    assert "no val split" in captured.err and "data.val_fraction=0" in captured.err
    assert cli.main(["evaluate", str(run), "--split", "val"]) == 2  # asked for: an error
    assert "there is no validation split (data.val_fraction=0)" in capsys.readouterr().err
