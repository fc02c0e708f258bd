"""GPT: the decoder-only causal language model of Radford et al. 2019 (GPT-2).

Token + learned position embeddings, a stack of pre-norm blocks (causal self-attention and a
GELU MLP), a final LayerNorm, and an output projection tied to the token embedding. Built only
from ``formerkit.nn`` blocks; decoding goes through ``formerkit.generation``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from formerkit.config import (
    ConfigBase,
    check_choice,
    check_divisible,
    check_positive,
    check_probability,
)
from formerkit.generation import DecodingState, GenerationMixin
from formerkit.models.base import ModelOutput, PreTrainedModel
from formerkit.models.registry import register_model
from formerkit.nn import (
    ACTIVATIONS,
    BACKENDS,
    Encoder,
    KVCache,
    LearnedPositionalEmbedding,
    causal_mask,
    init_weights,
    make_attention_mask,
    padding_mask,
    scale_residual_projections,
)
from formerkit.nn.attention import _plain, apply_linear
from formerkit.nn.decoding import DecodingPlan


@dataclasses.dataclass
class GPTConfig(ConfigBase):
    """GPT hyperparameters; the defaults are GPT-2 124M's.

    Attributes:
        d_ff: MLP width, default ``4 * d_model``.
        attn_dropout: dropout on attention weights, default ``dropout``.
        tie_embeddings: the LM head shares the token embedding matrix.
        num_labels: classes of ``GPTForSequenceClassification`` (1 = regression).
        backend: attention backend, ``"sdpa"`` or ``"math"``.
    """

    vocab_size: int = 50257
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 12
    d_ff: int | None = None
    dropout: float = 0.1
    attn_dropout: float | None = None
    max_seq_len: int = 1024
    activation: str = "gelu_tanh"
    layer_norm_eps: float = 1e-5
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    tie_embeddings: bool = True
    num_labels: int = 2
    backend: str = "sdpa"

    def __post_init__(self) -> None:
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        super().__post_init__()

    def validate(self) -> None:
        check_positive(self, "vocab_size", "d_model", "n_heads", "n_layers", "d_ff",
                       "max_seq_len", "layer_norm_eps", "num_labels")
        check_divisible(self, "d_model", "n_heads")
        check_probability(self, "dropout")
        if self.attn_dropout is not None:
            check_probability(self, "attn_dropout")
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_choice(self, "backend", BACKENDS)
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"GPTConfig.{name}={value} must be in [0, vocab_size="
                                 f"{self.vocab_size})")


PRESETS = {
    "tiny": dict(vocab_size=256, d_model=64, n_heads=2, n_layers=2, max_seq_len=128,
                 dropout=0.0),
    "small": dict(vocab_size=65, d_model=256, n_heads=4, n_layers=4, max_seq_len=256,
                  dropout=0.0),
    "gpt2": dict(vocab_size=50257, d_model=768, n_heads=12, n_layers=12, max_seq_len=1024,
                 bos_token_id=50256, eos_token_id=50256),
}


class GPTPreTrainedModel(PreTrainedModel):
    """Shared init for the GPT family: normal(0, 0.02), scaled residual projections."""

    config_class = GPTConfig
    config: GPTConfig
    registry_name = "gpt"  # every GPT class saves as the `gpt` family

    def _init_gpt_weights(self) -> None:
        self.apply(init_weights)
        scale_residual_projections(self, self.config.n_layers)


class GPTModel(GPTPreTrainedModel):
    """The GPT backbone: embeddings, causal pre-norm blocks, final LayerNorm."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_positions = LearnedPositionalEmbedding(config.max_seq_len, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = Encoder(
            config.n_layers, final_norm=True, d_model=config.d_model, n_heads=config.n_heads,
            d_ff=config.d_ff, dropout=config.dropout, attn_dropout=config.attn_dropout,
            activation=config.activation, norm_first=True, layer_norm_eps=config.layer_norm_eps,
            backend=config.backend)
        self._init_gpt_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None,
                past_key_values: KVCache | None = None, use_cache: bool = False,
                output_attentions: bool = False) -> ModelOutput:
        """Run the blocks over new tokens.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, Tk) 1 = token, 0 = padding; Tk covers cached tokens too.
            position_ids: (B|1, T); default ``past .. past + T - 1`` (as HF's forward; HF's
                ``generate`` derives them from the mask, see ``formerkit.generation``).
            past_key_values: a ``KVCache`` holding earlier tokens; extended in place.
            use_cache: create a cache when none is given and return it.
            output_attentions: return per-layer weights (B, H, T, Tk) (math backend).

        Returns:
            ``ModelOutput`` with ``last_hidden_state`` (B, T, D), ``past_key_values``,
            ``attentions``.
        """
        batch, length = input_ids.shape
        cache = past_key_values
        if cache is None and use_cache:
            cache = KVCache(self.config.n_layers, max_len=self.config.max_seq_len)
        past = cache.length if cache is not None else 0
        total = past + length
        if total > self.config.max_seq_len:
            raise ValueError(f"sequence length {total} (cached {past} + new {length}) exceeds "
                             f"max_seq_len={self.config.max_seq_len}")
        if position_ids is None:
            position_ids = torch.arange(past, total, device=input_ids.device)[None]  # (1, T)
        elif position_ids.numel() and int(position_ids.max()) >= self.config.max_seq_len:
            raise ValueError(f"position_ids reach {int(position_ids.max())}, beyond "
                             f"max_seq_len={self.config.max_seq_len}")
        x = self.embed_tokens(input_ids) + self.embed_positions(position_ids)
        if self.training and self.dropout.p > 0:  # skipped while decoding: no per-token cost
            x = self.dropout(x)
        mask = make_attention_mask(attention_mask, query_len=length, key_len=total)
        if mask is not None and length > 1:
            mask = mask & causal_mask(length, total, device=input_ids.device)  # (B, 1, T, Tk)
        # Without padding, SDPA's fused causal path (is_causal) needs no explicit mask.
        x, attentions = self.encoder(x, mask=mask, is_causal=mask is None, cache=cache,
                                     output_attentions=output_attentions)
        return ModelOutput(last_hidden_state=x, past_key_values=cache if use_cache or
                           past_key_values is not None else None, attentions=attentions)

    def decode_step(self, tokens: torch.Tensor, positions: torch.Tensor | int, cache: KVCache,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One new token per row after the cached ones, in evaluation: the decoding fast path.

        Args:
            tokens: (B,) ids.
            positions: (B,) position ids, or one int for every row.
            cache: holds the earlier positions; extended in place.
            attention_mask: (B, Tk) 1 = token, 0 = padding, covering the cache and the new
                token, or ``None`` when nothing is padded.

        Returns:
            (B, D) final hidden states, equal to ``forward(tokens[:, None], attention_mask,
            positions, cache).last_hidden_state[:, 0]``.
        """
        if cache.length + 1 > self.config.max_seq_len:
            raise ValueError(f"sequence length {cache.length + 1} exceeds "
                             f"max_seq_len={self.config.max_seq_len}")
        x = F.embedding(tokens, self.embed_tokens.weight) + self.embed_positions.weight[positions]
        mask = padding_mask(attention_mask) if attention_mask is not None else None
        return self.encoder.decode_step(x, cache, mask)


class _TokenStep(NamedTuple):
    """``GPTForCausalLM``'s one-token decoding step with every tensor gathered once per
    decoding run: the embeddings, the blocks' ``DecodingPlan`` and the LM head. Module
    attribute lookups cost about a microsecond each, comparable to a small operation."""

    plan: DecodingPlan
    token_embedding: torch.Tensor  # (V, D)
    position_embedding: torch.Tensor  # (max_seq_len, D)
    head_weight_t: torch.Tensor  # (D, V) view of the LM head's (V, D) weight

    @classmethod
    def build(cls, model: GPTForCausalLM) -> _TokenStep | None:
        """``None`` where some part must run as a module (see ``DecodingPlan.build``)."""
        plan = DecodingPlan.build(model.transformer.encoder)
        head = model.lm_head
        if plan is None or not _plain(head, nn.Linear) or head.bias is not None:
            return None
        gpt = model.transformer
        return cls(plan, gpt.embed_tokens.weight, gpt.embed_positions.weight, head.weight.t())

    def logits(self, tokens: torch.Tensor, positions: torch.Tensor | int, cache: KVCache,
               attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Equals ``lm_head(GPTModel.decode_step(tokens, positions, cache, attention_mask))``
        bit for bit: (B,) ids -> float (B, V)."""
        x = F.embedding(tokens, self.token_embedding) + self.position_embedding[positions]
        mask = padding_mask(attention_mask) if attention_mask is not None else None
        return torch.mm(self.plan.step(x, cache, mask), self.head_weight_t).float()


@register_model("gpt", config_class=GPTConfig, presets=PRESETS,
                description="GPT-2 decoder-only causal language model")
class GPTForCausalLM(GPTPreTrainedModel, GenerationMixin):
    """GPT with a language-modelling head (tied to the token embedding by default)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.transformer = GPTModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.embed_tokens.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=0.02)
        self.generation_config = {k: getattr(config, k) for k in
                                  ("bos_token_id", "eos_token_id", "pad_token_id")
                                  if getattr(config, k) is not None} or None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                past_key_values: KVCache | None = None, use_cache: bool = False,
                output_attentions: bool = False) -> ModelOutput:
        """Next-token logits (B, T, V); with ``labels`` (B, T) also the mean cross-entropy.

        As in HF, ``labels`` are the input ids themselves (-100 = ignore): the model shifts
        them, so position t is scored on predicting ``labels[:, t + 1]``.
        """
        out = self.transformer(input_ids, attention_mask, position_ids, past_key_values,
                               use_cache, output_attentions)
        logits = self.lm_head(out.last_hidden_state)  # (B, T, V)
        loss = None
        if labels is not None:
            # Shift the labels rather than the logits: no copy of the (B, T, V) tensor.
            targets = F.pad(labels[:, 1:], (0, 1), value=-100)  # (B, T)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                   ignore_index=-100)
        return ModelOutput(loss=loss, logits=logits, past_key_values=out.past_key_values,
                           attentions=out.attentions)

    # ---- decoding protocol (formerkit.generation) ------------------------------------------
    def start_decoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *,
                       expand: int, max_new_tokens: int) -> tuple[torch.Tensor, DecodingState]:
        prompt_len, context = input_ids.shape[1], self.config.max_seq_len
        if prompt_len > context:
            raise ValueError(f"prompt of {prompt_len} tokens is longer than the model's "
                             f"context of max_seq_len={context} tokens")
        if prompt_len + max_new_tokens > context:
            raise ValueError(f"prompt of {prompt_len} tokens + max_new_tokens={max_new_tokens} "
                             f"exceeds the model's context of max_seq_len={context}; lower "
                             f"max_new_tokens to at most {context - prompt_len}")
        if expand > 1:
            input_ids = input_ids.repeat_interleave(expand, dim=0)
            if attention_mask is not None:
                attention_mask = attention_mask.repeat_interleave(expand, dim=0)
        if attention_mask is not None and bool(attention_mask.bool().all()):
            attention_mask = None  # nothing padded: take the fused causal path
        cache = KVCache(self.config.n_layers, max_len=prompt_len + max_new_tokens)
        step = _TokenStep.build(self)  # None with LoRA, hooks, the math backend
        return input_ids, DecodingState(cache, attention_mask, extras={"step": step})

    def decoding_logits(self, state: DecodingState, new_tokens: torch.Tensor) -> torch.Tensor:
        past, length = state.cache.length, new_tokens.shape[1]
        mask, position_ids = state.attention_mask, None
        if mask is not None:
            if past:
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], length)], dim=1)
                state.attention_mask = mask
                position_ids = state.extras["next_position"][:, None] + torch.arange(
                    length, device=mask.device)  # (N, T)
            else:
                # As HF generate: positions count real tokens, so left padding does not shift.
                position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
            state.extras["next_position"] = position_ids[:, -1] + 1
        if past and length == 1 and not self.training:  # one token per row: the lean path
            positions = past if position_ids is None else position_ids[:, 0]
            step = state.extras.get("step")
            if step is not None:
                return step.logits(new_tokens[:, 0], positions, state.cache, mask)  # (N, V)
            hidden = self.transformer.decode_step(new_tokens[:, 0], positions, state.cache, mask)
            return apply_linear(self.lm_head, hidden).float()
        hidden = self.transformer(new_tokens, mask, position_ids, state.cache).last_hidden_state
        return self.lm_head(hidden[:, -1]).float()  # (N, V): the head on the last position only


class GPTForSequenceClassification(GPTPreTrainedModel):
    """GPT with a linear classifier on the last token that is not ``pad_token_id`` (as HF)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.transformer = GPTModel(config)
        self.score = nn.Linear(config.d_model, config.num_labels, bias=False)
        nn.init.normal_(self.score.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Logits (B, num_labels) pooled at each row's last non-pad token.

        Args:
            labels: (B,) class ids (cross-entropy), float (B,) targets when ``num_labels == 1``
                (MSE), or float (B, num_labels) multi-label targets (BCE with logits).
        """
        out = self.transformer(input_ids, attention_mask, position_ids,
                               output_attentions=output_attentions)
        batch, length = input_ids.shape
        pad = self.config.pad_token_id
        if pad is None:
            if batch != 1:
                raise ValueError("GPTForSequenceClassification needs config.pad_token_id to "
                                 f"find each row's last token in a batch of {batch}")
            last = torch.full((1,), length - 1, device=input_ids.device)
        else:
            # Index of the rightmost non-pad token (0 if the row is all padding), as HF.
            not_pad = (input_ids != pad).long()
            last = (torch.arange(length, device=input_ids.device) * not_pad).argmax(-1)
        hidden = out.last_hidden_state[torch.arange(batch, device=input_ids.device), last]
        logits = self.score(hidden)  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.float().view(-1))
            elif labels.dtype.is_floating_point:
                loss = F.binary_cross_entropy_with_logits(logits, labels)
            else:
                loss = F.cross_entropy(logits, labels.view(-1))
        return ModelOutput(loss=loss, logits=logits, attentions=out.attentions)
