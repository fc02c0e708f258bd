"""Llama-style decoder (Touvron et al. 2023): the family of Llama, Qwen2 and Mistral.

A builder over the open blocks: token embeddings (no absolute positions), pre-norm layers of
RMSNorm + grouped-query attention with rotary positions on q and k + SwiGLU feed-forward, a
final RMSNorm and an LM head (tied or not). Qwen2 adds q/k/v biases; Mistral a sliding
attention window. The presets hold only numbers; what decoder-only families share (forward,
loss, decoding, last-token classification) is in ``formerkit.models.decoder_only``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from formerkit.config import ConfigBase, check_choice, check_positive, check_probability
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
    EncoderLayer,
    GatedFeedForward,
    MultiHeadAttention,
    RMSNorm,
    RotaryEmbedding,
    init_weights,
)
from formerkit.nn.rotary import check_rope_scaling

ARCHITECTURES = ("llama", "qwen2", "mistral")


@dataclasses.dataclass
class LlamaConfig(ConfigBase):
    """Llama-family hyperparameters (the defaults are Llama-2 7B's).

    Attributes:
        n_kv_heads: key/value heads (grouped-query attention); default ``n_heads``.
        head_dim: per-head width; default ``d_model // n_heads``.
        rms_norm_eps: RMSNorm epsilon.
        rope_theta: rotary base; ``rope_scaling`` an HF-style dict (``rope_type`` ``linear``,
            ``dynamic`` or ``llama3`` with its fields) or ``None``.
        qkv_bias, out_bias, mlp_bias: biases of the q/k/v, output and feed-forward projections
            (Qwen2: q/k/v only).
        sliding_window: Mistral's attention window; layers ``>= max_window_layers`` use it
            (Qwen2's rule; ``None`` = every layer).
        tie_embeddings: the LM head shares the token embedding matrix.
        eos_token_id: one id or a list (Llama 3 ends chats on several).
        architecture: the HuggingFace ``model_type`` that ``save_pretrained(hf=True)`` writes.
        init_std: std of the normal initialisation.
    """

    vocab_size: int = 32000
    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int | None = None
    n_layers: int = 32
    d_ff: int = 11008
    head_dim: int | None = None
    max_seq_len: int = 4096
    activation: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None
    max_window_layers: int | None = None
    dropout: float = 0.0
    attn_dropout: float = 0.0
    tie_embeddings: bool = False
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    num_labels: int = 2
    architecture: str = "llama"
    init_std: float = 0.02
    backend: str = "sdpa"

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        super().__post_init__()

    def validate(self) -> None:
        check_positive(self, "vocab_size", "d_model", "n_heads", "n_kv_heads", "n_layers",
                       "d_ff", "head_dim", "max_seq_len", "rms_norm_eps", "rope_theta",
                       "num_labels", "sliding_window", "init_std")
        for name in ("vocab_size", "d_model", "n_heads", "n_kv_heads", "n_layers", "d_ff"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"LlamaConfig.{name} must be an integer, "
                                 f"got {getattr(self, name)!r}")
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(f"LlamaConfig.d_model={self.d_model} must be divisible by "
                             f"n_heads={self.n_heads} (or set head_dim)")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"LlamaConfig.n_heads={self.n_heads} must be a multiple of "
                             f"n_kv_heads={self.n_kv_heads}")
        if self.resolved_head_dim % 2:
            raise ValueError(f"LlamaConfig.head_dim={self.resolved_head_dim} must be even "
                             "for rotary positions")
        if not math.isfinite(self.rms_norm_eps):
            raise ValueError(f"LlamaConfig.rms_norm_eps must be finite, got {self.rms_norm_eps}")
        check_probability(self, "dropout", "attn_dropout")
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_choice(self, "backend", BACKENDS)
        check_choice(self, "architecture", ARCHITECTURES)
        check_rope_scaling(self.rope_scaling)

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    def layer_window(self, index: int) -> int | None:
        """The sliding window of layer ``index`` (``None``: full attention)."""
        start = self.max_window_layers or 0
        return self.sliding_window if index >= start else None


PRESETS = {
    "tiny": dict(vocab_size=256, d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=172,
                 max_seq_len=256),
    "smollm-135m": dict(vocab_size=49152, d_model=576, n_heads=9, n_kv_heads=3, n_layers=30,
                        d_ff=1536, max_seq_len=2048, rms_norm_eps=1e-5, tie_embeddings=True,
                        bos_token_id=0, eos_token_id=0),
    "llama-3.2-1b": dict(vocab_size=128256, d_model=2048, n_heads=32, n_kv_heads=8,
                         n_layers=16, d_ff=8192, head_dim=64, max_seq_len=131072,
                         rms_norm_eps=1e-5, rope_theta=500000.0, tie_embeddings=True,
                         rope_scaling={"rope_type": "llama3", "factor": 32.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192},
                         bos_token_id=128000, eos_token_id=128001),
    "qwen2.5-0.5b": dict(vocab_size=151936, d_model=896, n_heads=14, n_kv_heads=2,
                         n_layers=24, d_ff=4864, max_seq_len=32768, rope_theta=1000000.0,
                         qkv_bias=True, tie_embeddings=True, architecture="qwen2",
                         bos_token_id=151643, eos_token_id=151643),
    "mistral-7b": dict(vocab_size=32000, d_model=4096, n_heads=32, n_kv_heads=8, n_layers=32,
                       d_ff=14336, max_seq_len=32768, rms_norm_eps=1e-5, sliding_window=4096,
                       architecture="mistral", bos_token_id=1, eos_token_id=2),
}


def llama_layer(config: LlamaConfig, index: int) -> EncoderLayer:
    """One pre-norm layer: RMSNorm, grouped-query attention with rotary q/k, RMSNorm, SwiGLU."""
    c = config
    attention = MultiHeadAttention(
        c.d_model, c.n_heads, n_kv_heads=c.n_kv_heads, head_dim=c.resolved_head_dim,
        dropout=c.attn_dropout, qkv_bias=c.qkv_bias, out_bias=c.out_bias, fused_qkv=False,
        sliding_window=c.layer_window(index), backend=c.backend)
    ff = GatedFeedForward(c.d_model, c.d_ff, activation=c.activation, bias=c.mlp_bias)
    return EncoderLayer(attention, ff, RMSNorm(c.d_model, c.rms_norm_eps),
                        RMSNorm(c.d_model, c.rms_norm_eps), norm_first=True, dropout=c.dropout)


class LlamaPreTrainedModel(PreTrainedModel):
    """Shared init for the Llama family: normal(0, init_std), zero biases, unit norms."""

    config_class = LlamaConfig
    config: LlamaConfig
    registry_name = "llama"

    def _init_llama_weights(self) -> None:
        self.apply(lambda module: init_weights(module, std=self.config.init_std))


class LlamaModel(DecoderBackbone, LlamaPreTrainedModel):
    """The Llama backbone: token embeddings, rotary angles, the layers and a final RMSNorm."""

    bounded_positions = False  # rotary positions extend past max_seq_len (rope scaling)

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.rotary = RotaryEmbedding(config.resolved_head_dim, max_seq_len=config.max_seq_len,
                                      theta=config.rope_theta, scaling=config.rope_scaling)
        self.encoder = Encoder([llama_layer(config, i) for i in range(config.n_layers)],
                               norm=RMSNorm(config.d_model, config.rms_norm_eps))
        self._init_llama_weights()

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor
              ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        x = self.embed_tokens(input_ids)
        return x, self.rotary(position_ids, dtype=x.dtype)

    def step_embedder(self) -> StepEmbedder:
        tokens, rotary = self.embed_tokens.weight, self.rotary

        def embed(ids: torch.Tensor, at: torch.Tensor | int
                  ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            positions = at[:, None] if isinstance(at, torch.Tensor) else \
                torch.full((1, 1), at, device=ids.device)  # (B|1, 1)
            x = F.embedding(ids, tokens)  # (B, D)
            return x, rotary(positions, dtype=x.dtype)

        return embed


@register_model("llama", config_class=LlamaConfig, presets=PRESETS,
                description="Llama-style decoder (Llama, Qwen2, Mistral): RoPE, RMSNorm, "
                            "grouped-query attention, SwiGLU")
class LlamaForCausalLM(CausalLMMixin, LlamaPreTrainedModel, GenerationMixin):
    """Llama with a language-modelling head (tied to the token embedding if configured)."""

    backbone_name = "model"

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.model = LlamaModel(config)
        self.add_lm_head(std=config.init_std)


class LlamaForSequenceClassification(SequenceClassifierMixin, LlamaPreTrainedModel):
    """Llama with a linear classifier on the last token that is not ``pad_token_id`` (as HF)."""

    backbone_name = "model"

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.model = LlamaModel(config)
        self.score = nn.Linear(config.d_model, config.num_labels, bias=False)
        nn.init.normal_(self.score.weight, std=config.init_std)
