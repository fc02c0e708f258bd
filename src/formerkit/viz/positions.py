"""Sinusoidal positional encoding (Vaswani et al., 2017, "Attention Is All You Need") and the
position similarity it induces; ``formerkit plot positions``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from formerkit.viz import _add_output_argument, new_figure, register_plot, save_figure


def plot_positions(max_len: int = 64, d_model: int = 128, *, layout: str = "interleaved",
                   reference_positions: Sequence[int] | None = None):
    """The sinusoidal table and the dot-product similarity it induces between positions.

    Panels: the (max_len, d_model) table PE; the (max_len, max_len) matrix PE PE^T; and
    PE(p) . PE(q) against q for a few reference positions p, which peaks at q = p and depends
    on |p - q| only (so attention can pick out relative offsets).

    Args:
        max_len: number of positions T.
        d_model: width D (even).
        layout: ``"interleaved"`` (paper) or ``"halves"`` (fairseq/Marian).
        reference_positions: positions p of the third panel (default three spread out).

    Returns:
        The matplotlib figure.
    """
    from formerkit.nn.position import sinusoidal_table

    if max_len < 2:
        raise ValueError(f"max_len must be >= 2, got {max_len}")
    table = sinusoidal_table(max_len, d_model, layout=layout)  # (T, D)
    similarity = table @ table.T  # (T, T)
    refs = list(reference_positions) if reference_positions is not None else \
        sorted({0, max_len // 2, max_len - 1})
    if any(not 0 <= p < max_len for p in refs):
        raise ValueError(f"reference_positions must lie in [0, {max_len}), got {refs}")
    fig, (ax_table, ax_sim, ax_line) = new_figure(1, 3, figsize=(16, 4.6),
                                                  gridspec_kw={"width_ratios": [1.3, 1, 1.2]})
    image = ax_table.imshow(table.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto",
                            interpolation="nearest")
    ax_table.set(title=f"sinusoidal encoding PE ({layout})", xlabel="dimension",
                 ylabel="position")
    fig.colorbar(image, ax=ax_table, shrink=0.85)
    image = ax_sim.imshow(similarity.numpy(), cmap="magma", aspect="equal",
                          interpolation="nearest")
    ax_sim.set(title="dot product PE(p) · PE(q)", xlabel="position q", ylabel="position p")
    fig.colorbar(image, ax=ax_sim, shrink=0.85)
    for p in refs:
        ax_line.plot(range(max_len), similarity[p].numpy(), label=f"p = {p}")
    ax_line.axhline(0, color="grey", lw=0.5)
    ax_line.set(title="similarity falls off with distance |p - q|", xlabel="position q",
                ylabel="PE(p) · PE(q)")
    ax_line.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _positions_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-len", type=int, default=64, help="number of positions")
    parser.add_argument("--d-model", type=int, default=128, help="model width (even)")
    parser.add_argument("--layout", choices=["interleaved", "halves"], default="interleaved")
    _add_output_argument(parser, "positions.png")


@register_plot("positions", "sinusoidal positional encoding and position similarity",
               _positions_arguments)
def _positions_command(args: argparse.Namespace) -> Path:
    fig = plot_positions(args.max_len, args.d_model, layout=args.layout)
    return save_figure(fig, args.output)
