"""Transformer layers (Vaswani et al. 2017, sec. 3.1-3.3): feed-forward, encoder and decoder
layers with residual + LayerNorm in post-norm (paper) or pre-norm placement, and their stacks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from formerkit.nn.attention import MultiHeadAttention, apply_layer_norm, apply_linear
from formerkit.nn.cache import KVCache, LayerCache

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
        return self.fc2(_drop(self.dropout, self.activation(self.fc1(x))))

    def decode_step(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` in evaluation, with less per-call overhead (see ``apply_linear``)."""
        return apply_linear(self.fc2, self.activation(apply_linear(self.fc1, x)))


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each with residual + LayerNorm.

    Post-norm (paper, BERT): x = LN(x + drop(sublayer(x))).
    Pre-norm (GPT-2, ViT):   x = x + drop(sublayer(LN(x))).
    With ``causal=True`` at call time this is also the decoder-only (GPT) block.

    Args:
        d_model, n_heads, d_ff: widths and heads.
        dropout: on each sublayer's output; ``attn_dropout`` on attention weights (default
            ``dropout``); ``activation_dropout`` inside the feed-forward.
        activation: feed-forward activation name.
        norm_first: pre-norm placement.
        layer_norm_eps: LayerNorm epsilon.
        bias: projection biases.
        backend: attention backend.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, *, dropout: float = 0.1,
                 attn_dropout: float | None = None, activation_dropout: float = 0.0,
                 activation: str = "relu", norm_first: bool = False,
                 layer_norm_eps: float = 1e-5, bias: bool = True, backend: str = "sdpa") -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(
            d_model, n_heads, dropout=dropout if attn_dropout is None else attn_dropout,
            bias=bias, backend=backend)
        self.ff = FeedForward(d_model, d_ff, activation=activation,
                              activation_dropout=activation_dropout, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None,
                is_causal: bool = False, cache=None, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, D); mask bool broadcastable to (B, H, T, Tk). Returns (x, weights)."""
        def attend(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            return self.self_attn(h, mask=mask, is_causal=is_causal, cache=cache,
                                  need_weights=need_weights)

        if self.norm_first:
            h, weights = attend(self.norm1(x))
            x = x + _drop(self.dropout, h)
            x = x + _drop(self.dropout, self.ff(self.norm2(x)))
        else:
            h, weights = attend(x)
            x = self.norm1(x + _drop(self.dropout, h))
            x = self.norm2(x + _drop(self.dropout, self.ff(x)))
        return x, weights

    def decode_step(self, x: torch.Tensor, cache: LayerCache,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
        """One new position per row, causal over the cache, in evaluation (no dropout).

        x (B, D); mask bool (B, 1, 1, Tk) or ``None``. Equals ``forward`` on x[:, None] with
        ``is_causal=True`` and the cache; see ``MultiHeadAttention.decode_step``.
        """
        if self.norm_first:
            x = x + self.self_attn.decode_step(apply_layer_norm(self.norm1, x), cache, mask)
            return x + self.ff.decode_step(apply_layer_norm(self.norm2, x))
        x = apply_layer_norm(self.norm1, x + self.self_attn.decode_step(x, cache, mask))
        return apply_layer_norm(self.norm2, x + self.ff.decode_step(x))


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder output, feed-forward; each with
    residual + LayerNorm (post-norm as in the paper, or pre-norm). Arguments as
    ``EncoderLayer``."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, *, dropout: float = 0.1,
                 attn_dropout: float | None = None, activation_dropout: float = 0.0,
                 activation: str = "relu", norm_first: bool = False,
                 layer_norm_eps: float = 1e-5, bias: bool = True, backend: str = "sdpa") -> None:
        super().__init__()
        self.norm_first = norm_first
        attn_p = dropout if attn_dropout is None else attn_dropout
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=attn_p, bias=bias,
                                            backend=backend)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=attn_p, bias=bias,
                                             cross=True, backend=backend)
        self.ff = FeedForward(d_model, d_ff, activation=activation,
                              activation_dropout=activation_dropout, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None, *,
                self_mask: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                is_causal: bool = True, self_cache=None, cross_cache=None,
                need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x (B, T, D) target; memory (B, S, D) encoder output (may be ``None`` when the cross
        cache already holds its keys/values); self_mask (.., T, Tk), memory_mask (.., T|1, S).

        Returns:
            (x, self-attention weights, cross-attention weights).
        """
        def self_attend(h):
            return self.self_attn(h, mask=self_mask, is_causal=is_causal, cache=self_cache,
                                  need_weights=need_weights)

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


class Encoder(nn.Module):
    """A stack of ``EncoderLayer`` with an optional final LayerNorm (pre-norm models need it).

    Args:
        n_layers: depth.
        final_norm: apply LayerNorm after the last layer.
        **layer_kwargs: passed to every ``EncoderLayer`` (d_model, n_heads, d_ff, ...).
    """

    def __init__(self, n_layers: int, *, final_norm: bool = False, **layer_kwargs) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(**layer_kwargs) for _ in range(n_layers))
        d_model = layer_kwargs["d_model"]
        self.norm = nn.LayerNorm(d_model, eps=layer_kwargs.get("layer_norm_eps", 1e-5)) \
            if final_norm else None
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None,
                is_causal: bool = False, cache: KVCache | None = None,
                output_attentions: bool = False
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """x (B, T, D) -> (x (B, T, D), per-layer weights (B, H, T, Tk) if requested)."""
        attentions = []
        for i, layer in enumerate(self.layers):
            layer_cache = cache[i] if cache is not None else None
            if self.gradient_checkpointing and self.training and layer_cache is None:
                x, weights = checkpoint(layer, x, mask=mask, is_causal=is_causal,
                                        need_weights=output_attentions, use_reentrant=False)
            else:
                x, weights = layer(x, mask=mask, is_causal=is_causal, cache=layer_cache,
                                   need_weights=output_attentions)
            attentions.append(weights)
        if self.norm is not None:
            x = self.norm(x)
        return x, tuple(attentions) if output_attentions else None

    def decode_step(self, x: torch.Tensor, cache: KVCache,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
        """Causal incremental decoding of one new position per row: x (B, D) -> (B, D).

        The fast path ``formerkit.generation`` takes for decoder-only models; equal to
        ``forward(x[:, None], is_causal=True, cache=cache)`` in evaluation mode.
        """
        if self.training:
            raise RuntimeError("Encoder.decode_step is for inference; call model.eval() first "
                               "(it applies no dropout)")
        for layer, layer_cache in zip(self.layers, cache.layers, strict=True):
            x = layer.decode_step(x, layer_cache, mask)
        return apply_layer_norm(self.norm, x) if self.norm is not None else x


class Decoder(nn.Module):
    """A stack of ``DecoderLayer`` with an optional final LayerNorm. ``cache`` holds one
    ``LayerCache`` per layer for self-attention and ``cross_cache`` one per layer for the
    encoder keys/values (computed on the first call, reused after)."""

    def __init__(self, n_layers: int, *, final_norm: bool = False, **layer_kwargs) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(**layer_kwargs) for _ in range(n_layers))
        d_model = layer_kwargs["d_model"]
        self.norm = nn.LayerNorm(d_model, eps=layer_kwargs.get("layer_norm_eps", 1e-5)) \
            if final_norm else None
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None, *,
                self_mask: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                is_causal: bool = True, cache: KVCache | None = None,
                cross_cache: KVCache | None = None, output_attentions: bool = False):
        """Returns (x (B, T, D), self-attention weights, cross-attention weights); the
        weight tuples are ``None`` unless ``output_attentions``."""
        self_ws, cross_ws = [], []
        for i, layer in enumerate(self.layers):
            kwargs = dict(self_mask=self_mask, memory_mask=memory_mask, is_causal=is_causal,
                          self_cache=cache[i] if cache is not None else None,
                          cross_cache=cross_cache[i] if cross_cache is not None else None,
                          need_weights=output_attentions)
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
