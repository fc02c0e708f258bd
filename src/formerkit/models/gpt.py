"""GPT: the decoder-only causal language model of Radford et al. 2019 (GPT-2).

Token + learned position embeddings, a stack of pre-norm blocks (causal self-attention and a
GELU MLP), a final LayerNorm, and an output projection tied to the token embedding. Built only
from ``formerkit.nn`` blocks; what decoder-only families share (forward, loss, decoding) lives
in ``formerkit.models.decoder_only``.
"""

from __future__ import annotations

import dataclasses

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
from formerkit.generation import GenerationMixin
from formerkit.models.base import PreTrainedModel
from formerkit.models.decoder_only import (
    CausalLMMixin,
    DecoderBackbone,
    SequenceClassifierMixin,
    StepEmbedder,
)
from formerkit.models.registry import register_model
from formerkit.nn import (
    ACTIVATIONS,
    BACKENDS,
    Encoder,
    LearnedPositionalEmbedding,
    init_weights,
    scale_residual_projections,
)


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


class GPTModel(DecoderBackbone, GPTPreTrainedModel):
    """The GPT backbone: embeddings, causal pre-norm blocks, final LayerNorm."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_positions = LearnedPositionalEmbedding(config.max_seq_len, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = Encoder.build(
            config.n_layers, final_norm=True, d_model=config.d_model, n_heads=config.n_heads,
            d_ff=config.d_ff, dropout=config.dropout, attn_dropout=config.attn_dropout,
            activation=config.activation, norm_first=True, layer_norm_eps=config.layer_norm_eps,
            backend=config.backend)
        self._init_gpt_weights()

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor
              ) -> tuple[torch.Tensor, None]:
        x = self.embed_tokens(input_ids) + self.embed_positions(position_ids)
        if self.training and self.dropout.p > 0:  # skipped while decoding: no per-token cost
            x = self.dropout(x)
        return x, None

    def step_embedder(self) -> StepEmbedder:
        tokens, positions = self.embed_tokens.weight, self.embed_positions.weight

        def embed(ids: torch.Tensor, at: torch.Tensor | int) -> tuple[torch.Tensor, None]:
            return F.embedding(ids, tokens) + positions[at], None  # (B, D)

        return embed


@register_model("gpt", config_class=GPTConfig, presets=PRESETS,
                description="GPT-2 decoder-only causal language model")
class GPTForCausalLM(CausalLMMixin, GPTPreTrainedModel, GenerationMixin):
    """GPT with a language-modelling head (tied to the token embedding by default)."""

    backbone_name = "transformer"

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.transformer = GPTModel(config)
        self.add_lm_head(std=0.02)


class GPTForSequenceClassification(SequenceClassifierMixin, GPTPreTrainedModel):
    """GPT with a linear classifier on the last token that is not ``pad_token_id`` (as HF)."""

    backbone_name = "transformer"

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.transformer = GPTModel(config)
        self.score = nn.Linear(config.d_model, config.num_labels, bias=False)
        nn.init.normal_(self.score.weight, std=0.02)
