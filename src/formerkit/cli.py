"""The ``formerkit`` command line: train, evaluate, generate, predict, recipes, export, plot.

Every user error (unknown recipe, missing file, bad key or value, invalid config) prints one
line ``formerkit: error: ...`` to stderr and exits with status 2; ``--debug`` shows the
traceback instead. Heavy modules (torch, the models) are imported only by the command that
needs them, so ``formerkit --help`` and ``formerkit recipes`` start fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_RECIPE = "gpt-shakespeare-char"
# Bare HuggingFace model directories carry no formerkit model name: map their model_type.
HF_MODEL_TYPES = {"gpt2": "gpt", "bert": "bert", "marian": "transformer"}
# The task that generates/predicts for a bare model directory (no recipe.yaml beside it), for
# formerkit's own families; other tasks can claim a model by listing it in `Task.models`.
DEFAULT_TASKS = {"gpt": "causal_lm", "transformer": "seq2seq", "har": "har",
                 "transformer-forecaster": "forecast", "itransformer": "forecast",
                 "patchtst": "forecast", "crossformer": "forecast"}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other formerkit error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"formerkit: error: {message} (see '{self.prog} --help')\n")


def _user_errors() -> tuple[type[BaseException], ...]:
    from formerkit.train.errors import TrainingError

    return (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            PermissionError, KeyError, ModuleNotFoundError, TrainingError)


def _message(err: BaseException) -> str:
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(text).split()) or type(err).__name__


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


# ---- run and model directories ---------------------------------------------------------------
def resolve_dir(path: str | Path) -> tuple[Path | None, Path]:
    """``(run_dir or None, model_dir)`` for a run directory (holding ``recipe.yaml``) or a
    model directory (holding ``config.json``; its parent is the run if it holds a recipe)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"directory {path} does not exist")
    if (path / "recipe.yaml").is_file():
        return path, path / "model"
    if (path / "config.json").is_file():
        run = path.parent if (path.parent / "recipe.yaml").is_file() else None
        return run, path
    raise FileNotFoundError(f"{path} is neither a run directory (with recipe.yaml) nor a model "
                            "directory (with config.json)")


def _check_model_dir(model_dir: Path) -> Path:
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} holds no saved model (config.json); has the run "
                                "finished?")
    return model_dir


def task_for(path: str | Path, hook: str, *, trust_imports: bool = False) -> tuple[Any, Path]:
    """The task that serves a run or model directory, and the model directory.

    A run uses its recipe's task. A bare model directory uses, in order: a task that lists the
    model's registry name in its ``models`` attribute, a task named like the model, or the
    built-in ``DEFAULT_TASKS`` entry (``gpt`` -> ``causal_lm``); a HuggingFace directory's
    ``model_type`` is mapped first (``gpt2`` -> ``gpt``). The task must implement ``hook``.
    A run's recipe ``imports`` are imported only with ``trust_imports``.
    """
    from formerkit.tasks.base import Task, get_task, list_tasks

    run, model_dir = resolve_dir(path)
    _check_model_dir(model_dir)
    if run is not None:
        from formerkit.train.recipe import load_run_recipe

        return get_task(load_run_recipe(run, trust_imports=trust_imports).task_name), model_dir
    raw = json.loads((model_dir / "config.json").read_text())
    model_name = (raw.get("formerkit") or {}).get("model") or \
        HF_MODEL_TYPES.get(raw.get("model_type", ""), raw.get("model_type", ""))
    names = list_tasks()
    candidates = [n for n in names if model_name in getattr(get_task(n), "models", ())]
    candidates += [n for n in (model_name, DEFAULT_TASKS.get(model_name)) if n in names]
    for name in candidates:
        task = get_task(name)
        if getattr(type(task), hook) is not getattr(Task, hook):
            return task, model_dir
    raise ValueError(f"no task can {hook} with model {model_name!r} from {model_dir}; run "
                     "it from a run directory whose recipe names the task")


# ---- commands ------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from formerkit.train.api import run_recipe
    from formerkit.train.recipe import load_recipe

    items = list(args.args)
    recipe = items.pop(0) if items and "=" not in items[0] else DEFAULT_RECIPE
    metrics = run_recipe(load_recipe(recipe, items), args.output_dir, restart=args.restart,
                         resume_with_changes=args.resume_with_changes)
    if _is_main_process():
        print(json.dumps(metrics, indent=2))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from formerkit.train.recipe import list_recipes

    recipes = list_recipes()
    width = max((len(name) for name in recipes), default=0)
    for name, description in recipes.items():
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from formerkit.models.base import load_state_dict_into, load_weights
    from formerkit.train.distributed import resolve_device
    from formerkit.train.recipe import load_run_recipe

    run, model_dir = resolve_dir(args.dir)
    if run is None:
        raise ValueError(f"{args.dir} has no recipe.yaml beside it: evaluate needs a run "
                         "directory to know the data and metrics")
    recipe = load_run_recipe(run, trust_imports=args.trust_imports)
    setup = recipe.setup()
    model = setup.model
    load_state_dict_into(model, load_weights(_check_model_dir(model_dir)), source=model_dir)
    device = resolve_device(args.device)
    model.to(device).eval()
    metrics: dict[str, float] = {}
    with torch.no_grad():
        for split in args.split:
            values = setup.evaluate(model, split) or {}
            metrics.update({f"{split}_{k}": float(v) for k, v in values.items()})
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    task, model_dir = task_for(args.dir, "generate", trust_imports=args.trust_imports)
    names = ("max_new_tokens", "temperature", "top_k", "top_p", "seed", "num_beams")
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    print(task.generate(model_dir, args.prompt, **options))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    input_path = Path(args.input)
    if not input_path.is_file():
        raise FileNotFoundError(f"input file {input_path} does not exist")
    task, model_dir = task_for(args.dir, "predict", trust_imports=args.trust_imports)
    result = task.predict(model_dir, input_path)
    text = result if isinstance(result, str) else json.dumps(result, indent=2, default=_plain)
    if args.output:
        Path(args.output).write_text(text if text.endswith("\n") else text + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def cmd_export(args: argparse.Namespace) -> int:
    from formerkit.export import export_model

    _, model_dir = resolve_dir(args.dir)
    out = export_model(_check_model_dir(model_dir), format=args.format, output=args.output)
    print(out)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from formerkit.viz import PLOT_COMMANDS

    result = PLOT_COMMANDS[args.kind].run(args)
    if result is not None:
        print(result)
    return 0


# ---- parser --------------------------------------------------------------------------------
def build_parser(with_plots: bool = True) -> argparse.ArgumentParser:
    """The argument parser; ``with_plots`` imports ``formerkit.viz`` to list plot kinds."""
    parser = _Parser(prog="formerkit", description="Train, evaluate and use Transformer "
                     "models described by recipes.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a recipe (resumes when DIR holds a checkpoint)",
                       description="Train RECIPE (a shipped recipe name or a YAML path; default "
                       f"{DEFAULT_RECIPE}) with section.key=value overrides, e.g. "
                       "trainer.max_steps=200 model.n_layers=4. Running again with the same "
                       "--output-dir resumes from the last good checkpoint.")
    p.add_argument("args", nargs="*", metavar="[RECIPE] [KEY=VALUE ...]")
    p.add_argument("--output-dir", "-o", default=None,
                   help="run directory (default runs/RECIPE)")
    p.add_argument("--restart", action="store_true",
                   help="start afresh although DIR holds an earlier run (its files are moved "
                   "to DIR/previous/)")
    p.add_argument("--resume-with-changes", action="store_true",
                   help="resume although the settings differ from the checkpoint's")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("recipes", help="list the shipped recipes",
                       description="List the recipes shipped with formerkit.")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("evaluate", help="evaluate a trained run",
                       description="Rebuild a run's task from DIR/recipe.yaml, load DIR/model "
                       "and print its metrics as JSON.")
    p.add_argument("dir", metavar="DIR", help="run directory or its model/ directory")
    p.add_argument("--split", nargs="+", default=["val", "test"], help="splits (val test)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _add_trust_imports(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("generate", help="generate text from a trained model",
                       description="Generate from a run or model directory with its task.")
    p.add_argument("dir", metavar="DIR", help="run directory or model directory")
    p.add_argument("--prompt", required=True, help="input text")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num-beams", type=int, default=None)
    _add_trust_imports(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("predict", help="predict for your own input file",
                       description="Run a trained model's task on a file (labels, forecasts, "
                       "activity labels).")
    p.add_argument("dir", metavar="DIR", help="run directory or model directory")
    p.add_argument("--input", "-i", required=True, help="input file")
    p.add_argument("--output", "-o", default=None, help="write here instead of stdout")
    _add_trust_imports(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a trained model (ONNX)",
                       description="Export a run's or model directory's model.")
    p.add_argument("dir", metavar="DIR", help="run directory or model directory")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--output", "-o", default=None, help="output file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plot", help="draw a figure (PNG/SVG)",
                       description="Draw a figure; each KIND has its own options.")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    if with_plots:
        from formerkit.viz import PLOT_COMMANDS

        for kind, command in sorted(PLOT_COMMANDS.items()):
            kp = kinds.add_parser(kind, help=command.help, description=command.help)
            command.add_arguments(kp)
    p.set_defaults(func=cmd_plot)
    return parser


def _add_trust_imports(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-imports", action="store_true",
                   help="import the modules the run's recipe.yaml lists under imports: "
                   "(they run code; only for directories you trust)")


def _untrusted_folder_off_path() -> None:
    """Drop the current folder that ``python -m`` puts first on ``sys.path``, so a module
    named in a recipe's ``imports`` is never picked up from wherever the command runs
    (``PYTHONPATH=.`` still adds it on purpose)."""
    if sys.path and sys.path[0] in ("", os.getcwd()) and not getattr(sys.flags, "safe_path", 0):
        sys.path.pop(0)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    if argv is None:  # a program run, not a call from Python
        _untrusted_folder_off_path()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(with_plots=command == "plot")
        args, extra = parser.parse_known_args(argv)
        if extra:  # overrides after an option: `train RECIPE -o DIR key=value`
            if args.command != "train" or any(item.startswith("-") for item in extra):
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            args.args = list(args.args) + extra
        return args.func(args)
    except KeyboardInterrupt:
        print("formerkit: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug or not isinstance(err, _user_errors()):
            raise
        print(f"formerkit: error: {_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
