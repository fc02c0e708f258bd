"""Plots (matplotlib, PNG/SVG): attention maps, positional encodings, training curves, MLM
masking, forecasts and confusion matrices. Each plot is a Python function and a
``formerkit plot KIND`` command registered in ``PLOT_COMMANDS``.

This package holds the registry and the helpers shared by the plot modules; each topic lives in
its own module (``attention``, ``positions``, ``curves``, ``masking``, ``confusion``,
``forecast``), all imported here so that every kind registers on ``import formerkit.viz``."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

FIGURE_SUFFIXES = (".png", ".svg")


@dataclasses.dataclass(frozen=True)
class PlotCommand:
    """One ``formerkit plot KIND``: ``add_arguments(parser)`` declares its options and
    ``run(args)`` draws the figure and returns the written path."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], object]


PLOT_COMMANDS: dict[str, PlotCommand] = {}


def register_plot(kind: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]
                  ) -> Callable[[Callable[[argparse.Namespace], object]], Callable]:
    """Decorator registering ``run(args)`` as ``formerkit plot KIND``."""

    def decorator(run: Callable[[argparse.Namespace], object]) -> Callable:
        PLOT_COMMANDS[kind] = PlotCommand(help, add_arguments, run)
        return run

    return decorator


def new_figure(*args, **kwargs):
    """A matplotlib figure on the non-interactive Agg backend (works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: str | Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG or SVG (chosen by the suffix of ``path``) and close it.

    Args:
        fig: a matplotlib figure.
        path: output file ending in ``.png`` or ``.svg``; parent folders are created.
        dpi: resolution of PNG output.

    Returns:
        The written path.
    """
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"output path must end in one of {FIGURE_SUFFIXES}, got {str(path)!r}")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _add_output_argument(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("-o", "--output", default=default,
                        help=f"output file, .png or .svg (default: {default})")


def _add_run_output_argument(parser: argparse.ArgumentParser, name: str, where: str) -> None:
    parser.add_argument("-o", "--output", default=None,
                        help=f"output file, .png or .svg (default: {where}/{name})")


def output_in_run(output: str | Path | None, path: str | Path, name: str) -> Path:
    """``output``, else ``name`` inside the run directory ``path`` stands for: the folder
    itself, or the folder holding a given file (``log.jsonl``) or model directory."""
    if output is not None:
        return Path(output)
    path = Path(path)
    if path.is_file():
        path = path.parent
    elif path.name == "model" and (path.parent / "recipe.yaml").is_file():
        path = path.parent
    return path / name


def _str_list(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _int_list(text: str | None) -> list[int] | None:
    """``"0,2"`` -> ``[0, 2]`` (CLI lists of layers/heads); ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def _chosen_indices(name: str, chosen: Sequence[int] | None, limit: int) -> list[int]:
    """The layers or heads a plot draws: ``chosen`` (default all of ``range(limit)``), each
    checked to be an index below ``limit``."""
    chosen = list(range(limit)) if chosen is None else list(chosen)
    if not chosen or any(not 0 <= i < limit for i in chosen):
        raise ValueError(f"{name} must be indices in [0, {limit}), got {chosen}")
    return chosen


def display_token(token: str) -> str:
    """A readable axis label for a tokenizer piece: byte-level BPE's ``Ġ`` (space) and ``Ċ``
    (newline) and raw whitespace become visible symbols."""
    token = token.replace("Ġ", "␣").replace("Ċ", "↵").replace("▁", "␣")
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "→") or "∅"


def load_model(path: str | Path):
    """Load a model directory, or the ``model/`` folder of a training run directory."""
    path = Path(path)
    if (path / "model" / "config.json").is_file():
        path = path / "model"
    from formerkit.models.auto import from_pretrained

    return from_pretrained(path)


def _tokens(tokenizer, ids: Sequence[int]) -> list[str]:
    return [tokenizer.id_to_token(int(i)) or str(int(i)) for i in ids]


# Submodules import the helpers above, so they are imported last; each registers its kinds.
from formerkit.viz.attention import (  # noqa: E402
    attention_maps,
    is_seq2seq,
    plot_attention,
    plot_attention_for_text,
)
from formerkit.viz.confusion import plot_confusion  # noqa: E402
from formerkit.viz.curves import plot_curves, read_log  # noqa: E402
from formerkit.viz.forecast import plot_forecast  # noqa: E402
from formerkit.viz.image_attention import (  # noqa: E402
    attention_rollout,
    plot_attention_for_image,
    plot_image_attention,
)
from formerkit.viz.masking import (  # noqa: E402
    MASKING_COLORS,
    masking_categories,
    masking_rates,
    plot_masking,
    plot_mlm_masking,
)
from formerkit.viz.positions import plot_positions  # noqa: E402

__all__ = [
    "FIGURE_SUFFIXES", "MASKING_COLORS", "PLOT_COMMANDS", "PlotCommand", "attention_maps",
    "attention_rollout", "display_token", "is_seq2seq", "load_model", "masking_categories",
    "masking_rates", "new_figure", "plot_attention", "plot_attention_for_image",
    "plot_attention_for_text", "plot_confusion", "plot_curves", "plot_forecast",
    "plot_image_attention", "plot_masking", "plot_mlm_masking", "plot_positions", "read_log",
    "register_plot", "save_figure",
]
