"""Transformer layers (Vaswani et al. 2017, sec. 3.1-3.3): feed-forward (plain, or gated as in
Shazeer 2020), encoder and decoder layers with residual + norm in post-norm (paper) or pre-norm
placement, and their stacks.

Layers are open: they receive their attention, feed-forward and norms (torchtune's
``TransformerSelfAttentionLayer``, timm's ``Block``). ``EncoderLayer.build`` and friends
assemble the usual parts from names, which is what the config-driven models use; a family with
other parts (Llama: RMSNorm, rotary, grouped-query attention, SwiGLU) hands them in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from formerkit.nn.attention import MultiHeadAttention
from formerkit.nn.cache import KVCache
from formerkit.nn.linear import apply_linear
from formerkit.nn.norms import make_norm

Rotary = tuple[torch.Tensor, torch.Tensor]
FEED_FORWARDS = ("plain", "gated")

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact (erf), as BERT
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's gelu_new
    "silu": F.silu,
    "swish": F.silu,  # Marian's name for SiLU
}


def _drop(dropout: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
    # Dropout is off in evaluation and at p = 0; skipping the call there saves per-layer,
    # per-token dispatch while decoding.
    return dropout(x) if dropout.training and dropout.p > 0 else x


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


class FeedForward(nn.Module):
    """Position-wise feed-forward: fc2(dropout(act(fc1(x)))), D -> d_ff -> D."""

    def __init__(self, d_model: int, d_ff: int, *, activation: str = "relu",
                 activation_dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.activation_name = activation
        self.activation = get_activation(activation)
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(activation_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.activation(apply_linear(self.fc1, x))
        return apply_linear(self.fc2, _drop(self.dropout, hidden))


class GatedFeedForward(nn.Module):
    """Gated linear unit feed-forward (Shazeer 2020): down(act(gate(x)) * up(x)).

    ``activation="silu"`` is SwiGLU (Llama, Qwen2, Mistral), ``"gelu"``/``"gelu_tanh"`` GeGLU.
    Parameters are named ``gate_proj``, ``up_proj``, ``down_proj`` as in those checkpoints.
    """

    def __init__(self, d_model: int, d_ff: int, *, activation: str = "silu",
                 activation_dropout: float = 0.0, bias: bool = False) -> None:
        super().__init__()
        self.activation_name = activation
        self.activation = get_activation(activation)
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(activation_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = apply_linear(self.gate_proj, x), apply_linear(self.up_proj, x)
        hidden = self.activation(gate) * up
        return apply_linear(self.down_proj, _drop(self.dropout, hidden))


def make_feed_forward(kind: str, d_model: int, d_ff: int, *, activation: str,
                      activation_dropout: float = 0.0, bias: bool = True) -> nn.Module:
    """``"plain"`` -> ``FeedForward``, ``"gated"`` -> ``GatedFeedForward``."""
    if kind not in FEED_FORWARDS:
        raise ValueError(f"feed_forward must be one of {list(FEED_FORWARDS)}, got {kind!r}")
    cls = FeedForward if kind == "plain" else GatedFeedForward
    return cls(d_model, d_ff, activation=activation, activation_dropout=activation_dropout,
               bias=bias)


def _attention(d_model: int, n_heads: int, *, cross: bool, attn_dropout: float, bias: bool,
               backend: str, **attention: object) -> MultiHeadAttention:
    return MultiHeadAttention(d_model, n_heads, dropout=attn_dropout, bias=bias, cross=cross,
                              backend=backend, **attention)


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each with a residual connection and a norm.

    Post-norm (paper, BERT): x = norm(x + drop(sublayer(x))).
    Pre-norm (GPT-2, ViT, Llama): x = x + drop(sublayer(norm(x))).
    With ``is_causal=True`` at call time this is also the decoder-only (GPT, Llama) block.

    Args:
        self_attn: a ``MultiHeadAttention`` (or a module with its call signature).
        ff: the feed-forward module (``FeedForward``, ``GatedFeedForward``).
        norm1, norm2: the norms around attention and feed-forward.
        norm_first: pre-norm placement.
        dropout: on each sublayer's output.
    """

    def __init__(self, self_attn: nn.Module, ff: nn.Module, norm1: nn.Module, norm2: nn.Module,
                 *, norm_first: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn, self.ff, self.norm1, self.norm2 = self_attn, ff, norm1, norm2
        self.dropout = nn.Dropout(dropout)

    @classmethod
    def build(cls, d_model: int, n_heads: int, d_ff: int, *, dropout: float = 0.1,
              attn_dropout: float | None = None, activation_dropout: float = 0.0,
              activation: str = "relu", norm_first: bool = False, layer_norm_eps: float = 1e-5,
              bias: bool = True, backend: str = "sdpa", norm: str = "layernorm",
              feed_forward: str = "plain", ff_bias: bool | None = None,
              **attention: object) -> EncoderLayer:
        """A layer from names and sizes.

        Args:
            d_model, n_heads, d_ff: widths and heads.
            dropout: on each sublayer's output; ``attn_dropout`` on attention weights (default
                ``dropout``); ``activation_dropout`` inside the feed-forward.
            activation: feed-forward activation name.
            norm_first: pre-norm placement.
            layer_norm_eps: the norms' epsilon; ``norm``: ``"layernorm"`` or ``"rmsnorm"``.
            bias: projection biases (``ff_bias`` overrides it for the feed-forward).
            backend: attention backend.
            feed_forward: ``"plain"`` or ``"gated"``.
            **attention: further ``MultiHeadAttention`` options (``n_kv_heads``, ``head_dim``,
                ``qkv_bias``, ``out_bias``, ``fused_qkv``, ``sliding_window``).
        """
        self_attn = _attention(d_model, n_heads, cross=False, bias=bias, backend=backend,
                               attn_dropout=dropout if attn_dropout is None else attn_dropout,
                               **attention)
        ff = make_feed_forward(feed_forward, d_model, d_ff, activation=activation,
                               activation_dropout=activation_dropout,
                               bias=bias if ff_bias is None else ff_bias)
        return cls(self_attn, ff, make_norm(norm, d_model, layer_norm_eps),
                   make_norm(norm, d_model, layer_norm_eps), norm_first=norm_first,
                   dropout=dropout)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None,
                is_causal: bool = False, cache=None, need_weights: bool = False,
                rotary: Rotary | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, D); mask bool broadcastable to (B, H, T, Tk); rotary (cos, sin) for the
        new positions. Returns (x, weights)."""
        def attend(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            return self.self_attn(h, mask=mask, is_causal=is_causal, cache=cache,
                                  need_weights=need_weights, rotary=rotary)

        if self.norm_first:
            h, weights = attend(self.norm1(x))
            x = x + _drop(self.dropout, h)
            x = x + _drop(self.dropout, self.ff(self.norm2(x)))
        else:
            h, weights = attend(x)
            x = self.norm1(x + _drop(self.dropout, h))
            x = self.norm2(x + _drop(self.dropout, self.ff(x)))
        return x, weights


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder output, feed-forward; each with a
    residual connection and a norm (post-norm as in the paper, or pre-norm).

    Args:
        self_attn, cross_attn: ``MultiHeadAttention`` modules (the second with ``cross=True``).
        ff: the feed-forward; norm1, norm2, norm3: the norms around the three sublayers.
        norm_first, dropout: as ``EncoderLayer``.
    """

    def __init__(self, self_attn: nn.Module, cross_attn: nn.Module, ff: nn.Module,
                 norm1: nn.Module, norm2: nn.Module, norm3: nn.Module, *,
                 norm_first: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn, self.cross_attn, self.ff = self_attn, cross_attn, ff
        self.norm1, self.norm2, self.norm3 = norm1, norm2, norm3
        self.dropout = nn.Dropout(dropout)

    @classmethod
    def build(cls, d_model: int, n_heads: int, d_ff: int, *, dropout: float = 0.1,
              attn_dropout: float | None = None, activation_dropout: float = 0.0,
              activation: str = "relu", norm_first: bool = False, layer_norm_eps: float = 1e-5,
              bias: bool = True, backend: str = "sdpa", norm: str = "layernorm",
              feed_forward: str = "plain", ff_bias: bool | None = None,
              **attention: object) -> DecoderLayer:
        """A layer from names and sizes; arguments as ``EncoderLayer.build``."""
        attn_p = dropout if attn_dropout is None else attn_dropout
        self_attn = _attention(d_model, n_heads, cross=False, attn_dropout=attn_p, bias=bias,
                               backend=backend, **attention)
        cross_options = {k: v for k, v in attention.items() if k != "sliding_window"}
        cross_attn = _attention(d_model, n_heads, cross=True, attn_dropout=attn_p, bias=bias,
                                backend=backend, **cross_options)
        ff = make_feed_forward(feed_forward, d_model, d_ff, activation=activation,
                               activation_dropout=activation_dropout,
                               bias=bias if ff_bias is None else ff_bias)
        norms = [make_norm(norm, d_model, layer_norm_eps) for _ in range(3)]
        return cls(self_attn, cross_attn, ff, *norms, norm_first=norm_first, dropout=dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None, *,
                self_mask: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                is_causal: bool = True, self_cache=None, cross_cache=None,
                need_weights: bool = False, rotary: Rotary | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x (B, T, D) target; memory (B, S, D) encoder output (may be ``None`` when the cross
        cache already holds its keys/values); self_mask (.., T, Tk), memory_mask (.., T|1, S).

        Returns:
            (x, self-attention weights, cross-attention weights).
        """
        def self_attend(h):
            return self.self_attn(h, mask=self_mask, is_causal=is_causal, cache=self_cache,
                                  need_weights=need_weights, rotary=rotary)

        def cross_attend(h):
            return self.cross_attn(h, memory, mask=memory_mask, cache=cross_cache,
                                   need_weights=need_weights)

        if self.norm_first:
            h, self_w = self_attend(self.norm1(x))
            x = x + _drop(self.dropout, h)
            h, cross_w = cross_attend(self.norm2(x))
            x = x + _drop(self.dropout, h)
            x = x + _drop(self.dropout, self.ff(self.norm3(x)))
        else:
            h, self_w = self_attend(x)
            x = self.norm1(x + _drop(self.dropout, h))
            h, cross_w = cross_attend(x)
            x = self.norm2(x + _drop(self.dropout, h))
            x = self.norm3(x + _drop(self.dropout, self.ff(x)))
        return x, self_w, cross_w


def _final_norm(final_norm: bool, layer_kwargs: dict) -> nn.Module | None:
    if not final_norm:
        return None
    return make_norm(layer_kwargs.get("norm", "layernorm"), layer_kwargs["d_model"],
                     layer_kwargs.get("layer_norm_eps", 1e-5))


class Encoder(nn.Module):
    """A stack of layers (``EncoderLayer``) with an optional final norm (pre-norm models need
    it).

    Args:
        layers: the layers, applied in order.
        norm: applied after the last layer, or ``None``.
    """

    def __init__(self, layers: Iterable[nn.Module], *, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.gradient_checkpointing = False

    @classmethod
    def build(cls, n_layers: int, *, final_norm: bool = False, **layer_kwargs) -> Encoder:
        """``n_layers`` of ``EncoderLayer.build(**layer_kwargs)``, with a final norm of the
        layers' kind if ``final_norm``."""
        return cls([EncoderLayer.build(**layer_kwargs) for _ in range(n_layers)],
                   norm=_final_norm(final_norm, layer_kwargs))

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None,
                is_causal: bool = False, cache: KVCache | None = None,
                output_attentions: bool = False, rotary: Rotary | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """x (B, T, D) -> (x (B, T, D), per-layer weights (B, H, T, Tk) if requested)."""
        attentions = []
        for i, layer in enumerate(self.layers):
            layer_cache = cache[i] if cache is not None else None
            if self.gradient_checkpointing and self.training and layer_cache is None:
                x, weights = checkpoint(layer, x, mask=mask, is_causal=is_causal,
                                        need_weights=output_attentions, rotary=rotary,
                                        use_reentrant=False)
            else:
                x, weights = layer(x, mask=mask, is_causal=is_causal, cache=layer_cache,
                                   need_weights=output_attentions, rotary=rotary)
            attentions.append(weights)
        if self.norm is not None:
            x = self.norm(x)
        return x, tuple(attentions) if output_attentions else None


class Decoder(nn.Module):
    """A stack of ``DecoderLayer`` with an optional final norm. ``cache`` holds one
    ``LayerCache`` per layer for self-attention and ``cross_cache`` one per layer for the
    encoder keys/values (computed on the first call, reused after)."""

    def __init__(self, layers: Iterable[nn.Module], *, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.gradient_checkpointing = False

    @classmethod
    def build(cls, n_layers: int, *, final_norm: bool = False, **layer_kwargs) -> Decoder:
        """``n_layers`` of ``DecoderLayer.build(**layer_kwargs)`` (see ``Encoder.build``)."""
        return cls([DecoderLayer.build(**layer_kwargs) for _ in range(n_layers)],
                   norm=_final_norm(final_norm, layer_kwargs))

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None, *,
                self_mask: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                is_causal: bool = True, cache: KVCache | None = None,
                cross_cache: KVCache | None = None, output_attentions: bool = False,
                rotary: Rotary | None = None):
        """Returns (x (B, T, D), self-attention weights, cross-attention weights); the
        weight tuples are ``None`` unless ``output_attentions``."""
        self_ws, cross_ws = [], []
        for i, layer in enumerate(self.layers):
            kwargs = dict(self_mask=self_mask, memory_mask=memory_mask, is_causal=is_causal,
                          self_cache=cache[i] if cache is not None else None,
                          cross_cache=cross_cache[i] if cross_cache is not None else None,
                          need_weights=output_attentions, rotary=rotary)
            if self.gradient_checkpointing and self.training and cache is None:
                x, self_w, cross_w = checkpoint(layer, x, memory, use_reentrant=False, **kwargs)
            else:
                x, self_w, cross_w = layer(x, memory, **kwargs)
            self_ws.append(self_w)
            cross_ws.append(cross_w)
        if self.norm is not None:
            x = self.norm(x)
        if not output_attentions:
            return x, None, None
        return x, tuple(self_ws), tuple(cross_ws)
