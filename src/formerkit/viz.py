"""Plots (matplotlib, PNG/SVG): attention maps, positional encodings, training curves, MLM
masking, forecasts and confusion matrices. Each plot is a Python function and a
``formerkit plot KIND`` command registered in ``PLOT_COMMANDS``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

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


# ---- attention ----------------------------------------------------------------------------

def display_token(token: str) -> str:
    """A readable axis label for a tokenizer piece: byte-level BPE's ``Ġ`` (space) and ``Ċ``
    (newline) and raw whitespace become visible symbols."""
    token = token.replace("Ġ", "␣").replace("Ċ", "↵").replace("▁", "␣")
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "→") or "∅"


def plot_attention(
    attentions: Sequence[torch.Tensor],
    query_tokens: Sequence[str],
    key_tokens: Sequence[str] | None = None,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    batch_index: int = 0,
    title: str | None = None,
    cmap: str = "viridis",
):
    """Attention heatmaps: one row (grid) per layer, one panel per head.

    Args:
        attentions: per-layer weights, each (B, H, Tq, Tk) or (H, Tq, Tk), rows summing to 1
            (as returned with ``output_attentions=True``).
        query_tokens: Tq labels of the rows (queries).
        key_tokens: Tk labels of the columns (keys); default ``query_tokens`` (self-attention).
        layers, heads: indices to draw (default all).
        batch_index: which example of the batch.
        title: figure title.
        cmap: matplotlib colormap.

    Returns:
        The matplotlib figure.
    """
    if not attentions:
        raise ValueError("attentions is empty: pass the per-layer weights from "
                         "output_attentions=True")
    if any(w is None for w in attentions):
        raise ValueError("attentions holds None: the model did not return weights for every "
                         "layer")
    maps = [w.detach().float().cpu() for w in attentions]
    maps = [w[batch_index] if w.dim() == 4 else w for w in maps]  # (H, Tq, Tk)
    if any(w.dim() != 3 for w in maps):
        raise ValueError("each attention map must have shape (B, H, Tq, Tk) or (H, Tq, Tk)")
    key_tokens = list(query_tokens if key_tokens is None else key_tokens)
    n_heads, n_queries, n_keys = maps[0].shape
    if (n_queries, n_keys) != (len(query_tokens), len(key_tokens)):
        raise ValueError(f"attention maps are {n_queries}x{n_keys} but got "
                         f"{len(query_tokens)} query and {len(key_tokens)} key tokens")
    layers = list(range(len(maps))) if layers is None else list(layers)
    heads = list(range(n_heads)) if heads is None else list(heads)
    for name, chosen, limit in (("layers", layers, len(maps)), ("heads", heads, n_heads)):
        bad = [i for i in chosen if not 0 <= i < limit]
        if bad or not chosen:
            raise ValueError(f"{name} must be indices in [0, {limit}), got {chosen}")
    panel = min(6.0, max(1.8, 0.16 * max(n_queries, n_keys) + 0.6))
    fig, axes = new_figure(len(layers), len(heads), squeeze=False, sharex=True, sharey=True,
                           figsize=(panel * len(heads) + 1.2, panel * len(layers) + 0.6),
                           layout="constrained")
    vmax = max(float(maps[i][heads].max()) for i in layers) or 1.0
    step_q, step_k = max(1, n_queries // 40), max(1, n_keys // 40)
    image = None
    for row, layer in enumerate(layers):
        for col, head in enumerate(heads):
            ax = axes[row][col]
            image = ax.imshow(maps[layer][head].numpy(), cmap=cmap, vmin=0.0, vmax=vmax,
                              aspect="auto", interpolation="nearest")
            if row == 0 and len(heads) > 1:
                ax.set_title(f"head {head}", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"layer {layer}\nquery" if len(layers) > 1 else "query",
                              fontsize=9)
                ax.set_yticks(range(0, n_queries, step_q))
                ax.set_yticklabels([display_token(t) for t in query_tokens[::step_q]],
                                   fontsize=7)
            if row == len(layers) - 1:
                ax.set_xlabel("key", fontsize=9)
                ax.set_xticks(range(0, n_keys, step_k))
                ax.set_xticklabels([display_token(t) for t in key_tokens[::step_k]],
                                   fontsize=7, rotation=90)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="attention weight")
    if title:
        fig.suptitle(title)
    return fig


def load_model(path: str | Path):
    """Load a model directory, or the ``model/`` folder of a training run directory."""
    path = Path(path)
    if (path / "model" / "config.json").is_file():
        path = path / "model"
    from formerkit.models.auto import from_pretrained

    return from_pretrained(path)


def is_seq2seq(model) -> bool:
    """Whether ``model`` is a text encoder-decoder (its config has a decoder start token)."""
    return hasattr(getattr(model, "config", None), "decoder_start_token_id")


def attention_maps(model, input_ids: torch.Tensor, *,
                   attention_mask: torch.Tensor | None = None,
                   decoder_input_ids: torch.Tensor | None = None
                   ) -> dict[str, tuple[torch.Tensor, ...]]:
    """Run ``model`` once with ``output_attentions=True`` and collect its weights.

    Args:
        model: a formerkit model.
        input_ids: (B, T) token ids (the source for encoder-decoders).
        attention_mask: (B, T), 1 = token, 0 = padding.
        decoder_input_ids: (B, Tt) target-side inputs of an encoder-decoder.

    Returns:
        ``{"self": ...}`` for encoder-only and decoder-only models, or ``{"encoder", "decoder",
        "cross"}`` for encoder-decoders; each a tuple of per-layer (B, H, Tq, Tk) tensors.
    """
    kwargs = {"input_ids": input_ids, "output_attentions": True}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if decoder_input_ids is not None:
        kwargs["decoder_input_ids"] = decoder_input_ids
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(**kwargs)
    finally:
        model.train(was_training)
    if decoder_input_ids is not None:
        found = {"encoder": out.encoder_attentions, "decoder": out.attentions,
                 "cross": out.cross_attentions}
    else:
        found = {"self": out.attentions}
    maps = {name: tuple(w) for name, w in found.items()
            if w is not None and len(w) and all(t is not None for t in w)}
    if not maps:
        raise ValueError(f"{type(model).__name__} returned no attention weights with "
                         "output_attentions=True")
    return maps


def _tokens(tokenizer, ids: Sequence[int]) -> list[str]:
    return [tokenizer.id_to_token(int(i)) or str(int(i)) for i in ids]


def plot_attention_for_text(model, text: str, *, target: str | None = None,
                            kind: str | None = None, layers: Sequence[int] | None = None,
                            heads: Sequence[int] | None = None, tokenizer=None,
                            max_new_tokens: int = 30):
    """Attention heatmaps of ``model`` reading ``text``.

    Args:
        model: a formerkit model, or a model or run directory.
        text: the input (the source sentence for an encoder-decoder), truncated to the
            model's ``max_seq_len``.
        target: encoder-decoders only: the target sentence fed to the decoder (teacher
            forcing); default: the model's greedy translation of ``text``.
        kind: ``"self"`` (encoder- or decoder-only), or ``"encoder"``, ``"decoder"``,
            ``"cross"`` (encoder-decoder; default ``"cross"``).
        layers, heads: indices to draw (default all).
        tokenizer: default ``model.tokenizer``.
        max_new_tokens: length limit of the greedy translation.

    Returns:
        The matplotlib figure.
    """
    if isinstance(model, (str, Path)):
        model = load_model(model)
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"{type(model).__name__} has no tokenizer: pass tokenizer=")
    ids = tokenizer.encode(text)
    if not ids:
        raise ValueError(f"text {text!r} encodes to no tokens")
    max_len = getattr(model.config, "max_seq_len", None)
    ids = ids[:max_len] if max_len else ids
    input_ids = torch.tensor([ids])
    decoder_ids = None
    if is_seq2seq(model):
        kind = kind or "cross"
        if target is not None:
            start = model.config.decoder_start_token_id
            decoder_ids = torch.tensor([[start] + tokenizer.encode(target)])
        else:
            was_training = model.training
            model.eval()  # no dropout in the greedy translation
            with torch.no_grad():
                decoder_ids = model.generate(input_ids, max_new_tokens=max_new_tokens)
            model.train(was_training)
    else:
        kind = kind or "self"
    maps = attention_maps(model, input_ids, decoder_input_ids=decoder_ids)
    if kind not in maps:
        raise ValueError(f"attention kind (--type) must be one of {sorted(maps)} for "
                         f"{type(model).__name__}, got {kind!r}")
    source = _tokens(tokenizer, ids)
    target_tokens = _tokens(tokenizer, decoder_ids[0]) if decoder_ids is not None else source
    queries = source if kind in ("self", "encoder") else target_tokens
    keys = source if kind in ("self", "encoder", "cross") else target_tokens
    return plot_attention(maps[kind], queries, keys, layers=layers, heads=heads,
                          title=f"{kind} attention of {type(model).__name__} "
                                f"({_AXES[kind]})")


_AXES = {"self": "rows: queries, columns: keys", "encoder": "source attends to source",
         "decoder": "target attends to earlier target", "cross": "target attends to source"}


def _attention_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="model directory or training run directory")
    parser.add_argument("--text", required=True, help="input text (source sentence for seq2seq)")
    parser.add_argument("--target", help="seq2seq: target sentence (default: greedy output)")
    # not --kind: the CLI keeps the plot KIND in args.kind
    parser.add_argument("--type", choices=["self", "encoder", "decoder", "cross"],
                        help="which attention (default: self, or cross for seq2seq)")
    parser.add_argument("--layers", help="comma-separated layer indices (default: all)")
    parser.add_argument("--heads", help="comma-separated head indices (default: all)")
    _add_output_argument(parser, "attention.png")


@register_plot("attention", "attention heatmaps of a trained model for a text (per layer/head)",
               _attention_arguments)
def _attention_command(args: argparse.Namespace) -> Path:
    fig = plot_attention_for_text(args.path, args.text, target=args.target, kind=args.type,
                                  layers=_int_list(args.layers), heads=_int_list(args.heads))
    return save_figure(fig, args.output)


# ---- positional encoding ------------------------------------------------------------------

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


# ---- training curves ----------------------------------------------------------------------

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
    _add_output_argument(parser, "curves.png")


@register_plot("curves", "training curves (loss, validation metrics, lr) of one or more runs",
               _curves_arguments)
def _curves_command(args: argparse.Namespace) -> Path:
    fig = plot_curves(args.runs, labels=_str_list(args.labels), metrics=_str_list(args.metrics),
                      smooth=args.smooth, log_scale=args.log_scale)
    return save_figure(fig, args.output)


# ---- MLM masking ---------------------------------------------------------------------------

MASKING_COLORS = {
    "special": ("white", "special token: never selected"),
    "unchanged": ("#e8e8e8", "not selected (no loss)"),
    "masked": ("#f4a259", "selected -> [MASK] (80%)"),
    "replaced": ("#e05263", "selected -> random token (10%)"),
    "kept": ("#7bc47f", "selected, kept as is (10%)"),
}


def masking_categories(original_ids: Sequence[int], input_ids: Sequence[int],
                       labels: Sequence[int], *, mask_token_id: int,
                       special_ids: Sequence[int] = ()) -> list[str]:
    """What MLM masking did to each position: ``"special"``, ``"unchanged"`` (not selected),
    ``"masked"`` (-> [MASK]), ``"replaced"`` (-> random token) or ``"kept"`` (selected, left
    as is). Selected means ``labels != -100``. A random replacement that happens to draw the
    original token is indistinguishable from ``"kept"`` and counted as such."""
    if not len(original_ids) == len(input_ids) == len(labels):
        raise ValueError(f"original_ids, input_ids and labels differ in length: "
                         f"{len(original_ids)}, {len(input_ids)}, {len(labels)}")
    special = {int(i) for i in special_ids}
    out = []
    for orig, new, label in zip(original_ids, input_ids, labels):
        orig, new, label = int(orig), int(new), int(label)
        if label == -100:
            out.append("special" if orig in special else "unchanged")
        elif new == mask_token_id and orig != mask_token_id:
            out.append("masked")
        elif new != orig:
            out.append("replaced")
        else:
            out.append("kept")
    return out


def masking_rates(categories: Sequence[Sequence[str]]) -> dict[str, float]:
    """Fractions over many masked copies: ``selected`` of the eligible (non-special) tokens,
    and ``masked``, ``replaced``, ``kept`` of the selected ones."""
    flat = [c for row in categories for c in row]
    eligible = sum(c != "special" for c in flat)
    selected = sum(c in ("masked", "replaced", "kept") for c in flat)
    rates = {"selected": selected / max(eligible, 1)}
    for name in ("masked", "replaced", "kept"):
        rates[name] = sum(c == name for c in flat) / max(selected, 1)
    return rates


def plot_masking(original_tokens: Sequence[str],
                 draws: Sequence[tuple[Sequence[str], Sequence[str]]], *,
                 rates: dict[str, float] | None = None,
                 targets: dict[str, float] | None = None, title: str | None = None):
    """The MLM masking of one sentence: the original tokens, then each masked copy with its
    tokens coloured by what happened to them, and optionally the measured rates.

    Args:
        original_tokens: the T tokens before masking.
        draws: masked copies as (T tokens the model sees, T categories from
            ``masking_categories``).
        rates: measured fractions from ``masking_rates`` (draws a bar panel when given).
        targets: the intended fractions (default BERT's 15% / 80% / 10% / 10%).
        title: figure title.

    Returns:
        The matplotlib figure.
    """
    from matplotlib.patches import Patch, Rectangle

    n_tokens = len(original_tokens)
    for tokens, cats in draws:
        if len(tokens) != n_tokens or len(cats) != n_tokens:
            raise ValueError(f"every draw needs {n_tokens} tokens and categories, "
                             f"got {len(tokens)} and {len(cats)}")
        unknown = set(cats) - set(MASKING_COLORS)
        if unknown:
            raise ValueError(f"unknown masking categories {sorted(unknown)}; "
                             f"expected {list(MASKING_COLORS)}")
    rows = [(list(original_tokens), None)] + [(list(t), list(c)) for t, c in draws]
    widths = [max(len(display_token(row[i])) for row, _ in rows) * 0.7 + 0.8
              for i in range(n_tokens)]
    total = sum(widths)
    ratios = [max(4.0, total * 0.16), 3.2] if rates is not None else [1]
    fig, axes = new_figure(1, len(ratios), squeeze=False, gridspec_kw={"width_ratios": ratios},
                           figsize=(sum(ratios), 0.55 * len(rows) + 1.8))
    ax = axes[0][0]
    for r, (tokens, cats) in enumerate(rows):
        y = len(rows) - 1 - r
        x = 0.0
        for i, token in enumerate(tokens):
            color = "white" if cats is None else MASKING_COLORS[cats[i]][0]
            ax.add_patch(Rectangle((x + 0.05, y + 0.1), widths[i] - 0.1, 0.8, facecolor=color,
                                   edgecolor="black" if cats is None else "grey", lw=0.6))
            ax.text(x + widths[i] / 2, y + 0.5, display_token(token), ha="center",
                    va="center", fontsize=9, family="monospace")
            x += widths[i]
        ax.text(-0.3, y + 0.5, "original" if cats is None else f"copy {r}", ha="right",
                va="center", fontsize=9)
    ax.set_xlim(-0.1, total + 0.1)
    ax.set_ylim(-0.1, len(rows) + 0.05)
    ax.axis("off")
    ax.legend(handles=[Patch(facecolor=c, edgecolor="grey", label=text)
                       for c, text in MASKING_COLORS.values()],
              loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=2, fontsize=8, frameon=False)
    if rates is not None:
        targets = targets or {"selected": 0.15, "masked": 0.8, "replaced": 0.1, "kept": 0.1}
        bar_ax = axes[0][1]
        names = ["selected", "masked", "replaced", "kept"]
        colors = ["#9aa5b1"] + [MASKING_COLORS[n][0] for n in names[1:]]
        bars = bar_ax.bar(range(4), [100 * rates[n] for n in names], color=colors,
                          edgecolor="grey")
        for i, name in enumerate(names):
            bar_ax.hlines(100 * targets[name], i - 0.45, i + 0.45, colors="black",
                          linestyles="--", lw=1)
            top = max(bars[i].get_height(), 100 * targets[name])
            bar_ax.text(i, top + 2, f"{100 * rates[name]:.1f}%", ha="center", fontsize=8)
        bar_ax.set_xticks(range(4))
        bar_ax.set_xticklabels(["selected\n(of tokens)", "[MASK]\n(of sel.)",
                                "random\n(of sel.)", "kept\n(of sel.)"], fontsize=8)
        bar_ax.set(ylabel="%", ylim=(0, 100), title="measured (bars) vs target (dashes)")
    if title:
        fig.suptitle(title)
    return fig


def plot_mlm_masking(text: str = "the quick brown fox jumps over the lazy dog", *,
                     tokenizer=None, n_copies: int = 4, n_rate_copies: int = 4000,
                     seed: int = 0, whole_word: bool = False):
    """BERT's masked-LM corruption of ``text`` by formerkit's ``MLMCollator``: a few masked
    copies, chosen so that every outcome appears, and the rates measured over many copies.

    Args:
        text: the sentence.
        tokenizer: a WordPiece tokenizer with [CLS], [SEP], [MASK], [PAD] (e.g. a trained
            BERT's ``model.tokenizer``); default: one trained on ``text`` itself, so random
            replacements come from the sentence's own pieces.
        n_copies: masked copies drawn as rows.
        n_rate_copies: copies over which the rates are measured.
        seed: masking seed.
        whole_word: mask whole words (all pieces of a word together).

    Returns:
        The matplotlib figure.
    """
    from formerkit.data.mlm import MLMCollator

    if n_copies < 1 or n_rate_copies < n_copies:
        raise ValueError(f"need 1 <= n_copies <= n_rate_copies, got {n_copies}, "
                         f"{n_rate_copies}")
    if tokenizer is None:
        from formerkit.data.tokenizers import train_wordpiece

        tokenizer = train_wordpiece([text], vocab_size=200)
    collator = MLMCollator.from_tokenizer(tokenizer, whole_word=whole_word,
                                          generator=torch.Generator().manual_seed(seed))
    ids = torch.tensor(tokenizer.encode(text))
    masked, labels = collator.mask_tokens(ids.expand(n_rate_copies, -1))  # (N, T) each
    special = collator.is_special.nonzero().squeeze(1).tolist()
    categories = [masking_categories(ids, row, label, mask_token_id=collator.mask_token_id,
                                     special_ids=special) for row, label in zip(masked, labels)]
    # Show copies that together include every outcome, then the following ones in order.
    chosen: list[int] = []
    for outcome in ("replaced", "kept", "masked"):
        index = next((i for i, c in enumerate(categories) if outcome in c), None)
        if index is not None and index not in chosen and len(chosen) < n_copies:
            chosen.append(index)
    chosen += [i for i in range(n_rate_copies) if i not in chosen][: n_copies - len(chosen)]
    draws = [(_tokens(tokenizer, masked[i]), categories[i]) for i in sorted(chosen)]
    return plot_masking(_tokens(tokenizer, ids), draws, rates=masking_rates(categories),
                        targets={"selected": collator.mlm_probability,
                                 "masked": collator.mask_prob, "replaced": collator.random_prob,
                                 "kept": 1 - collator.mask_prob - collator.random_prob},
                        title=f"MLM masking: {n_copies} copies picked to show every outcome; "
                              f"rates over {n_rate_copies} copies")


def _masking_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text", default="the quick brown fox jumps over the lazy dog",
                        help="sentence to mask")
    parser.add_argument("--model", help="model or run directory whose tokenizer to use "
                        "(default: a WordPiece trained on the text)")
    parser.add_argument("--copies", type=int, default=4, help="masked copies to draw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--whole-word", action="store_true", help="whole-word masking")
    _add_output_argument(parser, "masking.png")


@register_plot("masking", "BERT masked-LM masking of a sentence (selected, masked, replaced, "
               "kept)", _masking_arguments)
def _masking_command(args: argparse.Namespace) -> Path:
    tokenizer = None
    if args.model:
        tokenizer = getattr(load_model(args.model), "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"model {args.model} has no tokenizer")
    fig = plot_mlm_masking(args.text, tokenizer=tokenizer, n_copies=args.copies,
                           seed=args.seed, whole_word=args.whole_word)
    return save_figure(fig, args.output)


# ---- confusion matrix ---------------------------------------------------------------------
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


# ---- forecasts ----------------------------------------------------------------------------

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
