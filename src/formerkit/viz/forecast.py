"""Time-series forecasts (lookback, truth and forecast per window and variate) of a
forecasting run; ``formerkit plot forecast``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from formerkit.viz import _int_list, _str_list, new_figure, register_plot, save_figure


def plot_forecast(examples: dict, *, variates: Sequence[str] | None = None, title: str = ""):
    """Lookback, truth and forecast per (window, variate), from
    ``formerkit.tasks.forecast.forecast_examples``; one row per window."""
    import numpy as np

    columns = list(examples["columns"])
    variates = list(variates or columns[-1:])
    unknown = [v for v in variates if v not in columns]
    if unknown:
        raise ValueError(f"variates {unknown} not among the columns {columns}")
    rows, cols = len(examples["windows"]), len(variates)
    fig, axes = new_figure(rows, cols, figsize=(4.5 * cols, 2.4 * rows), squeeze=False)
    seq_len, pred_len = examples["history"].shape[1], examples["truth"].shape[1]
    past, future = np.arange(-seq_len, 0), np.arange(pred_len)
    for r, window in enumerate(examples["windows"]):
        for c, name in enumerate(variates):
            ax, j = axes[r][c], columns.index(name)
            ax.plot(past, examples["history"][r, :, j], color="0.4", lw=1, label="lookback")
            ax.plot(future, examples["truth"][r, :, j], color="tab:blue", lw=1, label="truth")
            ax.plot(future, examples["prediction"][r, :, j], color="tab:orange", lw=1.2,
                    label="forecast")
            ax.axvline(0, color="0.7", lw=0.8, ls="--")
            ax.set_title(f"{name}, {examples['split']} window {window}", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _forecast_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="forecast run directory (or its model/ directory)")
    parser.add_argument("--split", choices=["train", "val", "test"], default="test")
    parser.add_argument("--windows", help="comma-separated window indices "
                        "(default: first, middle, last)")
    parser.add_argument("--variates", help="comma-separated column names (default: the last, "
                        "OT for ETT)")
    parser.add_argument("-o", "--output", default=None,
                        help="output file, .png or .svg (default: RUN/forecast.png)")


@register_plot("forecast", "lookback, truth and forecast of a forecasting run's test windows",
               _forecast_arguments)
def _forecast_command(args: argparse.Namespace) -> Path:
    from formerkit.tasks.forecast import forecast_examples

    examples = forecast_examples(args.run, split=args.split, windows=_int_list(args.windows))
    output = args.output or Path(args.run) / "forecast.png"
    return save_figure(plot_forecast(examples, variates=_str_list(args.variates),
                                     title=str(Path(args.run).name)), output)
