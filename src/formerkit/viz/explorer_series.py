"""Explorer pages for the time-series models: what their attention tokens are differs by model
(iTransformer: one token per variate, Liu et al. 2024; PatchTST: patches of one variate, Nie et
al. 2023; HAR and the vanilla forecaster: time steps), so each registers how to label its
tokens with ``@series_explainer(registry_name)``. The series panel draws the input curves (and
forecast) and shades the time span of every token by the focused token's attention."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from formerkit.viz.explorer import (
    AttentionView,
    Axis,
    Explanation,
    describe,
    run_with_attentions,
    softmax_top,
)

SeriesExplainer = Callable[..., Explanation]
_EXPLAINERS: dict[str, SeriesExplainer] = {}


def series_explainer(name: str) -> Callable[[SeriesExplainer], SeriesExplainer]:
    """Register ``fn(model, series, *, top_k, title, subtitle, **options) -> Explanation`` for
    the model registered as ``name``."""

    def decorator(fn: SeriesExplainer) -> SeriesExplainer:
        _EXPLAINERS[name] = fn
        return fn

    return decorator


def explain_series(model: torch.nn.Module, series: np.ndarray | torch.Tensor, *,
                   top_k: int = 5, source: str | Path | None = None, **options: Any
                   ) -> Explanation:
    """The ``Explanation`` of a time-series model reading ``series`` (T, C) raw values.

    Options: ``scaler`` (forecasters: an object with ``transform``/``inverse_transform``
    mapping original units to the model's scale; default identity), ``x_mark``/``y_mark``
    (calendar features when the model uses them), ``truth`` (H, C) the true future,
    ``columns`` (variate names), ``true_label`` (HAR: the window's activity).
    """
    name = getattr(model, "registry_name", None)
    if name not in _EXPLAINERS:
        raise ValueError(f"the explorer cannot label the attention tokens of "
                         f"{type(model).__name__} (model {name!r}); supported time-series "
                         f"models: {', '.join(sorted(_EXPLAINERS))}")
    values = np.asarray(series.detach().cpu() if isinstance(series, torch.Tensor) else series,
                        dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"series must be (time, channels), got shape {values.shape}")
    title, subtitle = describe(model, source)
    return _EXPLAINERS[name](model, values, top_k=top_k, title=title, subtitle=subtitle,
                             **options)


def _curves(values: np.ndarray, names: list[str], forecast: np.ndarray | None = None,
            truth: np.ndarray | None = None) -> list[dict[str, Any]]:
    def plain(a: np.ndarray | None, c: int) -> list[float] | None:
        return None if a is None else [round(float(v), 5) for v in a[:, c]]

    return [{"name": name, "values": plain(values, c), "forecast": plain(forecast, c),
             "truth": plain(truth, c)} for c, name in enumerate(names)]


def _names(given: list[str] | None, n: int, fallback: list[str] | None = None) -> list[str]:
    for names in (given, fallback):
        if names is not None and len(names) == n:
            return list(names)
    return [f"var {i}" for i in range(n)]


# ---- forecasters ---------------------------------------------------------------------------
def _forecast(model: torch.nn.Module, values: np.ndarray, scaler: Any,
              x_mark: Any, y_mark: Any) -> tuple[Any, np.ndarray]:
    config = model.config
    if values.shape != (config.seq_len, config.n_vars):
        raise ValueError(f"series must be (seq_len={config.seq_len}, n_vars={config.n_vars}) "
                         f"for {type(model).__name__}, got {values.shape}")
    scaled = scaler.transform(values) if scaler is not None else values
    inputs: dict[str, Any] = {"x": torch.as_tensor(np.asarray(scaled, dtype=np.float32))[None]}
    for key, mark in (("x_mark", x_mark), ("y_mark", y_mark)):
        if mark is not None:
            inputs[key] = torch.as_tensor(np.asarray(mark, dtype=np.float32))[None]
    if config.n_marks and "x_mark" not in inputs:
        raise ValueError(f"{type(model).__name__} was trained with {config.n_marks} calendar "
                         "features: give x_mark (CLI: a CSV with dates, or --window)")
    out = run_with_attentions(model, **inputs)
    prediction = out.prediction[0].float().numpy()  # (H, C)
    if scaler is not None:
        prediction = scaler.inverse_transform(prediction)
    return out, prediction


def _forecast_panel(columns: list[str], prediction: np.ndarray,
                    truth: np.ndarray | None) -> dict[str, Any]:
    text = f"{prediction.shape[0]} steps ahead for {len(columns)} variates (dashed on the curves)"
    if truth is not None:
        mse = float(np.mean((prediction - truth) ** 2))
        text += f"; MSE against the true future {mse:.4g} (original units)"
    return {"kind": "text", "title": "Forecast", "text": text}


@series_explainer("itransformer")
def _itransformer(model: torch.nn.Module, values: np.ndarray, *, top_k: int, title: str,
                  subtitle: str, scaler: Any = None, x_mark: Any = None, y_mark: Any = None,
                  truth: np.ndarray | None = None, columns: list[str] | None = None,
                  **_: Any) -> Explanation:
    config = model.config
    out, prediction = _forecast(model, values, scaler, x_mark, y_mark)
    columns = _names(columns, config.n_vars)
    n_tokens = out.attentions[0].shape[-1]
    labels = columns + [f"calendar {i}" for i in range(n_tokens - len(columns))]
    spans = [(c, 0, config.seq_len) if c < len(columns) else None for c in range(n_tokens)]
    axis = Axis("variate", labels, titles=[f"token {i}: the whole lookback of {name}"
                                            for i, name in enumerate(labels)], spans=spans)
    view = AttentionView("variates", "Variate-by-variate attention",
                         "iTransformer: each token is one variate's whole lookback window; row: "
                         "a variate, columns: the variates it reads", axis, axis,
                         [w[0] for w in out.attentions])
    series = {"x_label": "time step", "curves": _curves(values, columns, prediction, truth)}
    return Explanation(title, subtitle, [("input", f"lookback of {config.seq_len} steps, "
                                                   f"{config.n_vars} variates")],
                       [view], [_forecast_panel(columns, prediction, truth)], series)


@series_explainer("patchtst")
def _patchtst(model: torch.nn.Module, values: np.ndarray, *, top_k: int, title: str,
              subtitle: str, scaler: Any = None, x_mark: Any = None, y_mark: Any = None,
              truth: np.ndarray | None = None, columns: list[str] | None = None,
              **_: Any) -> Explanation:
    config = model.config
    out, prediction = _forecast(model, values, scaler, None, None)
    columns = _names(columns, config.n_vars)
    n_patches = config.n_patches
    views = []
    for c, name in enumerate(columns):
        starts = [p * config.stride for p in range(n_patches)]
        # the last patches run into the end padding (repeats of the last step): clip the span
        spans = [(c, s, min(s + config.patch_len, config.seq_len)) for s in starts]
        axis = Axis(f"{name} patch", [f"p{p}" for p in range(n_patches)],
                    titles=[f"patch {p} of {name}: steps {s}..{s + config.patch_len - 1}"
                            for p, s in enumerate(starts)], spans=spans)
        # the encoder batch is B * C: row c holds variate c of the only sample
        weights = [w[c] for w in out.attentions]
        views.append(AttentionView(f"patches-{c}", f"Patches of {name}",
                                   f"PatchTST: tokens are {config.patch_len}-step patches "
                                   f"(stride {config.stride}) of {name} alone (channel "
                                   "independence); row: a patch, columns: the patches it reads",
                                   axis, axis, weights, curves=[c]))
    series = {"x_label": "time step", "curves": _curves(values, columns, prediction, truth)}
    return Explanation(title, subtitle, [("input", f"lookback of {config.seq_len} steps, "
                                                   f"{config.n_vars} variates")],
                       views, [_forecast_panel(columns, prediction, truth)], series)


@series_explainer("transformer-forecaster")
def _vanilla_forecaster(model: torch.nn.Module, values: np.ndarray, *, top_k: int, title: str,
                        subtitle: str, scaler: Any = None, x_mark: Any = None,
                        y_mark: Any = None, truth: np.ndarray | None = None,
                        columns: list[str] | None = None, **_: Any) -> Explanation:
    config = model.config
    out, prediction = _forecast(model, values, scaler, x_mark, y_mark)
    columns = _names(columns, config.n_vars)
    lookback = Axis("lookback step", [str(t) for t in range(config.seq_len)],
                    spans=[(None, t, t + 1) for t in range(config.seq_len)])
    first = config.seq_len - config.label_len  # the decoder starts label_len steps back
    n_decoder = config.label_len + config.pred_len
    decoder = Axis("decoder step", [str(first + t) for t in range(n_decoder)],
                   spans=[(None, first + t, first + t + 1) for t in range(n_decoder)])
    views = [
        AttentionView("encoder", "Encoder self-attention", "row: a lookback step; columns: "
                      "the lookback steps it reads", lookback, lookback,
                      [w[0] for w in out.encoder_attentions]),
        AttentionView("cross", "Cross-attention", "row: a decoder step (the last label_len "
                      "known steps, then the horizon); columns: the lookback steps it reads",
                      decoder, lookback, [w[0] for w in out.cross_attentions]),
        AttentionView("decoder", "Decoder self-attention", "row: a decoder step; columns: the "
                      "decoder steps before it (causal mask)", decoder, decoder,
                      [w[0] for w in out.attentions]),
    ]
    series = {"x_label": "time step", "curves": _curves(values, columns, prediction, truth)}
    return Explanation(title, subtitle, [("input", f"lookback of {config.seq_len} steps, "
                                                   f"{config.n_vars} variates")],
                       views, [_forecast_panel(columns, prediction, truth)], series)


# ---- activity recognition ------------------------------------------------------------------
@series_explainer("har")
def _har(model: torch.nn.Module, values: np.ndarray, *, top_k: int, title: str, subtitle: str,
         columns: list[str] | None = None, true_label: int | str | None = None,
         **_: Any) -> Explanation:
    config = model.config
    steps = values.shape[0]
    if steps > config.max_seq_len:
        raise ValueError(f"the recording has {steps} steps, longer than the model's context "
                         f"(max_seq_len={config.max_seq_len}); cut a window of at most "
                         f"{config.max_seq_len} steps")
    out = run_with_attentions(model, inputs=torch.as_tensor(values)[None])
    logits = out.logits[0].float()  # (T, n_classes)
    classes = list(config.class_names or [f"class {i}" for i in range(config.n_classes)])
    channels = _names(columns, config.n_channels, config.channel_names)
    axis = Axis("step", [str(t) for t in range(steps)],
                titles=[f"time step {t}" for t in range(steps)],
                spans=[(None, t, t + 1) for t in range(steps)])
    view = AttentionView("steps", "Time-step attention", "each token is one time step of all "
                         "channels; row: a step, columns: the steps it reads", axis, axis,
                         [w[0] for w in out.attentions])
    window = model.window_logits(logits[None])[0]
    window_title = "Window activity" + (f" (true: {_class_label(true_label, classes)})"
                                        if true_label is not None else "")
    predictions = [
        {"kind": "scores", "title": window_title,
         "scores": softmax_top(window, classes, len(classes))},
        {"kind": "per_position", "title": "Step activity", "sequence": "step",
         "note": "the activity the model gives the focused step",
         "positions": {str(t): softmax_top(logits[t], classes, top_k) for t in range(steps)},
         "default": 0},
    ]
    series = {"x_label": "time step", "curves": _curves(values, channels),
              "bands": {"title": "predicted activity per step", "classes": classes,
                        "labels": logits.argmax(dim=-1).tolist()}}
    return Explanation(title, subtitle, [("input", f"{steps} steps of {config.n_channels} "
                                                   "channels")], [view], predictions, series)


def _class_label(label: int | str, classes: list[str]) -> str:
    return classes[label] if isinstance(label, (int, np.integer)) else str(label)
