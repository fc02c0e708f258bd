"""The ``formerkit`` command line: every command's --help, one-line user errors, and the
train -> evaluate -> generate -> predict -> export flow on a toy task."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "train"))
import toytask  # noqa: E402  (registers the toy model and task)

from formerkit import cli  # noqa: E402

COMMANDS = ["train", "recipes", "evaluate", "generate", "predict", "export", "plot"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    recipe = toytask.write_recipe(tmp / "toy.yaml")
    out = tmp / "run"
    assert cli.main(["train", str(recipe), "-o", str(out), "trainer.max_steps=3",
                     "trainer.eval_every=0"]) == 0
    return out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("formerkit: error: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: formerkit {command}" in capsys.readouterr().out


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert all(command in out for command in COMMANDS)


def test_recipes_lists_names_and_descriptions(capsys):
    assert cli.main(["recipes"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    from formerkit.train.recipe import list_recipes

    assert len(lines) == len(list_recipes())
    for line, (name, description) in zip(lines, list_recipes().items()):
        assert line.startswith(name) and line.endswith(description)


def test_train_run_then_evaluate_generate_predict(run_dir, tmp_path, capsys):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # The toy recipe imports its module: trusted explicitly (docs/guarantees.md).
    assert cli.main(["evaluate", str(run_dir), "--trust-imports"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(metrics, abs=1e-6)
    assert cli.main(["evaluate", str(run_dir / "model"), "--split", "val",
                     "--trust-imports"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"val_loss", "val_accuracy"}

    assert cli.main(["generate", str(run_dir), "--prompt", "1 2 3", "--max-new-tokens",
                     "2", "--trust-imports"]) == 0
    out = capsys.readouterr().out.split()
    assert out[:3] == ["1", "2", "3"] and len(out) == 5

    bare = tmp_path / "bare"  # a model directory without a run around it
    shutil.copytree(run_dir / "model", bare)
    assert cli.main(["generate", str(bare), "--prompt", "4 5"]) == 0
    assert len(capsys.readouterr().out.split()) == 5

    inputs = tmp_path / "in.txt"
    inputs.write_text("1 2 3\n5 7 9\n")
    assert cli.main(["predict", str(run_dir), "--input", str(inputs), "--trust-imports"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    assert len(predictions) == 2 and all(isinstance(p, int) for p in predictions)
    output = tmp_path / "pred.json"
    assert cli.main(["predict", str(bare), "-i", str(inputs), "-o", str(output)]) == 0
    assert json.loads(output.read_text()) == predictions


def test_export_calls_export(run_dir, monkeypatch, capsys):
    from formerkit.export import ExportResult

    calls = []
    fake = types.ModuleType("formerkit.export")
    fake.export = lambda model_dir, format, output: calls.append(
        (Path(model_dir), format, output)) or ExportResult(Path("x.onnx"),
                                                           {Path("x.onnx"): 1e-7}, "onnxruntime")
    monkeypatch.setitem(sys.modules, "formerkit.export", fake)
    assert cli.main(["export", str(run_dir), "--format", "onnx", "-o", "x.onnx"]) == 0
    assert calls == [(run_dir / "model", "onnx", "x.onnx")]
    captured = capsys.readouterr()
    assert captured.out.strip() == "x.onnx"
    assert captured.err.strip() == "wrote x.onnx (max |onnxruntime - PyTorch| = 1.00e-07)"


def test_plot_runs_a_registered_kind(monkeypatch, capsys):
    from formerkit import viz

    monkeypatch.setitem(viz.PLOT_COMMANDS, "toy", viz.PlotCommand(
        "a toy plot", lambda p: p.add_argument("--size", type=int, default=1),
        lambda args: f"drew {args.size}"))
    assert cli.main(["plot", "toy", "--size", "3"]) == 0
    assert capsys.readouterr().out.strip() == "drew 3"


def test_default_recipe_is_used_without_a_name(tmp_path, monkeypatch):
    assert cli.DEFAULT_RECIPE == "gpt-shakespeare-char"
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    monkeypatch.setattr(cli, "DEFAULT_RECIPE", str(recipe))
    out = tmp_path / "default"
    assert cli.main(["train", "-o", str(out), "trainer.max_steps=1", "trainer.eval_every=0",
                     "trainer.eval_at_end=false"]) == 0
    assert (out / "model" / "config.json").is_file()


@pytest.mark.parametrize("argv, expected", [
    (["train", "{recipe}", "trainer.max_stepz=3"], "did you mean 'max_steps'?"),
    (["train", "{recipe}", "model.d_modle=8"], "did you mean 'd_model'?"),
    (["train", "{recipe}", "trainer.lr=fast"], "trainer.lr must be a number, got 'fast'"),
    (["train", "{recipe}", "trainer.batch_size=7", "trainer.grad_accum=2"],
     "batch_size=7 must be divisible by grad_accum=2"),
    (["train", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
    (["train", "{tmp}/missing.yaml"], "missing.yaml does not exist"),
    (["evaluate", "{tmp}/nowhere"], "nowhere does not exist"),
    (["evaluate", "{tmp}"], "neither a run directory"),
    (["predict", "{tmp}", "--input", "{tmp}/none.txt"], "none.txt does not exist"),
    (["generate", "{tmp}"], "the following arguments are required: --prompt"),
    (["bogus"], "invalid choice: 'bogus'"),
])
def test_user_errors_are_one_line_without_traceback(argv, expected, tmp_path, capsys):
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    argv = [a.format(recipe=recipe, tmp=tmp_path) for a in argv]
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    assert code == 2
    assert expected in _error_line(capsys)


def test_non_finite_loss_is_a_one_line_error(tmp_path, capsys):
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    code = cli.main(["train", str(recipe), "-o", str(tmp_path / "nan"), "data.nan_at=-2"])
    assert code == 0  # -2 never matches: a normal run
    from formerkit.train.batches import GlobalBatches

    first = GlobalBatches(64, 8, seed=0).epoch(0)[0][0]
    capsys.readouterr()
    code = cli.main(["train", str(recipe), "-o", str(tmp_path / "nan2"), f"data.nan_at={first}"])
    assert code == 2 and "non-finite loss (nan) at step 1" in _error_line(capsys)


def test_debug_shows_the_traceback(tmp_path):
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    with pytest.raises(ValueError, match="max_stepz"):
        cli.main(["--debug", "train", str(recipe), "trainer.max_stepz=3"])


def test_python_dash_m_formerkit():
    result = subprocess.run([sys.executable, "-m", "formerkit", "train", "no-such-recipe"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith("formerkit: error: unknown recipe 'no-such-recipe'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_listing_recipes_does_not_import_torch():
    code = ("import sys; from formerkit.cli import main; main(['recipes']); "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    recipe = toytask.write_recipe(tmp_path / "toy.yaml")
    assert cli.main(["train", str(recipe), "-o", str(tmp_path / "r"),
                     "trainer.device=cuda"]) == 2
    assert "no CUDA device is available" in _error_line(capsys)


def _run_importing(run_dir: Path, target: Path, module: str) -> Path:
    """A copy of ``run_dir`` whose recipe also imports ``module``."""
    import yaml

    shutil.copytree(run_dir, target)
    recipe = yaml.safe_load((target / "recipe.yaml").read_text())
    recipe["imports"] = [*recipe["imports"], module]
    (target / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return target


def _marker_module(folder: Path, name: str) -> Path:
    """A module that leaves a file behind when imported (i.e. when its code runs)."""
    marker = folder / f"{name}.ran"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return marker


@pytest.mark.parametrize("command", ["evaluate", "generate", "predict"])
def test_a_run_directorys_imports_run_only_with_trust_imports(command, run_dir, tmp_path,
                                                               capsys, monkeypatch):
    name = f"fk_marker_{command}"
    marker = _marker_module(tmp_path / "lib", name)
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    run = _run_importing(run_dir, tmp_path / "run", name)
    inputs = tmp_path / "in.txt"
    inputs.write_text("1 2 3\n")
    extra = {"evaluate": [], "generate": ["--prompt", "1 2"], "predict": ["-i", str(inputs)]}
    argv = [command, str(run), *extra[command]]
    assert cli.main(argv) == 2
    line = _error_line(capsys)
    assert f"imports Python modules (toytask, {name})" in line and "--trust-imports" in line
    assert not marker.exists() and name not in sys.modules
    assert cli.main(argv + ["--trust-imports"]) == 0
    assert marker.exists()
    sys.modules.pop(name, None)


@pytest.mark.slow  # a CLI subprocess
def test_the_current_folder_is_not_on_the_import_path(run_dir, tmp_path):
    cwd = tmp_path / "cwd"
    marker = _marker_module(cwd, "fk_cwd_module")
    run = _run_importing(run_dir, tmp_path / "run", "fk_cwd_module")
    result = subprocess.run([sys.executable, "-m", "formerkit", "generate", str(run),
                             "--prompt", "1 2", "--trust-imports"], cwd=cwd,
                            env=toytask.subprocess_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr
    assert "No module named 'fk_cwd_module'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not marker.exists()
