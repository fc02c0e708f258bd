"""Attention explorer: one self-contained HTML page per model and input (``formerkit explain``),
in the spirit of bertviz's head and model views (Vig, 2019, "A Multiscale Visualization of
Attention in the Transformer Model") but for every formerkit family, text and time series.

The weights come from the model's own ``output_attentions=True`` pass, so the page shows what
the model computed. This module holds the page's data model (``Explanation``), the weight
encoding and the HTML rendering, and dispatches a model to the module that knows how to read
its input: ``explorer_text`` for anything that takes ``input_ids`` (GPT, BERT, encoder-decoders,
Llama, ...), ``explorer_series`` for the time-series models.
"""

from __future__ import annotations

import base64
import dataclasses
import inspect
import json
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "formerkit-explorer/1"
TEMPLATE = "explorer.html"
PAYLOAD_MARK = "__FORMERKIT_EXPLORER_PAYLOAD__"
WEIGHT_LEVELS = 65535  # weights are stored as uint16: w = level / 65535 (error <= 7.7e-6)
MAX_WEIGHTS = 24_000_000  # ~64 MB of page; beyond that a browser tab struggles


@dataclasses.dataclass
class Axis:
    """The items along one side of an attention map.

    Attributes:
        sequence: what the items are, a singular noun (``"token"``, ``"source"``,
            ``"target"``, ``"step"``, ``"variate"``, ...); views and prediction panels over
            the same sequence share the focused item.
        labels: one display label per item.
        titles: optional longer text per item (tooltips).
        spans: optional ``(curve, start, end)`` per item: the time range the item covers on the
            series panel, on curve ``curve`` (``None``: on every curve).
    """

    sequence: str
    labels: list[str]
    titles: list[str] | None = None
    spans: list[tuple[int | None, int, int]] | None = None

    def to_payload(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "labels": list(self.labels),
                "titles": self.titles, "spans": self.spans}


@dataclasses.dataclass
class AttentionView:
    """One kind of attention (self, encoder, decoder, cross, one variate's patches, ...).

    Attributes:
        name: short id. title: heading. note: one sentence on what rows and columns mean.
        queries, keys: the two axes (rows = queries, columns = keys).
        weights: per-layer weights, each (H, Tq, Tk), rows summing to 1.
        curves: series-panel curves this view is about (default all).
    """

    name: str
    title: str
    note: str
    queries: Axis
    keys: Axis
    weights: list[torch.Tensor]
    curves: list[int] | None = None

    def __post_init__(self) -> None:
        if not self.weights:
            raise ValueError(f"attention view {self.name!r} has no layers")
        shapes = {tuple(w.shape) for w in self.weights}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise ValueError(f"attention view {self.name!r}: every layer must be (H, Tq, Tk) "
                             f"of one shape, got {sorted(shapes)}")
        _, n_queries, n_keys = next(iter(shapes))
        if (n_queries, n_keys) != (len(self.queries.labels), len(self.keys.labels)):
            raise ValueError(f"attention view {self.name!r} is {n_queries}x{n_keys} but has "
                             f"{len(self.queries.labels)} query and {len(self.keys.labels)} "
                             "key labels")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        n_heads, n_queries, n_keys = self.weights[0].shape
        return len(self.weights), n_heads, n_queries, n_keys

    def to_payload(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "note": self.note,
                "queries": self.queries.to_payload(), "keys": self.keys.to_payload(),
                "shape": list(self.shape), "weights": encode_weights(self.weights),
                "curves": self.curves}


@dataclasses.dataclass
class Explanation:
    """Everything one explorer page shows.

    Attributes:
        title, subtitle: page heading (model class, directory, size).
        inputs: what was fed, as ``(label, text)`` lines.
        views: the attention views, first shown first.
        predictions: panels of the model's prediction, each a dict with ``kind``:
            ``"scores"`` (``title``, ``scores`` [[label, p], ...]), ``"per_position"``
            (``title``, ``sequence``, ``positions`` {index: [[label, p], ...]}, ``default``)
            or ``"text"`` (``title``, ``text``).
        series: the series panel (time series only): ``x_label``, ``curves`` [{``name``,
            ``values``, ``forecast``, ``offset``}], optional ``bands`` {``title``, ``classes``,
            ``labels``} (a class index per step).
    """

    title: str
    subtitle: str
    inputs: list[tuple[str, str]]
    views: list[AttentionView]
    predictions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    series: dict[str, Any] | None = None

    def to_payload(self) -> dict[str, Any]:
        total = sum(int(np.prod(view.shape)) for view in self.views)
        if total > MAX_WEIGHTS:
            raise ValueError(f"the page would hold {total:,} attention weights (more than "
                             f"{MAX_WEIGHTS:,}); use a shorter input")
        return {"format": FORMAT, "title": self.title, "subtitle": self.subtitle,
                "inputs": [list(line) for line in self.inputs],
                "views": [view.to_payload() for view in self.views],
                "predictions": self.predictions, "series": self.series}


def encode_weights(weights: list[torch.Tensor]) -> str:
    """Per-layer (H, Tq, Tk) weights in [0, 1] as base64 little-endian uint16, (L, H, Tq, Tk)
    row-major: the page divides by ``WEIGHT_LEVELS``."""
    stacked = torch.stack([w.detach().float().cpu() for w in weights])  # (L, H, Tq, Tk)
    if not bool(torch.isfinite(stacked).all()):
        raise ValueError("attention weights hold NaN or infinite values")
    levels = (stacked.clamp(0.0, 1.0) * WEIGHT_LEVELS).round().to(torch.int32).numpy()
    return base64.b64encode(levels.astype("<u2").tobytes()).decode("ascii")


def decode_weights(encoded: str, shape: list[int] | tuple[int, ...]) -> np.ndarray:
    """Inverse of ``encode_weights``: float32 (L, H, Tq, Tk)."""
    levels = np.frombuffer(base64.b64decode(encoded), dtype="<u2")
    return (levels.astype(np.float32) / WEIGHT_LEVELS).reshape(shape)


# ---- capture -------------------------------------------------------------------------------
ATTENTION_FIELDS = ("encoder_attentions", "attentions", "cross_attentions")


@torch.no_grad()
def run_with_attentions(model: torch.nn.Module, **inputs: Any) -> Any:
    """One eval-mode forward pass with ``output_attentions=True``.

    Raises:
        ValueError: the model takes no ``output_attentions`` or returned no weights.
    """
    if "output_attentions" not in inspect.signature(model.forward).parameters:
        raise ValueError(f"{type(model).__name__} has no attention weights to show: its "
                         "forward takes no output_attentions")
    was_training = model.training
    model.eval()
    try:
        out = model(**inputs, output_attentions=True)
    finally:
        model.train(was_training)
    found = [getattr(out, name, None) for name in ATTENTION_FIELDS]
    if not any(w is not None and len(w) and all(t is not None for t in w) for w in found):
        raise ValueError(f"{type(model).__name__} returned no attention weights with "
                         "output_attentions=True")
    return out


def softmax_top(logits: torch.Tensor, labels: Sequence[str] | Callable[[int], str], k: int
                ) -> list[list[Any]]:
    """``[[label, probability], ...]`` of the ``k`` most likely classes of one logits row;
    ``labels`` is a list or a callable id -> label."""
    probs = torch.softmax(logits.float(), dim=-1)
    values, ids = probs.topk(min(k, probs.numel()))
    name = labels if callable(labels) else labels.__getitem__
    return [[name(int(i)), round(float(p), 5)] for p, i in zip(values, ids)]


def describe(model: torch.nn.Module, source: str | Path | None) -> tuple[str, str]:
    """Page title and subtitle: model class, registry name, size, where it was loaded from."""
    n_params = sum(p.numel() for p in model.parameters())
    name = getattr(model, "registry_name", None)
    parts = [f"{name}" if name else None, f"{n_params / 1e6:.2f}M parameters",
             str(source) if source is not None else None]
    return type(model).__name__, " · ".join(p for p in parts if p)


# ---- entry points --------------------------------------------------------------------------
def explain(model: torch.nn.Module | str | Path, *, text: str | None = None,
            pair: str | None = None, target: str | None = None,
            series: np.ndarray | torch.Tensor | None = None, top_k: int = 5,
            max_new_tokens: int = 40, tokenizer: Any = None, source: str | Path | None = None,
            **series_options: Any) -> Explanation:
    """What an explorer page shows for ``model`` reading one input.

    Args:
        model: a formerkit model, or a model or training run directory.
        text: the input text of a text model (the source sentence of an encoder-decoder).
        pair: the second segment of a sentence-pair model (BERT ``token_type_ids`` 1).
        target: encoder-decoders: the target fed to the decoder (default: the model's greedy
            translation of ``text``, at most ``max_new_tokens`` tokens).
        series: time-series models: the raw (T, C) input in original units (see
            ``explorer_series.explain_series`` for ``series_options``: ``scaler``,
            ``x_mark``, ``y_mark``, ``truth``, ``columns``).
        top_k: entries shown per prediction.
        max_new_tokens: length limit of the greedy translation.
        tokenizer: default ``model.tokenizer``.
        source: where the model came from, shown under the title (default the directory
            when ``model`` is one).

    Returns:
        The ``Explanation``; ``render_html`` turns it into the page.

    Raises:
        ValueError: no attention weights, an input longer than the model's context, a text
            model without a tokenizer, or an input of the wrong kind.
    """
    if isinstance(model, (str, Path)):
        from formerkit.viz import load_model

        source, model = source or model, load_model(model)
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    parameters = inspect.signature(model.forward).parameters
    if "output_attentions" not in parameters:
        raise ValueError(f"{type(model).__name__} has no attention weights to show: its "
                         "forward takes no output_attentions")
    if "input_ids" in parameters:
        from formerkit.viz.explorer_text import explain_text

        if series is not None or series_options:
            raise ValueError(f"{type(model).__name__} reads text: pass text=, not series=")
        tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if tokenizer is None:
            where = f" ({source} holds no tokenizer.json)" if source is not None else ""
            raise ValueError(f"{type(model).__name__} has no tokenizer{where}: the explorer "
                             "cannot encode the text")
        return explain_text(model, tokenizer, text, pair=pair, target=target, top_k=top_k,
                            max_new_tokens=max_new_tokens, source=source)
    from formerkit.viz.explorer_series import explain_series

    if text is not None or pair is not None:
        raise ValueError(f"{type(model).__name__} reads a time series, not text: give "
                         "series= (CLI: --input FILE or --window N)")
    if series is None:
        raise ValueError(f"{type(model).__name__} needs a time series input: give series= "
                         "(CLI: --input FILE or --window N)")
    return explain_series(model, series, top_k=top_k, source=source, **series_options)


def render_html(explanation: Explanation | dict[str, Any]) -> str:
    """The self-contained page (inline script and style, no network) for an explanation."""
    payload = explanation.to_payload() if isinstance(explanation, Explanation) else explanation
    # Inside <script> the JSON must not close the element or open a comment.
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    template = resources.files("formerkit.viz").joinpath(TEMPLATE).read_text(encoding="utf-8")
    if template.count(PAYLOAD_MARK) != 1:
        raise RuntimeError(f"{TEMPLATE} must hold {PAYLOAD_MARK} exactly once")
    page_title = _escape(f"{payload['title']} · formerkit explorer")
    return template.replace("__FORMERKIT_EXPLORER_TITLE__", page_title).replace(
        PAYLOAD_MARK, data)


def explain_html(model: torch.nn.Module | str | Path, **options: Any) -> str:
    """The explorer page of ``model`` as an HTML string; options as ``explain``."""
    return render_html(explain(model, **options))


def write_explorer(model: torch.nn.Module | str | Path, output: str | Path, **options: Any
                   ) -> Path:
    """Write the explorer page of ``model`` to ``output`` (``.html``); options as ``explain``.

    Returns:
        The written path.
    """
    output = Path(output)
    if output.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"output must end in .html, got {str(output)!r}")
    page = explain_html(model, **options)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    return output


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))
