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
HF_MODEL_TYPES = {"gpt2": "gpt", "bert": "bert", "marian": "transformer", "llama": "llama",
                  "qwen2": "llama", "mistral": "llama"}
# The task that generates/predicts for a bare model directory (no recipe.yaml beside it), for
# formerkit's own families; other tasks can claim a model by listing it in `Task.models`.
DEFAULT_TASKS = {"gpt": "causal_lm", "llama": "causal_lm", "transformer": "seq2seq", "har": "har",
                 "transformer-forecaster": "forecast", "itransformer": "forecast",
                 "patchtst": "forecast", "crossformer": "forecast"}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other formerkit error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"formerkit: error: {message} (see '{self.prog} --help')\n")


def _user_errors() -> tuple[type[BaseException], ...]:
    from formerkit.train.errors import TrainingError

    return (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            PermissionError, FileExistsError, KeyError, ModuleNotFoundError, TrainingError)


def _message(err: BaseException) -> str:
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(text).split()) or type(err).__name__


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


# ---- run and model directories ---------------------------------------------------------------
def resolve_dir(path: str | Path) -> tuple[Path | None, Path]:
    """``(run_dir or None, model_dir)`` for a run directory (holding ``recipe.yaml``) or a
    model directory (holding ``config.json``; its parent is the run if it holds a recipe), or
    a llama.cpp ``.gguf`` file (a model on its own)."""
    path = Path(path)
    if path.suffix.lower() == ".gguf" and not path.is_dir():
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        return None, path
    if not path.is_dir():
        raise FileNotFoundError(f"directory {path} does not exist")
    if (path / "recipe.yaml").is_file():
        return path, path / "model"
    if (path / "config.json").is_file():
        run = path.parent if (path.parent / "recipe.yaml").is_file() else None
        return run, path
    raise FileNotFoundError(f"{path} is neither a run directory (with recipe.yaml) nor a model "
                            "directory (with config.json)")


def _is_gguf(path: Path) -> bool:
    return path.suffix.lower() == ".gguf" and path.is_file()


def _check_model_dir(model_dir: Path) -> Path:
    if not (model_dir / "config.json").is_file() and not _is_gguf(model_dir):
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
    raw = {"model_type": "llama"} if _is_gguf(model_dir) else \
        json.loads((model_dir / "config.json").read_text())
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
    from formerkit.train.recipe import list_recipes, recipe_path

    if args.action == "show":
        print(recipe_path(args.name).read_text(), end="")
        return 0
    if args.action == "copy":
        source, target = recipe_path(args.name), Path(args.file)
        if target.is_dir():
            target = target / source.name
        if target.exists() and not args.force:
            raise FileExistsError(f"{target} already exists; pass --force to overwrite it")
        target.write_text(source.read_text())
        print(f"wrote {target}; train it with: formerkit train {target}", file=sys.stderr)
        return 0
    recipes = list_recipes()
    width = max((len(name) for name in recipes), default=0)
    for name, description in recipes.items():
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from formerkit.models.base import load_state_dict_into, load_weights
    from formerkit.tasks.common import EmptySplitError
    from formerkit.train.distributed import resolve_device
    from formerkit.train.progress import evaluation_bar
    from formerkit.train.recipe import load_run_recipe

    if args.reference or args.input:
        return _score_files(args)
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
    splits = args.split or list(DEFAULT_SPLITS)
    metrics: dict[str, float] = {}
    missing: dict[str, str] = {}
    why: dict[str, str] = {}  # the setting that emptied a split
    with torch.no_grad():
        for split in splits:
            try:
                with evaluation_bar(model, split):
                    values = setup.evaluate(model, split)
            except (KeyError, EmptySplitError) as err:  # a split the task lacks, or empty
                values, missing[split] = None, _message(err)
                if isinstance(err, EmptySplitError):
                    why[split] = f" ({err.setting})"
            if not values:
                missing.setdefault(split, "the task returned no metrics")
                continue
            metrics.update({f"{split}_{k}": float(v) for k, v in values.items()})
    if missing and (args.split or not metrics):
        raise ValueError(f"{run} has no {', '.join(missing)} split to evaluate "
                         f"({'; '.join(f'{k}: {v}' for k, v in missing.items())})")
    for split in missing:
        print(f"formerkit: note: {run} has no {split} split{why.get(split, '')}; evaluated "
              f"{', '.join(s for s in splits if s not in missing)} only", file=sys.stderr)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from formerkit.train.averaging import average_run

    run, _ = resolve_dir(args.dir)
    if run is None:
        raise ValueError(f"{args.dir} is not a run directory (with recipe.yaml): averaging "
                         "reads the run's checkpoint/ folder")
    checkpoints = average_run(run, Path(args.output), last=args.last)
    print(f"averaged {', '.join(p.name for p in checkpoints)} of {run}; evaluate it with: "
          f"formerkit evaluate {args.output}", file=sys.stderr)
    print(args.output)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    task, model_dir = task_for(args.dir, "generate", trust_imports=args.trust_imports)
    names = ("max_new_tokens", "temperature", "top_k", "top_p", "seed", "num_beams",
             "repetition_penalty", "chat", "system")
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if args.temperature is not None and args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if args.greedy or args.temperature == 0:  # as llama.cpp and vLLM: temperature 0 is greedy
        options.pop("temperature", None)
        options["do_sample"] = False
    elif args.sample:
        options["do_sample"] = True
    if args.device != "auto":  # the built-in tasks pick `auto` themselves
        options["device"] = args.device
    print(task.generate(model_dir, args.prompt, **options))
    return 0


def _score_files(args: argparse.Namespace) -> int:
    """``evaluate DIR --input SRC --reference REF``: translate SRC, score it against REF."""
    if not (args.reference and args.input):
        raise ValueError("scoring a file needs both --input (sources) and --reference")
    for name in ("input", "reference"):
        if not Path(getattr(args, name)).is_file():
            raise FileNotFoundError(f"--{name} file {getattr(args, name)} does not exist")
    task, model_dir = task_for(args.dir, "score_file")
    options = {"device": args.device} if args.device != "auto" else {}
    for name in ("num_beams", "length_penalty"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    print(json.dumps(task.score_file(model_dir, Path(args.input), Path(args.reference),
                                     **options), indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    input_path = Path(args.input)
    if not input_path.is_file():
        raise FileNotFoundError(f"input file {input_path} does not exist")
    task, model_dir = task_for(args.dir, "predict", trust_imports=args.trust_imports)
    names = ("num_beams", "length_penalty", "batch_size")
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    result = task.predict(model_dir, input_path, **options)
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
    from formerkit.export import export

    _, model_dir = resolve_dir(args.dir)
    result = export(_check_model_dir(model_dir), format=args.format, output=args.output)
    for line in result.summary():
        print(line, file=sys.stderr)
    print(result.path)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from formerkit.embeddings import load_sentence_encoder, write_embeddings

    input_path = Path(args.input)
    if not input_path.is_file():
        raise FileNotFoundError(f"input file {input_path} does not exist")
    texts = [line.rstrip("\n") for line in input_path.read_text(encoding="utf-8").splitlines()]
    if not texts:
        raise ValueError(f"input file {input_path} has no lines to embed")
    _, model_dir = resolve_dir(args.dir)
    encoder = load_sentence_encoder(_check_model_dir(model_dir))
    vectors = encoder.encode(texts, batch_size=args.batch_size)
    print(write_embeddings(vectors, args.output), file=sys.stderr)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from formerkit.viz.explorer_runs import write_directory_page

    print(write_directory_page(args.dir, args.output, text=args.text, pair=args.pair,
                               target=args.target, input_path=args.input, window=args.window,
                               split=args.split, top_k=args.top_k,
                               max_new_tokens=args.max_new_tokens))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from formerkit.viz import PLOT_COMMANDS

    result = PLOT_COMMANDS[args.kind].run(args)
    if result is not None:
        print(result)
    return 0


# ---- parser --------------------------------------------------------------------------------
DEFAULT_SPLITS = ("val", "test")
DEVICE_CHOICES = ["auto", "cpu", "cuda", "mps"]


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to options whose help does not state its default, and keeps
    the line breaks of texts that have them (the epilogs' lists and examples)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or \
                action.option_strings == [] or isinstance(action, argparse._VersionAction):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        return f"{text} (default: {shown})"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def version() -> str:
    """The installed formerkit version (read without importing torch)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("formerkit")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _train_epilog() -> str:
    """Recipes and trainer keys for ``train --help`` (read from the recipe files and the
    ``TrainerConfig`` dataclass, so the list cannot go stale)."""
    import dataclasses

    from formerkit.train.config import TrainerConfig
    from formerkit.train.recipe import list_recipes

    recipes = list_recipes()
    width = max((len(name) for name in recipes), default=0)
    lines = ["recipes (formerkit recipes show NAME prints one):"]
    lines += [f"  {name:<{width}}  {_short(text, 78 - width)}" for name, text in recipes.items()]
    lines += ["", "trainer keys (trainer.KEY=VALUE; model.*, data.* and task.* keys are the "
              "recipe's own):"]
    items = [f"{f.name}={_default_text(f)}" for f in dataclasses.fields(TrainerConfig)]
    line = " "
    for item in items:
        if len(line) + len(item) > 92:
            lines.append(line.rstrip())
            line = " "
        line += f" {item}"
    lines += [line.rstrip(), "", "examples:", "  formerkit train", "  formerkit train "
              "gpt-shakespeare-char trainer.max_steps=200 model.n_layers=2 -o runs/small",
              "  torchrun --nproc-per-node 2 -m formerkit train bert-sst2"]
    return "\n".join(lines)


def _default_text(field: Any) -> str:
    import dataclasses

    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"[{','.join(map(str, value))}]" if isinstance(value, list) else str(value)


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:max(width - 3, 10)].rstrip() + "..."


def build_parser(with_plots: bool = True, command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``with_plots`` imports ``formerkit.viz`` to list plot kinds, and
    ``command == "train"`` reads the recipes and trainer keys for ``train --help``."""
    parser = _Parser(prog="formerkit", description="Train, evaluate and use Transformer "
                     "models described by recipes.", formatter_class=_HelpFormatter,
                     epilog="Run 'formerkit COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"formerkit {version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=_HelpFormatter, **kwargs)

    p = add("train", help="train a recipe (resumes when DIR holds a checkpoint)",
            description="Train RECIPE (a shipped recipe name or a YAML path; default "
            f"{DEFAULT_RECIPE}) with section.key=value overrides, e.g. "
            "trainer.max_steps=200 model.n_layers=4. Running again with the same "
            "--output-dir resumes from the last good checkpoint.",
            epilog=_train_epilog() if command == "train" else None)
    p.add_argument("args", nargs="*", metavar="[RECIPE] [KEY=VALUE ...]")
    p.add_argument("--output-dir", "-o", default=None,
                   help="run directory (default: runs/RECIPE)")
    p.add_argument("--restart", action="store_true",
                   help="start afresh although DIR holds an earlier run (its files are moved "
                   "to DIR/previous/)")
    p.add_argument("--resume-with-changes", action="store_true",
                   help="resume although the settings differ from the checkpoint's")
    p.set_defaults(func=cmd_train)

    p = add("recipes", help="list, show or copy the shipped recipes",
            description="List the recipes shipped with formerkit; 'show NAME' (or just NAME) "
            "prints one, 'copy NAME FILE' writes it to FILE to edit and train.",
            epilog="examples:\n  formerkit recipes show gpt-shakespeare-char\n"
            "  formerkit recipes copy gpt-shakespeare-char my.yaml && formerkit train my.yaml")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser("show", help="print a recipe's YAML",
                              description="Print a shipped recipe's YAML.")
    show.add_argument("name", metavar="NAME", help="recipe name (see 'formerkit recipes')")
    copy = actions.add_parser("copy", help="copy a recipe to a file to edit",
                              description="Write a shipped recipe to FILE (or into a folder).")
    copy.add_argument("name", metavar="NAME", help="recipe name")
    copy.add_argument("file", metavar="FILE", help="target .yaml file or folder")
    copy.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_recipes, action=None)

    p = add("evaluate", help="evaluate a trained run",
            description="Rebuild a run's task from DIR/recipe.yaml, load DIR/model and print "
            "its metrics as JSON. Splits the run lacks are named on stderr (an error when "
            "asked for with --split).")
    p.add_argument("dir", metavar="DIR", help="run directory or its model/ directory")
    p.add_argument("--split", nargs="+", default=None, metavar="SPLIT",
                   help="splits to evaluate (default: val test, those the run has)")
    p.add_argument("--input", "-i", default=None,
                   help="translation: a source file to translate and score (with --reference)")
    p.add_argument("--reference", default=None,
                   help="translation: reference translations, one per line of --input; "
                   "prints sacreBLEU scores and signatures")
    p.add_argument("--num-beams", type=int, default=None,
                   help="translation: beam size (default: the saved generation config)")
    p.add_argument("--length-penalty", type=float, default=None,
                   help="translation: beam length penalty (default: generation config)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="where to run (auto: CUDA when available, else CPU)")
    _add_trust_imports(p)
    p.set_defaults(func=cmd_evaluate)

    p = add("average", help="average a run's last checkpoints into a new run",
            description="Write a new run directory OUTPUT whose model is the element-wise "
            "mean of the weights of DIR's last checkpoints (checkpoint averaging); DIR is "
            "left as it is. Evaluate, predict or export OUTPUT like any run.",
            epilog="example:\n  formerkit average runs/transformer-multi30k --last 5 "
            "-o runs/transformer-multi30k-avg5")
    p.add_argument("dir", metavar="DIR", help="run directory")
    p.add_argument("--last", type=int, default=5,
                   help="how many of the newest checkpoints to average (needs "
                   "trainer.keep_checkpoints >= it)")
    p.add_argument("--output", "-o", required=True, help="new run directory to write")
    p.set_defaults(func=cmd_average)

    p = add("generate", help="generate text from a trained model",
            description="Generate from a run or model directory with its task (GPT: continue "
            "the prompt; seq2seq: translate it). Unset options come from the model's "
            "generation_config.json.",
            epilog="examples:\n  formerkit generate runs/gpt-shakespeare-char --prompt ROMEO: "
            "--greedy\n  formerkit generate runs/gpt-shakespeare-char --prompt ROMEO: "
            "--temperature 0.8 --top-k 40 --seed 1")
    p.add_argument("dir", metavar="DIR", help="run directory or model directory")
    p.add_argument("--prompt", required=True, help="input text (required)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens to generate (default: the task's, 200 for GPT)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true",
                      help="pick the most likely token each step (also: --temperature 0)")
    mode.add_argument("--sample", action="store_true",
                      help="sample even if the generation config says do_sample=false")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature; 0 means greedy (default: generation config)")
    p.add_argument("--top-k", type=int, default=None,
                   help="sample among the k most likely tokens (default: generation config)")
    p.add_argument("--top-p", type=float, default=None,
                   help="nucleus sampling: smallest set of tokens with probability >= p "
                   "(default: generation config, else off)")
    p.add_argument("--repetition-penalty", type=float, default=None,
                   help="> 1 discourages repeating tokens (CTRL's penalty) (default: 1.0, off)")
    p.add_argument("--num-beams", type=int, default=None, help="beam search with this many "
                   "beams, no sampling (default: generation config, else 1)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed for sampling (default: none, a fresh draw)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="where to run (auto: CUDA when available, else CPU)")
    p.add_argument("--chat", action="store_true", default=None,
                   help="send the prompt as a user turn through the model's chat template "
                        "(tokenizer_config.json) and print the reply alone")
    p.add_argument("--system", default=None, help="with --chat: a system message first")
    _add_trust_imports(p)
    p.set_defaults(func=cmd_generate)

    p = add("predict", help="predict for your own input file",
            description="Run a trained model's task on a file (labels, forecasts, "
            "activity labels).")
    p.add_argument("dir", metavar="DIR", help="run directory or model directory")
    p.add_argument("--input", "-i", required=True, help="input file")
    p.add_argument("--output", "-o", default=None, help="write here instead of stdout")
    p.add_argument("--num-beams", type=int, default=None,
                   help="translation: beam size (default: the saved generation config)")
    p.add_argument("--length-penalty", type=float, default=None,
                   help="translation: beam length penalty (default: generation config)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="translation: sentences per batch (default: 64)")
    _add_trust_imports(p)
    p.set_defaults(func=cmd_predict)

    p = add("export", help="export a trained model (ONNX, HuggingFace)",
            description="Export a run's or model directory's model and check it against "
            "PyTorch: onnx runs the file in onnxruntime, hf loads the directory with "
            "transformers (when installed); the largest difference is printed.",
            epilog="needs: pip install 'formerkit[onnx]' for --format onnx")
    p.add_argument("dir", metavar="DIR", help="run directory or model directory")
    p.add_argument("--format", default="onnx", choices=["onnx", "hf"],
                   help="onnx: model.onnx (encoder_model.onnx + decoder_model.onnx for seq2seq); "
                   "hf: a HuggingFace directory")
    p.add_argument("--output", "-o", default=None,
                   help="output file (onnx), folder (seq2seq onnx) or directory (hf) "
                   "(default: MODEL/model.onnx, MODEL/{encoder,decoder}_model.onnx, or "
                   "MODEL-hf beside MODEL, the model directory)")
    p.set_defaults(func=cmd_export)

    p = add("embed", help="sentence embeddings of a text file, one per line",
            description="Embed every line of a UTF-8 file with the encoder in DIR "
            "(a sentence-transformers directory uses its pooling and "
            "normalisation; another model directory mean-pools its token states).")
    p.add_argument("dir", metavar="DIR", help="sentence-transformers, model or run directory")
    p.add_argument("--input", "-i", required=True, help="text file, one sentence per line")
    p.add_argument("--output", "-o", required=True, help="output .npy (or .txt) file")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (32)")
    p.set_defaults(func=cmd_embed)

    p = add("explain", help="write an attention explorer page (one HTML file)",
            description="Write one self-contained HTML page showing, per layer and "
            "head, what the model in DIR attends to for one input, and what it "
            "predicts. Text models read --text (and --pair, --target); time-series "
            "models read --input FILE or --window N of the run's data.")
    p.add_argument("dir", metavar="DIR", help="run directory or model directory")
    p.add_argument("--text", help="input text (source sentence for seq2seq)")
    p.add_argument("--pair", help="second segment of a sentence-pair model (BERT)")
    p.add_argument("--target", help="seq2seq: target fed to the decoder (default: greedy)")
    p.add_argument("--input", "-i", help="time series: CSV as `formerkit predict` reads it")
    p.add_argument("--window", type=int, help="time series: window of the run's data (0)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="split --window picks from (test)")
    p.add_argument("--top-k", type=int, default=5, help="entries per prediction (5)")
    p.add_argument("--max-new-tokens", type=int, default=40, help="seq2seq translation limit")
    p.add_argument("--output", "-o", default="explain.html",
                   help="output .html file (explain.html)")
    p.set_defaults(func=cmd_explain)

    p = add("plot", help="draw a figure (PNG/SVG)",
            description="Draw a figure; each KIND has its own options. Figures of a run go "
            "into its directory unless --output says otherwise.")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    if with_plots:
        from formerkit.viz import PLOT_COMMANDS

        for kind, command_ in sorted(PLOT_COMMANDS.items()):
            kp = kinds.add_parser(kind, help=command_.help, description=command_.help)
            command_.add_arguments(kp)
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
    if command == "recipes":  # `formerkit recipes NAME` shows the recipe
        i = argv.index("recipes")
        if len(argv) > i + 1 and not argv[i + 1].startswith("-") and \
                argv[i + 1] not in ("show", "copy"):
            argv.insert(i + 1, "show")
    try:
        parser = build_parser(with_plots=command == "plot", command=command)
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
