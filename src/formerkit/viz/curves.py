"""Training curves of trainer logs (loss, validation metrics, learning rate) of one or more
runs overlaid; ``formerkit plot curves``."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

from formerkit.viz import (
    _add_run_output_argument,
    _str_list,
    new_figure,
    output_in_run,
    register_plot,
    save_figure,
)

_NOT_PLOTTED = {"step", "epoch", "time", "elapsed", "elapsed_s", "tokens_per_s", "samples_per_s",
                "tokens"}


def read_log(path: str | Path) -> list[dict]:
    """Records of a trainer ``log.jsonl`` (a file or a run directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"training log {path} not found")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not valid JSON: {err}") from None
        # The trainer's closing record (final: true) repeats the last evaluation.
        if isinstance(record, dict) and "step" in record and not record.get("final"):
            records.append(record)
    if not records:
        raise ValueError(f"{path} holds no records with a 'step'")
    return records


def _series(records: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    series: dict[str, tuple[list[float], list[float]]] = {}
    for record in records:
        for key, value in record.items():
            if key in _NOT_PLOTTED or isinstance(value, bool) \
                    or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(record["step"])
            values.append(float(value))
    return series


def _smooth(values: list[float], weight: float) -> list[float]:
    out, avg = [], None
    for value in values:
        avg = value if avg is None else weight * avg + (1 - weight) * value
        out.append(avg)
    return out


def plot_curves(runs: Sequence[str | Path], *, labels: Sequence[str] | None = None,
                metrics: Sequence[str] | None = None, smooth: float = 0.0,
                log_scale: bool = False):
    """Training curves of one or more runs overlaid: loss (train solid, validation dashed),
    every other ``val_*`` metric, and the learning rate, one panel each.

    Args:
        runs: run directories or ``log.jsonl`` files.
        labels: legend names (default: run directory names).
        metrics: panels to draw, e.g. ``["loss", "val_accuracy", "lr"]`` (default all found).
        smooth: exponential moving average weight in [0, 1) applied to the training loss.
        log_scale: logarithmic y axis for the loss panel.

    Returns:
        The matplotlib figure.
    """
    if not runs:
        raise ValueError("runs is empty: pass at least one run directory or log.jsonl")
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    paths = [Path(r) for r in runs]
    if labels is None:
        labels = [(p if p.is_dir() else p.parent).resolve().name for p in paths]
    if len(labels) != len(paths):
        raise ValueError(f"got {len(labels)} labels for {len(paths)} runs")
    all_series = [_series(read_log(p)) for p in paths]
    found = set().union(*all_series)
    panels = ["loss"] if found & {"loss", "val_loss"} else []
    panels += sorted(k for k in found if k.startswith("val_") and k != "val_loss")
    panels += sorted(k for k in found if k not in panels and k not in ("loss", "val_loss", "lr")
                     and not k.startswith("val_"))
    panels += ["lr"] if "lr" in found else []
    if metrics is not None:
        unknown = [m for m in metrics if m not in panels]
        if unknown:
            raise ValueError(f"metrics {unknown} not in the logs; available: {panels}")
        panels = list(metrics)
    if not panels:
        raise ValueError("the logs hold no numeric metrics to plot")
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = new_figure(rows, cols, squeeze=False, figsize=(5.2 * cols, 3.6 * rows))
    colors = [f"C{i % 10}" for i in range(len(paths))]
    for ax, panel in zip(axes.ravel(), panels):
        for series, label, color in zip(all_series, labels, colors):
            if panel == "loss":
                if "loss" in series:
                    steps, values = series["loss"]
                    ax.plot(steps, _smooth(values, smooth), color=color, label=f"{label} train")
                if "val_loss" in series:
                    steps, values = series["val_loss"]
                    ax.plot(steps, values, "--o", color=color, ms=3, label=f"{label} val")
            elif panel in series:
                steps, values = series[panel]
                style = "--o" if panel.startswith("val_") else "-"
                ax.plot(steps, values, style, color=color, ms=3, label=label)
        ax.set(title=panel, xlabel="step")
        if panel == "loss" and log_scale:
            ax.set_yscale("log")
        if panel == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def _curves_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run directories or log.jsonl files")
    parser.add_argument("--labels", help="comma-separated legend names, one per run")
    parser.add_argument("--metrics", help="comma-separated panels, e.g. loss,val_accuracy,lr")
    parser.add_argument("--smooth", type=float, default=0.0,
                        help="moving-average weight for the training loss, in [0, 1)")
    parser.add_argument("--log-scale", action="store_true", help="log y axis for the loss")
    _add_run_output_argument(parser, "curves.png", "the first RUN")


@register_plot("curves", "training curves (loss, validation metrics, lr) of one or more runs",
               _curves_arguments)
def _curves_command(args: argparse.Namespace) -> Path:
    fig = plot_curves(args.runs, labels=_str_list(args.labels), metrics=_str_list(args.metrics),
                      smooth=args.smooth, log_scale=args.log_scale)
    return save_figure(fig, output_in_run(args.output, args.runs[0], "curves.png"))
