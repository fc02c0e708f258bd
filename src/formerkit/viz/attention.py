"""Attention heatmaps (Vaswani et al., 2017, "Attention Is All You Need"): per layer and head,
from weights or from a trained model reading a text; ``formerkit plot attention``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from formerkit.viz import (
    _add_run_output_argument,
    _chosen_indices,
    _int_list,
    _tokens,
    display_token,
    load_model,
    new_figure,
    output_in_run,
    register_plot,
    save_figure,
)
from formerkit.viz.image_attention import plot_attention_for_image, reads_images


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
    layers = _chosen_indices("layers", layers, len(maps))
    heads = _chosen_indices("heads", heads, n_heads)
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
    from formerkit.viz.explorer import run_with_attentions  # the explorer's capture, too

    kwargs = {"input_ids": input_ids}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if decoder_input_ids is not None:
        kwargs["decoder_input_ids"] = decoder_input_ids
    out = run_with_attentions(model, **kwargs)
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
    if reads_images(model):
        raise ValueError(f"{type(model).__name__} reads images, not text; pass --image "
                         "(plot_attention_for_image)")
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
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="input text (source sentence for seq2seq)")
    source.add_argument("--image", help="Vision Transformers: an image file, a .npy array of "
                        "pixel values, or SPLIT:INDEX of the run's dataset (e.g. test:7)")
    parser.add_argument("--target", help="seq2seq: target sentence (default: greedy output)")
    # not --kind: the CLI keeps the plot KIND in args.kind
    parser.add_argument("--type", choices=["self", "encoder", "decoder", "cross"],
                        help="which attention (default: self, or cross for seq2seq)")
    parser.add_argument("--layers", help="comma-separated layer indices (default: all)")
    parser.add_argument("--heads", help="comma-separated head indices (default: all)")
    parser.add_argument("--no-rollout", action="store_true",
                        help="images: leave out the attention-rollout panel")
    _add_run_output_argument(parser, "attention.png", "PATH")


@register_plot("attention", "attention heatmaps of a trained model for a text, or over the "
               "patches of an image (per layer/head)", _attention_arguments)
def _attention_command(args: argparse.Namespace) -> Path:
    layers, heads = _int_list(args.layers), _int_list(args.heads)
    if args.image is not None:
        if args.target is not None or args.type is not None:
            raise ValueError("--target and --type are for text; an image has one [CLS] "
                             "self-attention map per layer")
        fig = plot_attention_for_image(args.path, args.image, layers=layers, heads=heads,
                                       rollout=not args.no_rollout)
    else:
        fig = plot_attention_for_text(args.path, args.text, target=args.target,
                                      kind=args.type, layers=layers, heads=heads)
    return save_figure(fig, output_in_run(args.output, args.path, "attention.png"))
