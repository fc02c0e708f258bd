"""Plots (matplotlib, PNG/SVG): attention maps, positional encodings, training curves, MLM
masking, forecasts and confusion matrices. Each plot is a Python function and a
``formerkit plot KIND`` command registered in ``PLOT_COMMANDS``."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable


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
