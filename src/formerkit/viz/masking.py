"""BERT's masked-LM corruption (Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional
Transformers"): 15% selected, of which 80% [MASK], 10% random, 10% kept; ``formerkit plot
masking``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from formerkit.viz import (
    _add_output_argument,
    _tokens,
    display_token,
    load_model,
    new_figure,
    register_plot,
    save_figure,
)

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
