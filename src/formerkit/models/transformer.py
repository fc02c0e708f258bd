"""The encoder-decoder Transformer of Vaswani et al. 2017, "Attention Is All You Need".

``TransformerModel`` is the encoder-decoder backbone (embeddings scaled by sqrt(d_model),
sinusoidal positions, post-norm layers as in the paper or pre-norm); ``TransformerForSeq2Seq``
adds the output projection (optionally tied to the target embedding, with Marian's
``final_logits_bias``), label-smoothed cross-entropy and incremental decoding for
``generate()`` (one KV cache per decoder layer holding self-attention keys/values and the
encoder's cross-attention keys/values, computed once per source).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

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
    Decoder,
    Encoder,
    KVCache,
    SinusoidalPositionalEncoding,
    check_length,
    make_attention_mask,
)
from formerkit.nn.decoding import DecodingPlan, StepLinear, step_linear
from formerkit.nn.linear import apply_linear
from formerkit.nn.position import LAYOUTS


@dataclasses.dataclass
class TransformerConfig(ConfigBase):
    """Encoder-decoder Transformer hyperparameters (defaults: the paper's base model).

    ``vocab_size`` is the source (and, by default, shared) vocabulary; ``tgt_vocab_size`` a
    separate target vocabulary (``None``: same as the source). ``share_embeddings`` uses one
    embedding matrix for source and target, ``tie_embeddings`` reuses the target embedding as
    the output projection (sec. 3.4). ``position_layout`` is ``"interleaved"`` (paper) or
    ``"halves"`` ([sin | cos], fairseq/Marian). ``final_logits_bias`` adds a (V,) bias buffer to
    the logits (Marian). ``label_smoothing`` is the paper's epsilon_ls (sec. 5.4).
    """

    vocab_size: int = 32000
    tgt_vocab_size: int | None = None
    d_model: int = 512
    n_heads: int = 8
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1
    attn_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: str = "relu"
    max_seq_len: int = 1024
    layer_norm_eps: float = 1e-5
    norm_first: bool = False
    scale_embedding: bool = True
    position_layout: str = "interleaved"
    share_embeddings: bool = True
    tie_embeddings: bool = True
    final_logits_bias: bool = False
    pad_token_id: int = 0
    bos_token_id: int | None = 1
    eos_token_id: int = 2
    decoder_start_token_id: int = 1
    label_smoothing: float = 0.1

    def validate(self) -> None:
        check_positive(self, "vocab_size", "tgt_vocab_size", "d_model", "n_heads",
                       "n_encoder_layers", "n_decoder_layers", "d_ff", "max_seq_len",
                       "layer_norm_eps")
        check_divisible(self, "d_model", "n_heads")
        check_probability(self, "dropout", "attn_dropout", "activation_dropout",
                          "label_smoothing")
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_choice(self, "position_layout", LAYOUTS)
        if self.d_model % 2:
            raise ValueError(f"TransformerConfig.d_model must be even for sinusoidal "
                             f"positions, got {self.d_model}")
        if self.share_embeddings and self.tgt_vocab_size not in (None, self.vocab_size):
            raise ValueError(f"TransformerConfig.share_embeddings=True needs tgt_vocab_size "
                             f"equal to vocab_size={self.vocab_size}, got {self.tgt_vocab_size}")
        for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.target_vocab_size:
                raise ValueError(f"TransformerConfig.{name}={value} is outside the target "
                                 f"vocabulary of {self.target_vocab_size}")

    @property
    def target_vocab_size(self) -> int:
        return self.vocab_size if self.tgt_vocab_size is None else self.tgt_vocab_size


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's Table 3 settings.
    "base": dict(d_model=512, n_heads=8, n_encoder_layers=6, n_decoder_layers=6, d_ff=2048,
                 dropout=0.1),
    "big": dict(d_model=1024, n_heads=16, n_encoder_layers=6, n_decoder_layers=6, d_ff=4096,
                dropout=0.3),
    # CPU-sized: Multi30k in minutes per epoch, and a copy task in seconds.
    "small": dict(d_model=256, n_heads=8, n_encoder_layers=3, n_decoder_layers=3, d_ff=1024,
                  dropout=0.1, max_seq_len=256),
    "tiny": dict(d_model=64, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=128,
                 dropout=0.0, max_seq_len=128),
}


def _init_transformer(module: nn.Module, d_model: int) -> None:
    # fairseq's scheme for this model: xavier-uniform projections, N(0, d^-0.5) embeddings,
    # so that the sqrt(d) embedding scale gives unit-variance inputs.
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=d_model ** -0.5)
        if module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()


class TransformerModel(PreTrainedModel):
    """Encoder-decoder backbone: ``forward`` returns the decoder's last hidden state.

    Args:
        config: a ``TransformerConfig``.
    """

    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        c = config
        self.src_embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_token_id)
        self.tgt_embed = self.src_embed if c.share_embeddings else \
            nn.Embedding(c.target_vocab_size, c.d_model, padding_idx=c.pad_token_id)
        self.embed_scale = math.sqrt(c.d_model) if c.scale_embedding else 1.0
        self.positions = SinusoidalPositionalEncoding(c.max_seq_len, c.d_model,
                                                      layout=c.position_layout)
        self.dropout = nn.Dropout(c.dropout)
        layer = dict(d_model=c.d_model, n_heads=c.n_heads, d_ff=c.d_ff, dropout=c.dropout,
                     attn_dropout=c.attn_dropout, activation_dropout=c.activation_dropout,
                     activation=c.activation, norm_first=c.norm_first,
                     layer_norm_eps=c.layer_norm_eps)
        # Pre-norm stacks end with a LayerNorm; post-norm layers already end normalised.
        self.encoder = Encoder.build(c.n_encoder_layers, final_norm=c.norm_first, **layer)
        self.decoder = Decoder.build(c.n_decoder_layers, final_norm=c.norm_first, **layer)
        self.apply(lambda m: _init_transformer(m, c.d_model))

    def _embed(self, embedding: nn.Embedding, ids: torch.Tensor, offset: int = 0
               ) -> torch.Tensor:
        length = ids.shape[1]
        check_length(offset + length, self.config.max_seq_len)
        position_ids = torch.arange(offset, offset + length, device=ids.device)
        x = embedding(ids) * self.embed_scale + self.positions.table[position_ids]
        return self.dropout(x)  # (B, T, D)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
               output_attentions: bool = False
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Source ids (B, S) and padding mask (B, S), 1 = token -> memory (B, S, D)."""
        mask = make_attention_mask(attention_mask, query_len=input_ids.shape[1])
        return self.encoder(self._embed(self.src_embed, input_ids), mask=mask,
                            output_attentions=output_attentions)

    def decode(self, decoder_input_ids: torch.Tensor, memory: torch.Tensor | None,
               attention_mask: torch.Tensor | None = None,
               decoder_attention_mask: torch.Tensor | None = None, *,
               cache: KVCache | None = None, output_attentions: bool = False):
        """Target ids (B, T) attending causally to themselves and to ``memory`` (B, S, D).

        Args:
            attention_mask: source padding mask (B, S), 1 = token.
            decoder_attention_mask: target padding mask (B, past + T), covering cached steps.
            cache: one ``LayerCache`` per decoder layer holding self- and cross-attention
                keys/values; positions continue from ``cache.length``.

        Returns:
            (hidden (B, T, D), self-attention weights, cross-attention weights).
        """
        offset = cache.length if cache is not None else 0
        length = decoder_input_ids.shape[1]
        self_mask = None
        if decoder_attention_mask is not None:
            self_mask = make_attention_mask(decoder_attention_mask, query_len=length,
                                            key_len=offset + length, causal=True)
        memory_mask = None
        if attention_mask is not None:
            memory_mask = make_attention_mask(attention_mask, query_len=1)  # (B, 1, 1, S)
        x = self._embed(self.tgt_embed, decoder_input_ids, offset)
        return self.decoder(x, memory, self_mask=self_mask, memory_mask=memory_mask,
                            is_causal=True, cache=cache, cross_cache=cache,
                            output_attentions=output_attentions)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None, *,
                encoder_outputs: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Encode ``input_ids`` (B, S) and decode ``decoder_input_ids`` (B, T).

        Returns:
            ``ModelOutput`` with ``last_hidden_state`` (B, T, D), ``encoder_last_hidden_state``
            (B, S, D) and, if requested, ``encoder_attentions``, ``attentions`` (decoder self)
            and ``cross_attentions``.
        """
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids is required (or pass labels to the seq2seq "
                             "head, which shifts them right)")
        encoder_attentions = None
        memory = encoder_outputs
        if memory is None:
            memory, encoder_attentions = self.encode(input_ids, attention_mask,
                                                     output_attentions=output_attentions)
        hidden, self_ws, cross_ws = self.decode(decoder_input_ids, memory, attention_mask,
                                                decoder_attention_mask,
                                                output_attentions=output_attentions)
        return ModelOutput(last_hidden_state=hidden, encoder_last_hidden_state=memory,
                           attentions=self_ws, cross_attentions=cross_ws,
                           encoder_attentions=encoder_attentions)


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int
                       ) -> torch.Tensor:
    """Teacher forcing inputs: ``[start, y_0 .. y_{T-2}]`` with -100 replaced by padding."""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


class TransformerForSeq2Seq(PreTrainedModel, GenerationMixin):
    """Backbone + output projection; ``generate()`` does greedy and beam search.

    Args:
        config: a ``TransformerConfig``.
    """

    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.model = TransformerModel(config)
        self.lm_head = nn.Linear(config.d_model, config.target_vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.model.tgt_embed.weight
        else:
            nn.init.normal_(self.lm_head.weight, mean=0.0, std=config.d_model ** -0.5)
        if config.final_logits_bias:
            self.register_buffer("final_logits_bias", torch.zeros(1, config.target_vocab_size))
        else:
            self.final_logits_bias = None
        self.generation_config = {
            "decoder_start_token_id": config.decoder_start_token_id,
            "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id,
            "bos_token_id": config.bos_token_id}

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., D) -> logits (..., V)."""
        logits = apply_linear(self.lm_head, hidden)
        if self.final_logits_bias is not None:
            logits = logits + self.final_logits_bias
        return logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, *,
                encoder_outputs: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Teacher-forced forward pass.

        Args:
            input_ids: source ids (B, S); attention_mask (B, S), 1 = token, 0 = padding.
            decoder_input_ids: target inputs (B, T); default ``labels`` shifted right after
                ``decoder_start_token_id``.
            decoder_attention_mask: (B, T) target padding mask (optional: causal attention
                already hides right padding from real tokens).
            labels: (B, T) target ids, -100 = ignored. The loss is the token-mean
                cross-entropy with ``config.label_smoothing``.

        Returns:
            ``ModelOutput`` with ``loss``, ``logits`` (B, T, V), ``encoder_last_hidden_state``
            and attentions when requested.
        """
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("pass decoder_input_ids or labels")
            decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id,
                                                   self.config.decoder_start_token_id)
        out = self.model(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                         encoder_outputs=encoder_outputs, output_attentions=output_attentions)
        logits = self.logits(out.last_hidden_state)  # (B, T, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                   ignore_index=-100,
                                   label_smoothing=self.config.label_smoothing)
        out.loss, out.logits, out.last_hidden_state = loss, logits, None
        return out

    # ---- incremental decoding (see formerkit.generation) ---------------------------------
    def start_decoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *,
                       expand: int, max_new_tokens: int) -> tuple[torch.Tensor, DecodingState]:
        """Encode the source once; each row is repeated ``expand`` times (beams).

        Returns:
            (a (B * expand, 1) column of ``decoder_start_token_id``, the decoding state).
        """
        if max_new_tokens > self.config.max_seq_len:
            raise ValueError(f"max_new_tokens={max_new_tokens} exceeds the decoder's "
                             f"max_seq_len={self.config.max_seq_len}")
        memory, _ = self.model.encode(input_ids, attention_mask)
        memory = memory.repeat_interleave(expand, dim=0)  # (B * expand, S, D)
        if attention_mask is not None:
            attention_mask = attention_mask.repeat_interleave(expand, dim=0)
        rows = memory.shape[0]
        sequences = torch.full((rows, 1), self.config.decoder_start_token_id,
                               dtype=torch.long, device=input_ids.device)
        cache = KVCache(self.config.n_decoder_layers, max_len=max_new_tokens)
        memory_mask = make_attention_mask(attention_mask, query_len=1)  # (N, 1, 1, S) or None
        # The gathered step needs a visible source position per row (an all-padding source
        # would give NaN where the modules give zeros); LoRA, hooks, the math backend: None.
        step = TargetStep.build(self)
        if step is not None and memory_mask is not None and not bool(memory_mask.any(-1).all()):
            step = None
        state = DecodingState(cache=cache, attention_mask=None,
                              extras={"memory": memory, "source_mask": attention_mask,
                                      "memory_mask": memory_mask, "step": step},
                              per_input=("memory", "source_mask", "memory_mask"))
        return sequences, state

    def decoding_logits(self, state: DecodingState, new_tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``new_tokens`` (N, t), reuse the caches, return the last position's logits."""
        step, offset = state.extras.get("step"), state.cache.length
        if step is not None and offset and new_tokens.shape[1] == 1 and not self.training:
            # One token per row after the first: the gathered step, bit-identical to decode().
            check_length(offset + 1, self.config.max_seq_len)
            return step.logits(new_tokens[:, 0], offset, state.cache,
                               state.extras["memory_mask"])  # (N, V)
        memory = state.extras.get("memory")
        hidden, _, _ = self.model.decode(new_tokens, memory, state.extras["source_mask"],
                                         cache=state.cache)
        # The cross-attention keys/values are cached now; the encoder output is not needed.
        state.extras["memory"] = None
        return self.logits(hidden[:, -1]).float()  # (N, V)


class TargetStep(NamedTuple):
    """The seq2seq decoder's one-token step with its tensors gathered once per decoding run:
    the target embedding, the decoder's ``DecodingPlan`` and the output layer (module
    attribute lookups cost about a microsecond each, as much as a small operation)."""

    plan: DecodingPlan
    embed_weight: torch.Tensor
    embed_scale: float
    position_table: torch.Tensor
    head: StepLinear
    final_logits_bias: torch.Tensor | None

    @classmethod
    def build(cls, model: TransformerForSeq2Seq) -> TargetStep | None:
        """``None`` where some part must run as a module (see ``DecodingPlan.build``)."""
        plan = DecodingPlan.build(model.model.decoder, head=model.lm_head)
        if plan is None or plan.head is None:
            return None
        inner = model.model
        return cls(plan, inner.tgt_embed.weight, inner.embed_scale, inner.positions.table,
                   plan.head, model.final_logits_bias)

    def logits(self, tokens: torch.Tensor, position: int, cache: KVCache,
               memory_mask: torch.Tensor | None) -> torch.Tensor:
        """Equals ``logits(decode(tokens[:, None], ...))`` at cache position ``position`` (as
        ``DecodingPlan.step`` does): (N,) ids -> float (N, V)."""
        x = F.embedding(tokens, self.embed_weight) * self.embed_scale \
            + self.position_table[position]  # (N, D)
        hidden = self.plan.step(x, cache, memory_mask=memory_mask)
        logits = step_linear(hidden, self.head)
        if self.final_logits_bias is not None:
            logits = logits + self.final_logits_bias
        return logits.float()


register_model("transformer", config_class=TransformerConfig, presets=PRESETS,
               description="encoder-decoder Transformer (Vaswani et al. 2017)"
               )(TransformerForSeq2Seq)
TransformerModel.registry_name = "transformer"
