"""Explorer pages for text models: anything whose forward takes ``input_ids`` and returns
``attentions`` with ``output_attentions=True`` (GPT, BERT and its heads, encoder-decoders,
Llama-style decoders).

What the page predicts is read off the model's outputs, not its class: ``decoder_input_ids``
in the signature means an encoder-decoder (greedy translation, decoder next-token top-k); a
``generate`` method means a causal LM (next-token top-k at every position); vocabulary-sized
per-token logits mean a masked LM (top-k at each ``[MASK]``); (B, n) logits mean label scores;
(B, T, n) logits per-token labels; ``start_logits``/``end_logits`` an answer span.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from formerkit.viz import display_token
from formerkit.viz.explorer import (
    AttentionView,
    Axis,
    Explanation,
    describe,
    run_with_attentions,
    softmax_top,
)


def _token_axis(tokenizer: Any, ids: list[int], sequence: str) -> Axis:
    pieces = [tokenizer.id_to_token(int(i)) or str(int(i)) for i in ids]
    return Axis(sequence, [display_token(p) for p in pieces],
                titles=[f"{sequence} {n}: {p!r} (id {i})"
                        for n, (p, i) in enumerate(zip(pieces, ids))])


def _per_layer(weights: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    return [w[0] for w in weights]  # (H, Tq, Tk) of the only example


def _check_length(model: torch.nn.Module, n_tokens: int, what: str) -> None:
    limit = getattr(model.config, "max_seq_len", None)
    if limit is not None and n_tokens > limit:
        raise ValueError(f"{what} is {n_tokens} tokens, longer than the model's context "
                         f"(max_seq_len={limit}); shorten it")


def explain_text(model: torch.nn.Module, tokenizer: Any, text: str | None, *,
                 pair: str | None = None, target: str | None = None, top_k: int = 5,
                 max_new_tokens: int = 40, source: str | Path | None = None) -> Explanation:
    """The ``Explanation`` of a text model reading ``text`` (and ``pair``); see
    ``formerkit.viz.explorer.explain``."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{type(model).__name__} reads text: give a non-empty text (CLI "
                         "--text)")
    parameters = inspect.signature(model.forward).parameters
    seq2seq = "decoder_input_ids" in parameters
    causal = not seq2seq and callable(getattr(model, "generate", None))
    if pair is not None and "token_type_ids" not in parameters:
        raise ValueError(f"{type(model).__name__} takes no sentence pairs (no "
                         "token_type_ids): drop --pair")
    if target is not None and not seq2seq:
        raise ValueError(f"--target is for encoder-decoders; {type(model).__name__} is not one")
    encoded = tokenizer.encode_batch([text], None if pair is None else [pair], truncation=False,
                                     padding=False, return_tensors=False,
                                     add_special_tokens=not causal)
    ids, types = encoded["input_ids"][0], encoded["token_type_ids"][0]
    if not ids:
        raise ValueError(f"text {text!r} encodes to no tokens")
    _check_length(model, len(ids), "the text" if pair is None else "the text and pair")
    title, subtitle = describe(model, source)
    lines = [("text", text)] + ([("pair", pair)] if pair is not None else [])
    input_ids = torch.tensor([ids])
    if seq2seq:
        return _seq2seq(model, tokenizer, input_ids, target, title, subtitle, lines,
                        top_k=top_k, max_new_tokens=max_new_tokens)
    inputs: dict[str, torch.Tensor] = {"input_ids": input_ids}
    if pair is not None:
        inputs["token_type_ids"] = torch.tensor([types])
    out = run_with_attentions(model, **inputs)
    axis = _token_axis(tokenizer, ids, "token")
    weights = _per_layer(out.attentions)
    note = ("row: a token (query); columns: the tokens it reads (keys)"
            + (", earlier ones only (causal mask)" if _is_causal(weights) else ""))
    views = [AttentionView("self", "Self-attention", note, axis, axis, weights)]
    predictions = _predictions(model, tokenizer, out, ids, causal=causal, top_k=top_k,
                               pairs="next_sentence_label" in parameters)
    return Explanation(title, subtitle, lines, views, predictions)


def _is_causal(weights: list[torch.Tensor]) -> bool:
    """Whether no query reads a later key (read off the weights, whatever the model)."""
    n = weights[0].shape[-1]
    if n < 2:
        return False
    later = torch.ones(n, n, dtype=torch.bool).triu(diagonal=1)
    return all(float(w[:, later].abs().max()) == 0.0 for w in weights)


def _vocab_label(tokenizer: Any):
    def label(i: int) -> str:
        return display_token(tokenizer.id_to_token(i) or str(i))

    return label


def _class_names(model: torch.nn.Module, n: int) -> list[str]:
    names = getattr(model.config, "class_names", None)
    return list(names) if names and len(names) == n else [f"label {i}" for i in range(n)]


def _predictions(model: torch.nn.Module, tokenizer: Any, out: Any, ids: list[int], *,
                 causal: bool, top_k: int, pairs: bool = False) -> list[dict[str, Any]]:
    """Prediction panels read off the output fields (see the module docstring); ``pairs``:
    the model takes a ``next_sentence_label``, so its (B, 2) logits are is-next scores."""
    vocab = getattr(model.config, "vocab_size", None)
    token_logits = getattr(out, "prediction_logits", None)
    logits = getattr(out, "logits", None)
    if token_logits is None and logits is not None and logits.dim() == 3 \
            and logits.shape[-1] == vocab:
        token_logits = logits
        logits = None
    panels: list[dict[str, Any]] = []
    if token_logits is not None:
        label = _vocab_label(tokenizer)
        if causal:
            positions = range(len(ids))
            panels.append({"kind": "per_position", "title": "Next token", "sequence": "token",
                           "note": "what the model predicts right after the focused token",
                           "positions": {str(i): softmax_top(token_logits[0, i], label, top_k)
                                         for i in positions},
                           "default": len(ids) - 1})
        else:
            mask_id = getattr(tokenizer, "mask_token_id", None)
            masked = [i for i, t in enumerate(ids) if mask_id is not None and t == mask_id]
            note = ("what the masked-LM head puts at each [MASK]" if masked else
                    "no [MASK] in the text: what the masked-LM head puts at every position")
            positions = masked or range(len(ids))
            panels.append({"kind": "per_position", "title": "Masked token", "sequence": "token",
                           "note": note,
                           "positions": {str(i): softmax_top(token_logits[0, i], label, top_k)
                                         for i in positions},
                           "default": (masked or [0])[0]})
    relationship = getattr(out, "seq_relationship_logits", None)
    if relationship is not None:
        panels.append({"kind": "scores", "title": "Next sentence",
                       "scores": softmax_top(relationship[0], ["is next", "random"], 2)})
    if logits is not None and logits.dim() == 2 and pairs and logits.shape[-1] == 2:
        panels.append({"kind": "scores", "title": "Next sentence",
                       "scores": softmax_top(logits[0], ["is next", "random"], 2)})
    elif logits is not None and logits.dim() == 2:
        if logits.shape[-1] == 1:
            panels.append({"kind": "text", "title": "Regression output",
                           "text": f"{float(logits[0, 0]):.4f}"})
        else:
            names = _class_names(model, logits.shape[-1])
            panels.append({"kind": "scores", "title": "Label scores",
                           "scores": softmax_top(logits[0], names, logits.shape[-1])})
    elif logits is not None and logits.dim() == 3:
        names = _class_names(model, logits.shape[-1])
        panels.append({"kind": "per_position", "title": "Token label", "sequence": "token",
                       "note": "the label the model gives the focused token",
                       "positions": {str(i): softmax_top(logits[0, i], names, top_k)
                                     for i in range(len(ids))}, "default": 0})
    start, end = getattr(out, "start_logits", None), getattr(out, "end_logits", None)
    if start is not None and end is not None:
        span_start, span_end = int(start[0].argmax()), int(end[0].argmax())
        answer = tokenizer.decode(ids[span_start:span_end + 1]) if span_end >= span_start \
            else ""
        panels.append({"kind": "text", "title": "Answer span",
                       "text": f"tokens {span_start}..{span_end}: {answer!r}"})
    if not panels:
        panels.append({"kind": "text", "title": "Prediction",
                       "text": f"{type(model).__name__} has no prediction head (hidden states "
                               "only)"})
    return panels


def _seq2seq(model: torch.nn.Module, tokenizer: Any, input_ids: torch.Tensor,
             target: str | None, title: str, subtitle: str, lines: list[tuple[str, str]], *,
             top_k: int, max_new_tokens: int) -> Explanation:
    """Encoder self-, decoder self- and cross-attention over the greedy translation (or the
    given ``target``), with the decoder's next-token top-k at every target position."""
    start = model.config.decoder_start_token_id
    if target is not None:
        decoder_ids = torch.tensor([[start] + tokenizer.encode(target)])
        lines.append(("target", target))
    else:
        limit = getattr(model.config, "max_seq_len", None)
        new_tokens = min(max_new_tokens, limit - 1) if limit else max_new_tokens
        was_training = model.training
        model.eval()  # no dropout in the greedy translation
        try:
            with torch.no_grad():
                decoder_ids = model.generate(input_ids, max_new_tokens=new_tokens)
        finally:
            model.train(was_training)
        lines.append(("translation (greedy)", tokenizer.decode(decoder_ids[0].tolist())))
    _check_length(model, decoder_ids.shape[1], "the target")
    out = run_with_attentions(model, input_ids=input_ids, decoder_input_ids=decoder_ids)
    source_axis = _token_axis(tokenizer, input_ids[0].tolist(), "source")
    target_axis = _token_axis(tokenizer, decoder_ids[0].tolist(), "target")
    views = [
        AttentionView("cross", "Cross-attention", "row: a target token (decoder query); "
                      "columns: the source tokens it reads", target_axis, source_axis,
                      _per_layer(out.cross_attentions)),
        AttentionView("decoder", "Decoder self-attention", "row: a target token; columns: "
                      "the target tokens before it (causal mask)", target_axis, target_axis,
                      _per_layer(out.attentions)),
        AttentionView("encoder", "Encoder self-attention", "row: a source token; columns: "
                      "the source tokens it reads", source_axis, source_axis,
                      _per_layer(out.encoder_attentions)),
    ]
    label = _vocab_label(tokenizer)
    n_target = decoder_ids.shape[1]
    predictions = [
        {"kind": "text", "title": "Translation", "text": lines[-1][1]},
        {"kind": "per_position", "title": "Next target token", "sequence": "target",
         "note": "what the decoder predicts right after the focused target token",
         "positions": {str(i): softmax_top(out.logits[0, i], label, top_k)
                       for i in range(n_target)}, "default": 0},
    ]
    return Explanation(title, subtitle, lines, views, predictions)
