"""Autoregressive decoding shared by every generating model: greedy, sampling with temperature /
top-k / nucleus top-p (Holtzman et al. 2020), repetition penalty (Keskar et al. 2019) and beam
search with a length penalty (Wu et al. 2016), following HuggingFace ``generate()`` exactly;
``min_new_tokens``, ``no_repeat_ngram_size``, ``min_p``, stopping criteria, stop strings,
streamers, ``num_return_sequences``, ``return_dict_in_generate`` and ``generation_config=`` as
transformers has them (the processors live in ``formerkit.generation_rules``).

The decoding loop is model-agnostic. A model subclasses ``GenerationMixin`` and implements two
methods (see ``GenerationMixin.start_decoding`` and ``decoding_logits``): the loop asks the model
to prepare a ``DecodingState`` (KV cache, attention mask, model-specific tensors) and then for
the next-token logits of the tokens it has not seen yet. The model runs its LM head on the last
position only; the loop picks tokens, handles end-of-sequence and padding, and reorders the state
for beam search.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from formerkit.config import suggest
from formerkit.generation_rules import (
    GenerateOutput,
    ban_repeated_ngrams,
    config_values,
    min_p_filter,
    rows_done,
    stopping_rules,
    suppress_eos,
)
from formerkit.nn.cache import KVCache

__all__ = ["DecodingState", "GenerateOutput", "GenerationMixin", "GenerationSettings",
           "generate", "stream"]


class DecodingState:
    """What a model keeps between decoding steps.

    Attributes:
        cache: the decoder's self-attention ``KVCache`` (written in place).
        attention_mask: (N, Tk) 1 = token, 0 = padding, growing by one column per step; ``None``
            when nothing is padded (so the model can take the fused causal path).
        extras: model-specific state. Every tensor in it has the N decoding rows first and is
            reordered with them; a ``KVCache`` in it too. Other values (e.g. GPT's gathered
            decoding weights) hold no per-row state and are kept.
        per_input: names of extras that are equal for every copy of one input (an encoder's
            output and source masks). Beam search moves rows only among the copies of one
            input, so these, and the cache's cross-attention keys and values, are not moved.
    """

    def __init__(self, cache: KVCache | None = None, attention_mask: torch.Tensor | None = None,
                 extras: dict[str, Any] | None = None, per_input: tuple[str, ...] = ()) -> None:
        self.cache = cache
        self.attention_mask = attention_mask
        self.extras: dict[str, Any] = {} if extras is None else extras
        self.per_input = frozenset(per_input)

    def reorder(self, index: torch.Tensor) -> None:
        """Select rows (beam search): row i becomes old row ``index[i]``, one of the copies of
        the same input. index: (N,) long."""
        if torch.equal(index, torch.arange(index.shape[0], device=index.device)):
            return  # every beam continues in its own row (about a third of the steps)
        if self.cache is not None:
            self.cache.reorder(index, cross=False)
        if self.attention_mask is not None:
            self.attention_mask = self.attention_mask.index_select(0, index)
        for key, value in self.extras.items():
            if key in self.per_input:
                continue
            if isinstance(value, torch.Tensor):
                self.extras[key] = value.index_select(0, index)
            elif isinstance(value, KVCache):
                value.reorder(index)


@dataclasses.dataclass
class GenerationSettings:
    """Validated decoding settings (token ids resolved from the model's generation config).

    ``max_new_tokens`` left ``None`` becomes ``max_length`` minus the decoder's starting
    length (the prompt, or the one start token of seq2seq), else 20, as in transformers.
    ``stopping_criteria``, ``stop_strings`` + ``tokenizer`` and ``streamer`` are the objects
    transformers takes (a streamer gets ``put(start ids)``, ``put(tokens)`` per step, ``end()``).
    """

    max_new_tokens: int | None = None
    max_length: int | None = None
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    num_return_sequences: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    eos_token_id: list[int] | None = None
    pad_token_id: int | None = None
    return_dict_in_generate: bool = False
    output_scores: bool = False
    output_logits: bool = False
    stopping_criteria: Any = None
    stop_strings: Any = None
    tokenizer: Any = None
    streamer: Any = None

    def validate(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, "
                             f"got {self.max_new_tokens!r}")
        for name in ("min_new_tokens", "no_repeat_ngram_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.do_sample and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature!r}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None, got {self.top_k!r}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        if not isinstance(self.num_beams, int) or self.num_beams < 1:
            raise ValueError(f"num_beams must be a positive integer, got {self.num_beams!r}")
        n = self.num_return_sequences
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"num_return_sequences must be a positive integer, got {n!r}")
        if n > 1 and self.num_beams == 1 and not self.do_sample:
            raise ValueError(f"num_return_sequences={n} with greedy decoding would return {n} "
                             "identical rows: pass do_sample=True or num_beams >= "
                             f"{n}")
        if n > self.num_beams > 1:
            raise ValueError(f"num_return_sequences={n} must be at most num_beams="
                             f"{self.num_beams}")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', "
                             f"got {self.early_stopping!r}")
        if self.num_beams > 1:
            unsupported = [name for name in ("stopping_criteria", "stop_strings", "streamer")
                           if getattr(self, name) is not None]
            if self.output_scores or self.output_logits:
                unsupported.append("output_scores/output_logits")
            if unsupported:
                raise ValueError(f"{', '.join(unsupported)} work with greedy decoding and "
                                 f"sampling, not with beam search (num_beams={self.num_beams})")

    @property
    def processes_scores(self) -> bool:
        """Whether any logits processor is on (greedy decoding without one takes argmax of
        the raw logits)."""
        return self.do_sample or self.repetition_penalty != 1.0 or self.min_new_tokens > 0 \
            or self.no_repeat_ngram_size > 0


SETTING_NAMES = tuple(f.name for f in dataclasses.fields(GenerationSettings))


class GenerationMixin:
    """Gives a model ``generate`` and ``stream``. The model implements ``start_decoding`` and
    ``decoding_logits``; token-id defaults come from ``self.generation_config`` (a dict, saved as
    generation_config.json) and then from ``self.config``."""

    def start_decoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *,
                       expand: int, max_new_tokens: int) -> tuple[torch.Tensor, DecodingState]:
        """Prepare decoding for every input row repeated ``expand`` times (beams): row
        ``i * expand + j`` is copy j of input row i.

        Args:
            input_ids: (B, T) prompt (decoder-only, possibly left-padded) or source (seq2seq).
            attention_mask: (B, T) 1 = token, 0 = padding, or ``None``.
            expand: copies per row.
            max_new_tokens: tokens that will be generated at most (size the cache with it and
                raise ``ValueError`` if the model's context cannot hold them).

        Returns:
            (sequences (B * expand, T0), state): the decoder's starting tokens (the prompt, or a
            column of ``decoder_start_token_id``) and the state ``decoding_logits`` will use.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement start_decoding")

    def decoding_logits(self, state: DecodingState, new_tokens: torch.Tensor) -> torch.Tensor:
        """Feed the tokens the model has not seen yet (the first call: all of ``sequences``;
        then one column (N, 1)), update the state in place and return float logits (N, V) for
        the last position only."""
        raise NotImplementedError(f"{type(self).__name__} does not implement decoding_logits")

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 *, generation_config: Any = None, generator: torch.Generator | None = None,
                 seed: int | None = None, **kwargs: Any) -> torch.Tensor | GenerateOutput:
        """Decode new tokens as transformers' ``generate``; see
        ``formerkit.generation.generate`` for the arguments (``max_new_tokens=20``,
        ``do_sample=False``, ``temperature``, ``top_k``, ``top_p``, ``min_p``,
        ``repetition_penalty``, ``no_repeat_ngram_size``, ``num_beams``, ``length_penalty``,
        ``early_stopping``, ``eos_token_id``, ``pad_token_id``, ``max_length``,
        ``min_new_tokens``, ``num_return_sequences``, ``return_dict_in_generate``,
        ``output_scores``, ``output_logits``, ``stopping_criteria``, ``stop_strings``,
        ``tokenizer``, ``streamer``)."""
        return generate(self, input_ids, attention_mask, generation_config=generation_config,
                        generator=generator, seed=seed, **kwargs)

    def stream(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               **kwargs: Any) -> Iterator[torch.Tensor]:
        """Yield the (B,) new tokens of each step; see ``formerkit.generation.stream``."""
        return stream(self, input_ids, attention_mask, **kwargs)


def _token_default(model: Any, name: str) -> Any:
    saved = getattr(model, "generation_config", None) or {}
    if saved.get(name) is not None:
        return saved[name]
    return getattr(getattr(model, "config", None), name, None)


def _settings(model: Any, input_ids: torch.Tensor, generation_config: Any,
              kwargs: dict[str, Any]) -> GenerationSettings:
    unknown = sorted(set(kwargs) - set(SETTING_NAMES))
    if unknown:
        hint = suggest(unknown[0], list(SETTING_NAMES))
        raise ValueError(f"generate() got unknown arguments {unknown}{hint}")
    values = {**config_values(generation_config, SETTING_NAMES), **kwargs}
    settings = GenerationSettings(**values)
    if settings.max_new_tokens is None:
        if settings.max_length is not None:
            start = 1 if _is_encoder_decoder(model) else input_ids.shape[1]
            if settings.max_length <= start:
                raise ValueError(f"max_length={settings.max_length} leaves no room for new "
                                 f"tokens after the {start} starting tokens; raise it or "
                                 "pass max_new_tokens")
            settings.max_new_tokens = settings.max_length - start
        else:
            settings.max_new_tokens = 20
    eos = settings.eos_token_id if settings.eos_token_id is not None \
        else _token_default(model, "eos_token_id")
    if isinstance(eos, int):
        eos = [eos]
    settings.eos_token_id = list(eos) if eos is not None and len(eos) > 0 else None
    if settings.pad_token_id is None:
        settings.pad_token_id = _token_default(model, "pad_token_id")
    if settings.pad_token_id is None and settings.eos_token_id is not None:
        settings.pad_token_id = settings.eos_token_id[0]  # as HF: pad with the first eos
    if settings.stop_strings is not None and settings.tokenizer is None:
        settings.tokenizer = getattr(model, "tokenizer", None)
    settings.validate()
    return settings


def _is_encoder_decoder(model: Any) -> bool:
    flag = getattr(model, "is_encoder_decoder", None)
    if flag is not None:
        return bool(flag)
    return hasattr(getattr(model, "config", None), "n_encoder_layers")


def _check_inputs(input_ids: Any, attention_mask: Any) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids)
        raise ValueError(f"input_ids must be a (B, T) tensor of token ids, got {shape}")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)}): give a prompt of "
                         "at least one token")
    if attention_mask is not None:
        if tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                             f"the shape of input_ids {tuple(input_ids.shape)}")
        empty = (attention_mask == 0).all(dim=1)
        if bool(empty.any()):
            row = int(empty.nonzero()[0, 0])
            raise ValueError(f"attention_mask row {row} has no tokens: every prompt must hold at "
                             "least one token")


def _check_vocabulary(model: Any, input_ids: torch.Tensor) -> None:
    # An id past the embedding is otherwise an IndexError deep inside the forward pass (e.g. a
    # tokenizer larger than the model's vocabulary).
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
    if not isinstance(vocab_size, int):
        return
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"input_ids holds token id {bad}, outside the model's vocabulary of "
                         f"{vocab_size} ids (does the tokenizer belong to this model?)")


def _prepare(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
             generator: torch.Generator | None, seed: int | None, generation_config: Any,
             kwargs: dict[str, Any]
             ) -> tuple[GenerationSettings, torch.Generator | None]:
    _check_inputs(input_ids, attention_mask)
    _check_vocabulary(model, input_ids)
    settings = _settings(model, input_ids, generation_config, kwargs)
    if seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    return settings, generator


def _prompt_padding(model: Any, attention_mask: torch.Tensor | None, copies: int
                    ) -> torch.Tensor | None:
    """(N,) left-padding width of each decoder-only prompt (HF leaves it out of the
    repetition penalty); ``None`` for seq2seq or without a mask."""
    if attention_mask is None or _is_encoder_decoder(model):
        return None
    padding = (attention_mask != 0).int().argmax(dim=1)
    return padding.repeat_interleave(copies, 0) if copies > 1 else padding


def _expand(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, copies: int
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each row ``copies`` times in a row (``num_return_sequences`` samples of a prompt)."""
    if copies == 1:
        return input_ids, attention_mask
    mask = attention_mask.repeat_interleave(copies, 0) if attention_mask is not None else None
    return input_ids.repeat_interleave(copies, 0), mask


def generate(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
             generation_config: Any = None, generator: torch.Generator | None = None,
             seed: int | None = None, **kwargs: Any) -> torch.Tensor | GenerateOutput:
    """Generate with ``model`` (a ``GenerationMixin``), token for token as HF ``generate()``.

    Args:
        input_ids: (B, T) prompt ids (left-padded for decoder-only batches) or source ids.
        attention_mask: (B, T) 1 = token, 0 = padding; position ids follow from it.
        generation_config: a dict or a transformers ``GenerationConfig`` whose values replace
            the defaults; keyword arguments replace those in turn.
        generator / seed: random source for sampling (a seed makes a fresh generator).
        **kwargs: ``GenerationSettings`` fields: max_new_tokens (default 20) or max_length
            (prompt included), min_new_tokens, do_sample, temperature, top_k, top_p, min_p,
            repetition_penalty, no_repeat_ngram_size, num_beams, num_return_sequences,
            length_penalty, early_stopping (True, False or "never", as HF), eos_token_id (int
            or list; default from the generation config), pad_token_id (default from the
            generation config, else the first eos), stopping_criteria (callables
            ``(sequences, scores) -> bool or (N,) bool``, e.g. a transformers
            ``StoppingCriteriaList``), stop_strings (with ``tokenizer=``, default the
            model's), streamer (``put``/``end``, e.g. transformers' ``TextStreamer``),
            return_dict_in_generate, output_scores, output_logits.

    Returns:
        (B * num_return_sequences, T0 + n) ids: the decoder's start (the prompt for
        decoder-only models, ``decoder_start_token_id`` for seq2seq) followed by at most
        ``max_new_tokens`` new ids; rows that ended early are padded with ``pad_token_id``.
        With ``return_dict_in_generate``: a ``GenerateOutput`` holding them as ``sequences``
        (and ``scores``, ``logits``, ``sequences_scores`` as requested).
    """
    settings, generator = _prepare(model, input_ids, attention_mask, generator, seed,
                                   generation_config, kwargs)
    with torch.inference_mode():
        if settings.num_beams > 1:
            sequences, beam_scores = _beam_search(model, input_ids, attention_mask, settings,
                                                  generator)
            if settings.return_dict_in_generate:
                return GenerateOutput(sequences, sequences_scores=beam_scores)
            return sequences
        input_ids, attention_mask = _expand(input_ids, attention_mask,
                                            settings.num_return_sequences)
        scores: list[torch.Tensor] | None = [] if settings.output_scores else None
        logits: list[torch.Tensor] | None = [] if settings.output_logits else None
        result = None
        for _, result in _decode(model, input_ids, attention_mask, settings, generator,  # noqa: B007
                                 scores_out=scores, logits_out=logits):
            pass
        if settings.return_dict_in_generate:
            return GenerateOutput(result, scores=None if scores is None else tuple(scores),
                                  logits=None if logits is None else tuple(logits))
        return result


def stream(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
           generation_config: Any = None, generator: torch.Generator | None = None,
           seed: int | None = None, **kwargs: Any) -> Iterator[torch.Tensor]:
    """Yield the new tokens (B,) of each step as they are decoded (greedy or sampling; rows that
    have finished yield ``pad_token_id``). Arguments as ``generate``; ``num_beams`` must be 1."""
    settings, generator = _prepare(model, input_ids, attention_mask, generator, seed,
                                   generation_config, kwargs)
    if settings.num_beams != 1:
        raise ValueError(f"stream() decodes greedily or by sampling; num_beams must be 1, "
                         f"got {settings.num_beams}")
    input_ids, attention_mask = _expand(input_ids, attention_mask,
                                        settings.num_return_sequences)

    def steps() -> Iterator[torch.Tensor]:
        with torch.inference_mode():
            for tokens, _ in _decode(model, input_ids, attention_mask, settings, generator):
                yield tokens

    return steps()


# ---- logits processors (HF order: repetition penalty, then temperature, top-k, top-p) ----------

def _repetition_penalty(scores: torch.Tensor, sequences: torch.Tensor, penalty: float,
                        skip: torch.Tensor | None = None) -> torch.Tensor:
    """Divide positive (multiply negative) scores of every id already in ``sequences``;
    ``skip`` (N,): leading positions to leave out, the left padding of each prompt (as HF)."""
    vocab = scores.shape[-1]
    ids = sequences
    if skip is not None:
        positions = torch.arange(sequences.shape[1], device=sequences.device)
        ids = sequences.masked_fill(positions[None, :] < skip[:, None], vocab)  # (N, T)
    seen = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
    seen.scatter_(1, ids, True)
    penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen[:, :vocab], penalized, scores)


def _top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, scores.shape[-1])
    kth = torch.topk(scores, k)[0][..., -1, None]  # (N, 1)
    return scores.masked_fill(scores < kth, float("-inf"))


def _top_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of ids whose probability reaches p (at least one)."""
    sorted_scores, order = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - p)
    remove[..., -1:] = False
    remove = remove.scatter(1, order, remove)
    return scores.masked_fill(remove, float("-inf"))


def _process(scores: torch.Tensor, sequences: torch.Tensor, s: GenerationSettings,
             generated: int, padding: torch.Tensor | None = None) -> torch.Tensor:
    """``generated``: tokens decoded so far (``min_new_tokens`` counts them); ``padding``
    (N,): left padding of each row's prompt, which the repetition penalty skips."""
    if s.repetition_penalty != 1.0:
        scores = _repetition_penalty(scores, sequences, s.repetition_penalty, padding)
    if s.no_repeat_ngram_size:
        scores = ban_repeated_ngrams(scores, sequences, s.no_repeat_ngram_size)
    if s.min_new_tokens and generated < s.min_new_tokens and s.eos_token_id:
        scores = suppress_eos(scores, s.eos_token_id)
    if s.do_sample:
        if s.temperature != 1.0:
            scores = scores / s.temperature
        if s.top_k is not None:
            scores = _top_k(scores, s.top_k)
        if s.top_p is not None and s.top_p < 1.0:
            scores = _top_p(scores, s.top_p)
        if s.min_p is not None and s.min_p > 0.0:
            scores = min_p_filter(scores, s.min_p)
    return scores


# ---- greedy and sampling -------------------------------------------------------------------

def _decode(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
            s: GenerationSettings, generator: torch.Generator | None, *,
            scores_out: list[torch.Tensor] | None = None,
            logits_out: list[torch.Tensor] | None = None
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (new tokens (N,), sequences so far (N, T0 + step + 1)) for each step."""
    start, state = model.start_decoding(input_ids, attention_mask, expand=1,
                                        max_new_tokens=s.max_new_tokens)
    rows, start_len = start.shape
    padding = _prompt_padding(model, attention_mask, 1)
    fill = s.pad_token_id if s.pad_token_id is not None else 0
    # Preallocated output, written in place: no torch.cat per step.
    sequences = start.new_full((rows, start_len + s.max_new_tokens), fill)
    sequences[:, :start_len] = start
    eos = torch.tensor(s.eos_token_id, device=start.device) if s.eos_token_id else None
    rules = stopping_rules(s.stopping_criteria, s.stop_strings, s.tokenizer)
    track = eos is not None or bool(rules)  # rows can finish before max_new_tokens
    unfinished = torch.ones(rows, dtype=torch.bool, device=start.device)
    streamer = s.streamer
    if streamer is not None:
        streamer.put(start.cpu())
    new_tokens = start
    for step in range(s.max_new_tokens):
        length = start_len + step
        logits = model.decoding_logits(state, new_tokens)
        scores = _process(logits, sequences[:, :length], s, step, padding) \
            if s.processes_scores else logits
        if logits_out is not None:
            logits_out.append(logits.clone())
        if scores_out is not None:
            scores_out.append(scores.clone())
        if s.do_sample:
            probs = torch.softmax(scores, dim=-1)
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (N,)
        else:
            tokens = scores.argmax(dim=-1)  # (N,)
        if track and s.pad_token_id is not None:
            tokens = torch.where(unfinished, tokens, s.pad_token_id)
        sequences[:, length] = tokens
        if streamer is not None:
            streamer.put(tokens.cpu())
        yield tokens, sequences[:, :length + 1]
        if track:
            if eos is not None:
                unfinished &= ~torch.isin(tokens, eos)
            for rule in rules:
                unfinished &= ~rows_done(rule(sequences[:, :length + 1], scores), rows,
                                         start.device)
            if not bool(unfinished.any()):
                break
        new_tokens = tokens.unsqueeze(1)  # (N, 1)
    if streamer is not None:
        streamer.end()


# ---- beam search (HF's vectorised algorithm: same candidates, scores and stopping) ----------

def _gather_beams(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select along the beam dim 1 of (B, beams, ...) with index (B, k)."""
    while index.dim() < tensor.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(tensor, index, dim=1)


def _top_candidates(scores: torch.Tensor, k: int, chunk: int = 128
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(scores, k)`` over (B, N) scores, in about half its time on a CPU for beam
    search's N = beams * vocab (the CPU top-k kernel is scalar): the top k lie in the k chunks
    of ``chunk`` scores with the largest maxima, so one vectorised max per chunk leaves a
    top-k over k * chunk scores. Values are equal to ``torch.topk``'s; so are ids, except
    among exactly tied scores. Other devices call ``torch.topk``."""
    batch, n = scores.shape
    chunks = n // chunk
    if n % chunk or chunks < 4 * k or scores.device.type != "cpu":
        return torch.topk(scores, k)
    grouped = scores.view(batch, chunks, chunk)
    best_chunks = torch.topk(grouped.amax(dim=-1), k).indices  # (B, k)
    candidates = grouped.gather(1, best_chunks[:, :, None].expand(batch, k, chunk))
    values, position = torch.topk(candidates.view(batch, k * chunk), k)
    ids = best_chunks.gather(1, position // chunk) * chunk + position % chunk
    return values, ids


def _beam_search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 s: GenerationSettings, generator: torch.Generator | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequences (B * num_return_sequences, T), their scores (B * num_return_sequences,))."""
    beams, batch = s.num_beams, input_ids.shape[0]
    start, state = model.start_decoding(input_ids, attention_mask, expand=beams,
                                        max_new_tokens=s.max_new_tokens)
    device, prompt_len = start.device, start.shape[1]
    padding = _prompt_padding(model, attention_mask, beams)
    max_length = prompt_len + s.max_new_tokens
    eos = torch.tensor(s.eos_token_id, device=device) if s.eos_token_id else None
    # Keep enough candidates that `beams` of them are still running when some end with eos.
    keep = max(2, 1 + (len(s.eos_token_id) if eos is not None else 0)) * beams
    top_beam_mask = torch.arange(keep, device=device) < beams
    # HF fills unused positions with `pad or eos[0]` (so a pad id of 0 becomes eos), -1 without eos
    fill = (s.pad_token_id or s.eos_token_id[0]) if eos is not None else -1
    running = start.new_full((batch, beams, max_length), fill)
    running[:, :, :prompt_len] = start.view(batch, beams, prompt_len)
    finished_seqs = running.clone()
    running_scores = torch.zeros(batch, beams, device=device)
    running_scores[:, 1:] = -1e9  # only the first copy of each prompt starts a beam
    finished_scores = torch.full((batch, beams), -1e9, device=device)
    is_finished = torch.zeros(batch, beams, dtype=torch.bool, device=device)
    improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)
    running_index = torch.full((batch, beams, s.max_new_tokens), -1, dtype=torch.long,
                               device=device)
    finished_index = running_index.clone()
    flat_seqs, new_tokens, cur_len = start, start, prompt_len
    any_finished = False  # has any row's finished set a hypothesis yet?
    offsets = torch.arange(batch, device=device)[:, None] * beams  # (B, 1)
    while True:
        logits = model.decoding_logits(state, new_tokens)  # (B * beams, V)
        log_probs = _process(F.log_softmax(logits, dim=-1), flat_seqs, s, cur_len - prompt_len,
                             padding)
        vocab = log_probs.shape[-1]
        log_probs = (log_probs.view(batch, beams, vocab) + running_scores[:, :, None]
                     ).view(batch, beams * vocab)  # (B, beams * V)
        if s.do_sample:
            top_ids = torch.multinomial(log_probs.softmax(-1), keep, generator=generator)
            top_scores, order = log_probs.gather(1, top_ids).sort(dim=-1, descending=True)
            top_ids = top_ids.gather(1, order)
        else:
            top_scores, top_ids = _top_candidates(log_probs, keep)  # (B, keep), best first
        source_beam, top_tokens = top_ids // vocab, top_ids % vocab
        step = cur_len - prompt_len
        # Stopping criteria of each candidate: eos, or the maximum length.
        if cur_len + 1 >= max_length:
            stops = torch.ones_like(top_scores, dtype=torch.bool)
        elif eos is not None:
            stops = torch.isin(top_tokens, eos)
        else:
            stops = None
        if stops is None or not bool(stops[:, :beams].any()):
            # None of the best `beams` candidates stops (most steps): they keep running, and
            # only they could have entered the finished set. The general branch below makes
            # the same selection, with gathers over every candidate and a merge.
            source = source_beam[:, :beams]
            running = _gather_beams(running, source)
            running[:, :, cur_len] = top_tokens[:, :beams]
            running_index = _gather_beams(running_index, source)
            running_index[:, :, step] = source + offsets
            running_scores = top_scores[:, :beams]
        else:
            top_seqs = _gather_beams(running, source_beam)  # (B, keep, L)
            top_seqs[:, :, cur_len] = top_tokens
            top_index = _gather_beams(running_index, source_beam)
            top_index[:, :, step] = source_beam + offsets
            # The best `beams` candidates that did not stop keep running.
            live_scores = top_scores + stops.float() * -1e9
            chosen = torch.topk(live_scores, beams)[1]
            running = _gather_beams(top_seqs, chosen)
            running_scores = _gather_beams(live_scores, chosen)
            running_index = _gather_beams(top_index, chosen)
            # Candidates among the top `beams` that stopped may enter the finished set.
            just_finished = stops & top_beam_mask[None, :]
            final_scores = top_scores / ((cur_len + 1 - prompt_len) ** s.length_penalty)
            full = is_finished.all(dim=-1, keepdim=True) & (s.early_stopping is True)
            final_scores = final_scores + full.float() * -1e9 + (~improvable).float() * -1e9 \
                + (~just_finished).float() * -1e9
            merged_scores = torch.cat([finished_scores, final_scores], dim=1)
            best = torch.topk(merged_scores, beams)[1]
            finished_seqs = _gather_beams(torch.cat([finished_seqs, top_seqs], dim=1), best)
            finished_scores = _gather_beams(merged_scores, best)
            finished_index = _gather_beams(torch.cat([finished_index, top_index], dim=1), best)
            is_finished = _gather_beams(torch.cat([is_finished, just_finished], dim=1), best)
            any_finished = any_finished or bool(is_finished.any())
        cur_len += 1
        # Can a running beam still beat the worst finished one? (HF's heuristic)
        if s.early_stopping == "never" and s.length_penalty > 0.0:
            best_length = max_length - prompt_len
        else:
            best_length = cur_len - prompt_len
        best_running = running_scores[:, :1] / (best_length ** s.length_penalty)
        if any_finished:
            worst_finished = torch.where(is_finished,
                                         finished_scores.min(dim=1, keepdim=True)[0], -1.0e9)
            improvable = improvable & (best_running > worst_finished).any(dim=-1, keepdim=True)
        else:  # the same test: every worst_finished is -1e9
            improvable = improvable & (best_running > -1.0e9)
        all_full = any_finished and bool(is_finished.all()) and s.early_stopping is True
        if not bool(improvable.any()) or all_full or (stops is not None and bool(stops.all())):
            break
        state.reorder(running_index[:, :, step].reshape(-1))  # this step's source rows
        flat_seqs = running[:, :, :cur_len].reshape(batch * beams, cur_len)
        new_tokens = flat_seqs[:, -1:]  # (B * beams, 1)
    n = s.num_return_sequences
    generated = (finished_index[:, :n] + 1).bool().sum(dim=2).max()
    sequences = finished_seqs[:, :n, :prompt_len + int(generated)]
    return sequences.reshape(batch * n, -1), finished_scores[:, :n].reshape(-1)
