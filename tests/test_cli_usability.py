"""What people used to transformers, torchrun and TensorBoard try on their first day: --version,
help texts with defaults, recipes show/copy, greedy generation, missing optional dependencies,
evaluate naming the splits a run lacks, plots written into the run directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "train"))
import toytask  # noqa: E402  (registers the toy model and task)

from formerkit import cli  # noqa: E402
from formerkit.train.recipe import RECIPES_DIR, list_recipes  # noqa: E402


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("formerkit: error: "), err
    return err[0]


def test_version_prints_the_installed_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"formerkit {version('formerkit')}"


def test_generate_help_documents_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for option in ("--max-new-tokens", "--greedy", "--temperature", "--top-k", "--top-p",
                   "--repetition-penalty", "--num-beams", "--seed", "--device"):
        assert option in out
    assert "0 means greedy" in out and "(default: auto)" in out
    parser = cli.build_parser(with_plots=False)
    generate = next(a for a in parser._subparsers._group_actions[0].choices["generate"]._actions
                    if a.dest == "top_p")
    assert generate.help  # no option without a help text
    for action in parser._subparsers._group_actions[0].choices["generate"]._actions:
        assert action.help, action.dest


def test_train_help_lists_recipes_and_trainer_keys(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in list_recipes())
    for key in ("max_steps=1000", "lr=0.0003", "device=auto", "precision=fp32",
                "report_to=[]"):
        assert key in out


def test_recipes_show_prints_the_yaml(capsys):
    assert cli.main(["recipes", "show", "gpt-shakespeare-char"]) == 0
    assert capsys.readouterr().out == (RECIPES_DIR / "gpt-shakespeare-char.yaml").read_text()
    assert cli.main(["recipes", "gpt-shakespeare-char"]) == 0  # what people try first
    assert capsys.readouterr().out == (RECIPES_DIR / "gpt-shakespeare-char.yaml").read_text()
    assert cli.main(["recipes", "show", "gpt-shakespeare"]) == 2
    assert "gpt-shakespeare-char" in _error(capsys)  # the suggestion


def test_recipes_copy_writes_a_trainable_file(tmp_path, capsys):
    target = tmp_path / "mine.yaml"
    assert cli.main(["recipes", "copy", "transformer-copy", str(target)]) == 0
    assert target.read_text() == (RECIPES_DIR / "transformer-copy.yaml").read_text()
    assert f"formerkit train {target}" in capsys.readouterr().err
    assert cli.main(["recipes", "copy", "transformer-copy", str(target)]) == 2
    assert "--force" in _error(capsys)
    assert cli.main(["recipes", "copy", "har-uci", str(tmp_path)]) == 0  # into a folder
    assert (tmp_path / "har-uci.yaml").is_file()


def test_recipe_descriptions_carry_no_machine_notes():
    for name, description in list_recipes().items():
        for note in ("CPU", "core", "machine", "min ", "minutes", "load ~"):
            assert note not in description, (name, description)


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory) -> Path:
    """A tiny character GPT whose saved generation config asks for sampling."""
    from formerkit import GPTConfig, GPTForCausalLM
    from formerkit.data.tokenizers import train_char_tokenizer

    tokenizer = train_char_tokenizer("abcdefgh \n")
    torch.manual_seed(0)
    model = GPTForCausalLM(GPTConfig(vocab_size=tokenizer.vocab_size, d_model=16, n_heads=2,
                                     n_layers=1, d_ff=32, max_seq_len=32, dropout=0.0))
    model.tokenizer = tokenizer
    model.generation_config = {"do_sample": True, "temperature": 1.0}
    path = tmp_path_factory.mktemp("gpt") / "model"
    model.save_pretrained(path)
    return path


def _greedy_text(path: Path, prompt: str, n: int) -> str:
    import formerkit

    model = formerkit.from_pretrained(path)
    ids = torch.tensor([model.tokenizer.encode(prompt)])
    return model.tokenizer.decode(model.generate(ids, max_new_tokens=n, do_sample=False)[0])


@pytest.mark.parametrize("flags", [["--greedy"], ["--temperature", "0"]])
def test_generate_greedy_overrides_a_sampling_generation_config(gpt_dir, flags, capsys):
    expected = _greedy_text(gpt_dir, "abc", 8)
    runs = []
    for seed in ("1", "2"):
        assert cli.main(["generate", str(gpt_dir), "--prompt", "abc", "--max-new-tokens", "8",
                         "--seed", seed, "--device", "cpu", *flags]) == 0
        runs.append(capsys.readouterr().out.rstrip("\n"))
    assert runs == [expected, expected]


def test_generate_samples_by_default_when_the_config_says_so(gpt_dir, capsys):
    outs = set()
    for seed in range(4):
        assert cli.main(["generate", str(gpt_dir), "--prompt", "abc", "--max-new-tokens", "12",
                         "--seed", str(seed)]) == 0
        outs.add(capsys.readouterr().out)
    assert len(outs) > 1  # random-init model, 12 tokens: four seeds cannot all agree


def test_generate_rejects_a_negative_temperature(gpt_dir, capsys):
    assert cli.main(["generate", str(gpt_dir), "--prompt", "a", "--temperature", "-1"]) == 2
    assert "--temperature" in _error(capsys)


def test_mps_is_accepted_where_torch_has_it(capsys, gpt_dir):
    from formerkit.train.config import TrainerConfig
    from formerkit.train.distributed import resolve_device

    TrainerConfig(device="mps")  # a valid choice
    if torch.backends.mps.is_available():
        assert resolve_device("mps").type == "mps"
    else:
        with pytest.raises(ValueError, match="mps"):
            resolve_device("mps")
        assert cli.main(["generate", str(gpt_dir), "--prompt", "a", "--device", "mps"]) == 2
        assert "mps" in _error(capsys)


# ---- optional dependencies ------------------------------------------------------------------
@pytest.fixture
def without(monkeypatch):
    """Make modules look uninstalled (find_spec None, import fails)."""
    import importlib.util

    def hide(*names: str) -> None:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, **k: None if name.split(".")[0] in names
                            else real(name, *a, **k))
        for name in names:
            monkeypatch.setitem(sys.modules, name, None)

    return hide


def test_missing_sacrebleu_stops_a_bleu_recipe_before_training(without, tmp_path, capsys):
    without("sacrebleu")
    out = tmp_path / "run"
    status = cli.main(["train", "transformer-multi30k", "-o", str(out)])
    assert status == 2
    line = _error(capsys)
    assert "sacrebleu" in line and "pip install 'formerkit[bleu]'" in line
    assert not out.exists()  # nothing trained, nothing written


def test_missing_onnx_is_one_line_naming_the_extra(without, gpt_dir, tmp_path, capsys):
    without("onnx", "onnxruntime")
    assert cli.main(["export", str(gpt_dir), "-o", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'formerkit[onnx]'" in _error(capsys)


def test_a_tensorboard_run_evaluates_without_tensorboard(without, tmp_path, capsys):
    recipe = toytask.write_recipe(tmp_path / "toy.yaml", report_to=["tensorboard", "csv"],
                                  max_steps=2, eval_every=0)
    assert cli.main(["train", str(recipe), "-o", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "tensorboard").is_dir()
    capsys.readouterr()
    without("tensorboard")  # evaluating needs no logger
    assert cli.main(["evaluate", str(tmp_path / "run"), "--split", "val", "--trust-imports"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"val_loss", "val_accuracy"}


def test_missing_tensorboard_is_found_when_the_run_is_set_up(without, tmp_path, capsys):
    without("tensorboard")
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    status = cli.main(["train", str(recipe), "-o", str(tmp_path / "run"),
                       "trainer.max_steps=2", "trainer.report_to=[tensorboard]"])
    assert status == 2
    assert "pip install 'formerkit[tensorboard]'" in _error(capsys)
    assert not (tmp_path / "run" / "checkpoint").exists()


# ---- evaluate and plots ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("toyrun")
    recipe = toytask.write_recipe(tmp / "toy.yaml")
    out = tmp / "run"
    assert cli.main(["train", str(recipe), "-o", str(out), "trainer.max_steps=3",
                     "trainer.eval_every=0", "trainer.progress=false"]) == 0
    return out


def test_evaluate_names_the_splits_a_run_lacks(toy_run, monkeypatch, capsys):
    capsys.readouterr()
    original = toytask.ToySeqTask.setup

    def without_test(self, *args, **kwargs):
        setup = original(self, *args, **kwargs)
        evaluate = setup.evaluate
        setup.evaluate = lambda model, split: {} if split == "test" else evaluate(model, split)
        return setup

    monkeypatch.setattr(toytask.ToySeqTask, "setup", without_test)
    assert cli.main(["evaluate", str(toy_run), "--trust-imports"]) == 0
    captured = capsys.readouterr()
    assert set(json.loads(captured.out)) == {"val_loss", "val_accuracy"}
    assert "no test split" in captured.err
    assert cli.main(["evaluate", str(toy_run), "--split", "test", "--trust-imports"]) == 2
    assert "no test split" in _error(capsys)


def test_plot_curves_writes_into_the_run_directory(toy_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plot", "curves", str(toy_run)]) == 0
    assert Path(capsys.readouterr().out.strip()) == toy_run / "curves.png"
    assert (toy_run / "curves.png").is_file() and not (tmp_path / "curves.png").exists()
    assert cli.main(["plot", "curves", str(toy_run), "-o", "here.svg"]) == 0
    assert (tmp_path / "here.svg").is_file()


def test_plot_output_defaults_follow_the_run(tmp_path):
    from formerkit.viz import output_in_run

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "recipe.yaml").write_text("{}")
    (run / "log.jsonl").write_text("")
    assert output_in_run(None, run, "a.png") == run / "a.png"
    assert output_in_run(None, run / "model", "a.png") == run / "a.png"
    assert output_in_run(None, run / "log.jsonl", "a.png") == run / "a.png"
    assert output_in_run("x.png", run, "a.png") == Path("x.png")
