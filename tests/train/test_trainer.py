"""The training loop on a tiny model: run files, accumulation, precision, activation
checkpointing, early stopping, best model, non-finite loss and exact resumption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import toytask
from safetensors.torch import load_file

import formerkit
from formerkit.train import Trainer, TrainerConfig, TrainingError
from formerkit.train.batches import GlobalBatches, check_divisible, shard


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in _log(run) if "loss" in r]


def _run(tmp_path: Path, name: str, **trainer) -> tuple[dict, Path]:
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    out = tmp_path / name
    return formerkit.train(recipe, output_dir=out, trainer=trainer), out


def test_recipe_run_writes_the_run_directory(tmp_path):
    metrics, run = _run(tmp_path, "run")
    assert set(metrics) == {"val_loss", "val_accuracy", "test_loss", "test_accuracy"}
    assert json.loads((run / "metrics.json").read_text()) == metrics
    log = _log(run)
    train_lines = [r for r in log if "loss" in r]
    assert [r["step"] for r in train_lines] == [1, 2, 3, 4, 5, 6]
    assert all({"lr", "tokens_per_s", "elapsed"} <= set(r) for r in train_lines)
    assert [r["step"] for r in log if "val_loss" in r and not r.get("final")] == [3, 6]
    assert train_lines[-1]["loss"] < train_lines[0]["loss"]
    recipe = load_recipe_file(run / "recipe.yaml")
    assert recipe["name"] == "toy" and recipe["trainer"]["max_steps"] == 6
    assert (run / "model" / "config.json").is_file()
    assert (run / "model" / "toy_artifact.json").is_file()  # TaskSetup.save_artifacts
    assert (run / "after_training.txt").read_text() == "done\n"
    assert [p.name for p in (run / "checkpoint").glob("step_*")] != []


def load_recipe_file(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_python_api_with_own_model_data_and_metrics(tmp_path):
    torch.manual_seed(0)
    model = toytask.ToyLM(toytask.ToyConfig())
    g = torch.Generator().manual_seed(0)
    train = toytask.ToyDataset(toytask.make_sequences(64, 8, 11, g))
    val = toytask.ToyDataset(toytask.make_sequences(10, 8, 11, g))

    def accuracy(output, batch):
        return {"accuracy": (output.logits.argmax(-1) == batch["labels"]).float().mean()}

    config = TrainerConfig(max_steps=8, batch_size=16, lr=0.02, eval_every=4, log_every=1,
                           progress=False)
    trainer = Trainer(model, train, config=config, eval_dataset=val, metrics=accuracy,
                      compute_loss=lambda m, b: m(b["input_ids"], labels=b["labels"]).loss,
                      output_dir=tmp_path / "api")
    metrics = trainer.fit()
    assert set(metrics) == {"val_loss", "val_accuracy"}  # no test split given
    losses = _losses(tmp_path / "api")
    assert losses[-1] < losses[0]
    saved = load_file(str(tmp_path / "api" / "model" / "model.safetensors"))
    assert set(saved) == set(model.state_dict())


@pytest.mark.parametrize("grad_accum", [2, 4])
def test_gradient_accumulation_matches_one_big_batch(tmp_path, grad_accum):
    _, one = _run(tmp_path, "one", eval_every=0)
    _, acc = _run(tmp_path, "acc", eval_every=0, grad_accum=grad_accum)
    torch.testing.assert_close(torch.tensor(_losses(acc)), torch.tensor(_losses(one)),
                               atol=1e-5, rtol=0)


def test_activation_checkpointing_same_curve(tmp_path):
    _, plain = _run(tmp_path, "plain", eval_every=0)
    _, ckpt = _run(tmp_path, "ckpt", eval_every=0, activation_checkpointing=True)
    torch.testing.assert_close(torch.tensor(_losses(ckpt)), torch.tensor(_losses(plain)),
                               atol=1e-6, rtol=0)
    model = toytask.ToyLM(toytask.ToyConfig())
    from formerkit.train.trainer import enable_activation_checkpointing

    assert enable_activation_checkpointing(model) == 1 and model.encoder.gradient_checkpointing
    with pytest.raises(ValueError, match="no formerkit.nn Encoder"):
        enable_activation_checkpointing(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_is_close_to_fp32(tmp_path, precision):
    _, fp32 = _run(tmp_path, "fp32", eval_every=0, max_steps=3)
    _, mixed = _run(tmp_path, precision, eval_every=0, max_steps=3, precision=precision)
    ref, got = torch.tensor(_losses(fp32)), torch.tensor(_losses(mixed))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, atol=0.05, rtol=0)
    if precision == "fp16":  # the grad scaler's state is checkpointed
        from formerkit.train.checkpoint import find_resumable, load_checkpoint

        _, state = load_checkpoint(find_resumable(mixed / "checkpoint"))
        assert "scaler" in state


def test_non_finite_loss_stops_naming_the_step(tmp_path):
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    batches = GlobalBatches(64, 8, seed=0).epoch(0)
    nan_index, nan_step = batches[3][5], 4  # a sample of the 4th global batch
    out = tmp_path / "nan"
    with pytest.raises(TrainingError, match=f"non-finite loss \\(nan\\) at step {nan_step};"):
        formerkit.train(recipe, output_dir=out, overrides=[f"data.nan_at={nan_index}"],
                        trainer={"checkpoint_every": 1, "eval_every": 0})
    steps = sorted(int(p.name[5:]) for p in (out / "checkpoint").glob("step_*"))
    assert steps == [s for s in (nan_step - 2, nan_step - 1) if s > 0]
    assert not (out / "model").exists()


def test_early_stopping_and_best_model(tmp_path):
    torch.manual_seed(0)
    model = toytask.ToyLM(toytask.ToyConfig())
    train = toytask.ToyDataset(toytask.make_sequences(64, 8, 11, torch.Generator()))
    scores = iter([3.0, 1.0, 2.0, 2.5, 4.0, 5.0, 6.0, 7.0])
    snapshots = {}

    def evaluate(m, split):
        if split == "test":
            raise ValueError("no test split")
        value = next(scores)
        snapshots[value] = {k: v.clone() for k, v in m.state_dict().items()}
        return {"loss": value}

    config = TrainerConfig(max_steps=20, batch_size=8, eval_every=1, lr=0.01,
                           early_stopping_patience=3, progress=False)
    metrics = Trainer(model, train, config=config, evaluate=evaluate,
                      output_dir=tmp_path / "es").fit()
    log = _log(tmp_path / "es")
    assert max(r["step"] for r in log) == 5  # evals at 1..5; 3 without improving on step 2
    saved = load_file(str(tmp_path / "es" / "model" / "model.safetensors"))
    for name, tensor in snapshots[1.0].items():
        assert torch.equal(saved[name], tensor), name  # the best model (step 2) is saved
    assert metrics == {"val_loss": 5.0}  # the best model is evaluated again at the end
    # Running again resumes the stopped run: it stays stopped and is not trained further.
    again = Trainer(toytask.ToyLM(toytask.ToyConfig()), train, config=config,
                    evaluate=lambda m, split: {"loss": 0.5}, output_dir=tmp_path / "es")
    assert again.fit() == {"val_loss": 0.5, "test_loss": 0.5}
    assert max(r["step"] for r in _log(tmp_path / "es")) == 5


def test_a_task_without_validation_data_still_finishes_with_test_metrics(tmp_path):
    train = toytask.ToyDataset(toytask.make_sequences(32, 8, 11, torch.Generator()))

    def evaluate(m, split):
        if split == "val":
            raise ValueError("no validation split")
        return {"loss": 1.5}

    config = TrainerConfig(max_steps=2, batch_size=8, eval_every=0, progress=False)
    metrics = Trainer(toytask.ToyLM(toytask.ToyConfig()), train, config=config,
                      evaluate=evaluate, output_dir=tmp_path / "run").fit()
    assert metrics == {"test_loss": 1.5}
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_rerun_of_finished_run_resumes_without_duplicating_the_log(tmp_path):
    first, run = _run(tmp_path, "run")
    log_before = [r for r in _log(run) if not r.get("final")]
    second, _ = _run(tmp_path, "run")
    assert second == first
    assert [r for r in _log(run) if not r.get("final")] == log_before


def test_resume_falls_back_past_a_corrupt_checkpoint_and_is_exact(tmp_path, capsys):
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    settings = {"checkpoint_every": 2, "eval_every": 0, "max_steps": 6}
    overrides = ["model.dropout=0.2"]  # dropout: the restored RNG state matters
    formerkit.train(recipe, output_dir=tmp_path / "a", overrides=overrides, trainer=settings)
    formerkit.train(recipe, output_dir=tmp_path / "b", overrides=overrides, trainer=settings)
    b = tmp_path / "b"
    weights = b / "checkpoint" / "step_00000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    import shutil

    shutil.rmtree(b / "model")
    capsys.readouterr()
    formerkit.train(recipe, output_dir=b, overrides=overrides, trainer=settings)
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and "set aside as corrupt-step_00000006" in err
    assert (b / "checkpoint" / "corrupt-step_00000006").is_dir()  # kept, not deleted
    ref = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    got = load_file(str(b / "model" / "model.safetensors"))
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert [r["step"] for r in _log(b) if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_max_epochs_sets_the_length(tmp_path):
    _, run = _run(tmp_path, "ep", max_steps=None, max_epochs=2, batch_size=16, eval_every=0)
    assert [r["step"] for r in _log(run) if "loss" in r][-1] == 8  # 64 samples / 16 * 2


def test_task_batch_sampler_with_variable_batches(tmp_path):
    def batch_sampler(epoch):
        order = torch.randperm(30, generator=torch.Generator().manual_seed(epoch)).tolist()
        return [order[0:5], order[5:12], order[12:30]]

    curves = []
    for grad_accum in (1, 2):
        torch.manual_seed(0)
        model = toytask.ToyLM(toytask.ToyConfig())
        train = toytask.ToyDataset(toytask.make_sequences(30, 8, 11, torch.Generator()))
        config = TrainerConfig(max_steps=5, batch_size=8, grad_accum=grad_accum, log_every=1,
                               progress=False)
        out = tmp_path / f"bs{grad_accum}"
        Trainer(model, train, config=config, batch_sampler=batch_sampler, output_dir=out).fit()
        curves.append(torch.tensor(_losses(out)))
    assert len(curves[0]) == 5
    # micro-batches of unequal size are weighted by their share of the global batch
    torch.testing.assert_close(curves[1], curves[0], atol=1e-5, rtol=0)


def test_sharding_covers_each_global_batch_once():
    batch = list(range(10))
    parts = [shard(batch, r, 2, 2) for r in range(2)]
    seen = sorted(i for p in parts for idx, w in p for i in idx)
    assert seen == batch
    assert sum(w for p in parts for _, w in p) == pytest.approx(1.0)
    tiny = [shard([7], r, 2, 1) for r in range(2)]
    # an empty share reuses a sample with weight 0, so every process still steps
    assert sorted(tiny) == [[([7], 0.0)], [([7], 1.0)]]
    with pytest.raises(ValueError, match="batch_size=6 must be divisible by the number of "
                                         "processes \\(4\\)"):
        check_divisible(6, 4, 1)


def test_global_batches_do_not_depend_on_process_count():
    a, b = GlobalBatches(50, 8, seed=3), GlobalBatches(50, 8, seed=3)
    assert a.epoch(1) == b.epoch(1) and a.epoch(0) != a.epoch(1)
    assert len(a.epoch(0)) == 6 and all(len(x) == 8 for x in a.epoch(0))
    with pytest.raises(ValueError, match="fewer than trainer.batch_size=8"):
        GlobalBatches(5, 8, seed=0)


def test_data_loader_workers_give_the_same_curve(tmp_path):
    _, plain = _run(tmp_path, "w0", eval_every=0, max_steps=2)
    _, workers = _run(tmp_path, "w1", eval_every=0, max_steps=2, num_workers=1)
    assert _losses(workers) == _losses(plain)


def test_resuming_another_models_run_is_a_clear_error(tmp_path):
    _run(tmp_path, "run", max_steps=2, eval_every=0)
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    with pytest.raises(ValueError, match=r"other settings \(model.d_model: 16 -> 32\)"):
        formerkit.train(recipe, output_dir=tmp_path / "run", overrides=["model.d_model=32"],
                        trainer={"max_steps": 2, "eval_every": 0})
    with pytest.raises(ValueError, match="does not fit this model.*use a new --output-dir"):
        formerkit.train(recipe, output_dir=tmp_path / "run", overrides=["model.d_model=32"],
                        trainer={"max_steps": 2, "eval_every": 0}, resume_with_changes=True)


def test_last_step_is_evaluated_for_best_when_eval_every_does_not_divide(tmp_path):
    _, run = _run(tmp_path, "odd", max_steps=7, eval_every=3)
    log = _log(run)
    assert [r["step"] for r in log if "val_loss" in r and not r.get("final")] == [3, 6, 7]
    final = [r for r in log if r.get("final")][0]
    best = min((r for r in log if "val_loss" in r and not r.get("final")),
               key=lambda r: r["val_loss"])
    assert final["step"] == best["step"] and final["val_loss"] == best["val_loss"]
