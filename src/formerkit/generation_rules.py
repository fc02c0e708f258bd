"""The HuggingFace ``generate()`` options beyond sampling and beams: ``min_new_tokens``,
``no_repeat_ngram_size`` (Paulus et al. 2018), ``min_p`` (Nguyen et al. 2024), stopping
criteria and stop strings, the ``return_dict_in_generate`` output, and ``generation_config=``.

Each processor follows the transformers class of the same role (``MinNewTokensLength-
LogitsProcessor``, ``NoRepeatNGramLogitsProcessor``, ``MinPLogitsWarper``,
``StopStringCriteria``) so that the same weights decode to the same tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

StoppingCriterion = Callable[..., Any]


@dataclasses.dataclass
class GenerateOutput:
    """``generate(..., return_dict_in_generate=True)``, as transformers'
    ``GenerateDecoderOnlyOutput`` / ``GenerateBeamDecoderOnlyOutput``.

    Attributes:
        sequences: (B * num_return_sequences, T) ids, as ``generate`` returns them.
        scores: with ``output_scores``: one (N, V) tensor per step, the scores the token was
            chosen from (after repetition penalty, temperature, top-k/top-p/min-p, ...).
        logits: with ``output_logits``: one (N, V) tensor per step, the raw logits.
        sequences_scores: beam search: (B * num_return_sequences,) length-normalised log
            probability of each returned beam.
    """

    sequences: torch.Tensor
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    sequences_scores: torch.Tensor | None = None

    def __getitem__(self, key: str | int) -> Any:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if getattr(self, f.name) is not None}
        return list(values.values())[key] if isinstance(key, int) else values[key]


# ---- logits processors ----------------------------------------------------------------------

def suppress_eos(scores: torch.Tensor, eos: list[int]) -> torch.Tensor:
    """``min_new_tokens``: end-of-sequence ids cannot be chosen yet."""
    scores = scores.clone()
    scores[:, eos] = float("-inf")
    return scores


def ban_repeated_ngrams(scores: torch.Tensor, sequences: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid every token that would complete an n-gram already in its row (prompt included,
    as transformers does)."""
    length = sequences.shape[1]
    if length + 1 < n:
        return scores
    banned_rows, banned_ids = [], []
    for row, tokens in enumerate(sequences.tolist()):
        prefix = tuple(tokens[length - n + 1:]) if n > 1 else ()
        seen = {tokens[i + n - 1] for i in range(length - n + 1)
                if tuple(tokens[i:i + n - 1]) == prefix}
        banned_rows += [row] * len(seen)
        banned_ids += sorted(seen)
    if banned_rows:
        scores = scores.clone()
        scores[banned_rows, banned_ids] = float("-inf")
    return scores


def min_p_filter(scores: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below ``min_p`` times the most likely token's (the
    most likely one always stays)."""
    probs = scores.softmax(dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)  # (N, 1)
    return scores.masked_fill(probs < threshold, float("-inf"))


# ---- stopping -------------------------------------------------------------------------------

class StopStrings:
    """Stop a row as soon as a token completes one of ``stop_strings`` in its decoded text
    (the token may overhang the string's end), as transformers' ``StopStringCriteria``.

    Args:
        stop_strings: strings to stop at.
        tokenizer: anything with ``decode(ids, skip_special_tokens=...)``.
    """

    def __init__(self, stop_strings: Sequence[str], tokenizer: Any) -> None:
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        if not stop_strings or not all(isinstance(s, str) and s for s in stop_strings):
            raise ValueError(f"stop_strings must be non-empty strings, got {stop_strings!r}")
        if tokenizer is None or not hasattr(tokenizer, "decode"):
            raise ValueError("stop_strings needs a tokenizer to read the text: pass "
                             "tokenizer=... (or use a model that carries one)")
        self.stop_strings = list(stop_strings)
        self.tokenizer = tokenizer
        # every token decodes to at least one character, or nothing (special tokens): this
        # window of tokens always covers the longest string plus an overhanging token
        self.window = max(len(s) for s in self.stop_strings) + 2

    def __call__(self, sequences: torch.Tensor, scores: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        done = []
        for tokens in sequences[:, -self.window:].tolist():
            text = self.tokenizer.decode(tokens, skip_special_tokens=False)
            before = self.tokenizer.decode(tokens[:-1], skip_special_tokens=False)
            done.append(any(s in text and text.rfind(s) + len(s) > len(before)
                            for s in self.stop_strings))
        return torch.tensor(done, dtype=torch.bool, device=sequences.device)


def stopping_rules(stopping_criteria: Any, stop_strings: Any, tokenizer: Any
                   ) -> list[StoppingCriterion]:
    """The callables ``(sequences, scores) -> bool or (N,) bool`` that end rows: the given
    ``stopping_criteria`` (one callable, a list, or transformers' ``StoppingCriteriaList``)
    and the ``stop_strings``."""
    rules: list[StoppingCriterion] = []
    if stopping_criteria is not None:
        items = [stopping_criteria] if callable(stopping_criteria) and \
            not isinstance(stopping_criteria, (list, tuple)) else list(stopping_criteria)
        for item in items:
            if not callable(item):
                raise ValueError(f"stopping_criteria must be callables (sequences, scores) -> "
                                 f"bool tensor, got {type(item).__name__}")
        rules += items
    if stop_strings is not None:
        rules.append(StopStrings(stop_strings, tokenizer))
    return rules


def rows_done(result: Any, rows: int, device: torch.device) -> torch.Tensor:
    """A criterion's answer as (N,) bool: a tensor per row, or one bool for all rows."""
    if isinstance(result, torch.Tensor):
        result = result.to(device=device, dtype=torch.bool).reshape(-1)
        return result.expand(rows) if result.numel() == 1 else result
    return torch.full((rows,), bool(result), dtype=torch.bool, device=device)


# ---- generation_config= ---------------------------------------------------------------------

def config_values(generation_config: Any, known: Sequence[str]) -> dict[str, Any]:
    """The settings in a ``generation_config`` (a dict, or transformers' ``GenerationConfig``:
    only the values it changes from its defaults are taken)."""
    if generation_config is None:
        return {}
    if hasattr(generation_config, "to_diff_dict"):
        values = generation_config.to_diff_dict()
    elif hasattr(generation_config, "to_dict"):
        values = generation_config.to_dict()
    elif isinstance(generation_config, dict):
        values = dict(generation_config)
    else:
        raise TypeError(f"generation_config must be a dict or a GenerationConfig, got "
                        f"{type(generation_config).__name__}")
    values = {k: v for k, v in values.items()
              if not k.startswith("_") and k != "transformers_version"}
    # ids a model config also carries, and flags without an effect here
    ignored = {"bos_token_id", "decoder_start_token_id", "use_cache", "output_attentions",
               "output_hidden_states", "forced_eos_token_id", "forced_bos_token_id"}
    unknown = sorted(k for k, v in values.items()
                     if k not in known and k not in ignored and v is not None)
    if unknown:
        raise ValueError(f"generation_config sets {unknown}, which formerkit's generate does "
                         f"not support; supported: {sorted(known)}")
    return {k: v for k, v in values.items() if k in known}
