"""Confusion matrix of a classification run's test predictions (row = true class, column =
predicted); ``formerkit plot confusion``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from formerkit.viz import new_figure, register_plot, save_figure


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], *,
                   title: str = "confusion matrix"):
    """Confusion matrix (row = true class, column = predicted): colour = share of the row,
    text = count and row percentage. Returns the figure."""
    import numpy as np

    counts = np.asarray(matrix, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or len(labels) != len(counts):
        raise ValueError(f"matrix must be square with one row per label, got shape "
                         f"{counts.shape} for {len(labels)} labels")
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.0 + 0.9 * len(labels)
    fig, ax = new_figure(figsize=(size + 1.5, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{counts[i, j]}\n{100 * shares[i, j]:.1f}%", ha="center",
                    va="center", fontsize=7, color="white" if shares[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), [str(x).replace("_", "\n") for x in labels], fontsize=7)
    ax.set_yticks(range(len(labels)), [str(x).replace("_", " ").lower() for x in labels],
                  fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title} (accuracy {100 * accuracy:.2f}%)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    return fig


def _confusion_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory holding confusion.json (written by tasks "
                        "such as har), or the JSON file itself")
    parser.add_argument("-o", "--output", default=None,
                        help="output file, .png or .svg (default: RUN/confusion.png)")


@register_plot("confusion", "confusion matrix of a classification run's test predictions",
               _confusion_arguments)
def _confusion_command(args: argparse.Namespace) -> Path:
    source = Path(args.run)
    file = source / "confusion.json" if source.is_dir() else source
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: train a classification recipe (e.g. "
                                "har-uci) into that directory first")
    data = json.loads(file.read_text())
    output = args.output or (file.parent / "confusion.png")
    title = f"confusion matrix, {data.get('split', 'test')}"
    return save_figure(plot_confusion(data["matrix"], data["labels"], title=title), output)
