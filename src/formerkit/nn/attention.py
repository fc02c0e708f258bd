"""Scaled dot-product attention (Vaswani et al. 2017, eq. 1) and multi-head attention.

Backends: ``"sdpa"`` calls torch's fused kernels (flash / memory-efficient / C++ math);
``"math"`` computes softmax(QK^T / sqrt(d_k)) V explicitly and can return the weights;
``"linear"`` is kernelised linear attention (Katharopoulos et al. 2020), O(T) in length:
phi(q) (sum_j phi(k_j) v_j^T) / (phi(q) . sum_j phi(k_j)) with phi = elu + 1.
Masks are boolean with True = may attend (see ``formerkit.nn.masks``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from formerkit.nn.cache import LayerCache
from formerkit.nn.functional import apply_rotary, attend_one_query
from formerkit.nn.linear import apply_linear
from formerkit.nn.masks import causal_mask, sliding_window_mask

BACKENDS = ("sdpa", "math", "linear")


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    backend: str = "sdpa",
    *,
    need_weights: bool = False,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T / sqrt(d_k) + mask) v.

    Args:
        q: (B, H, Tq, K) queries.
        k: (B, H, Tk, K) keys; v: (B, H, Tk, Kv) values.
        mask: bool, broadcastable to (B, H, Tq, Tk), True = may attend.
        dropout_p: dropout on the attention weights (pass 0.0 at evaluation).
        is_causal: causal structure aligned bottom-right (correct with a KV cache, Tq < Tk).
        backend: ``"sdpa"`` or ``"math"``; ``need_weights`` forces ``"math"``.
        scale: score scale, default 1/sqrt(K).

    Returns:
        (output (B, H, Tq, Kv), weights (B, H, Tq, Tk) or None). A query whose keys are all
        masked gets a zero output (and zero weights) instead of NaN.
    """
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"attention mask must be bool (True = may attend), got {mask.dtype}")
    if backend == "linear":
        out = linear_attention(q, k, v, mask, is_causal=is_causal)
        return out, linear_attention_weights(q, k, mask, is_causal=is_causal) \
            if need_weights else None
    query_len, key_len = q.shape[-2], k.shape[-2]
    if is_causal and (mask is not None or query_len != key_len or backend == "math"
                      or need_weights):
        # torch's is_causal aligns top-left; build the bottom-right mask instead.
        if query_len > 1:
            structure = causal_mask(query_len, key_len, device=q.device)
            mask = structure if mask is None else mask & structure
        is_causal = False
    empty_rows = None
    if mask is not None:
        has_key = mask.any(dim=-1, keepdim=True)  # (B|1, H|1, Tq, 1)
        if not bool(has_key.all()):
            # Let fully masked rows attend everywhere (finite softmax), then zero them.
            empty_rows = ~has_key
            mask = mask | empty_rows
    if backend == "sdpa" and not need_weights:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                             is_causal=is_causal, scale=scale)
        weights = None
    else:
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        if empty_rows is not None:
            weights = weights.masked_fill(empty_rows, 0.0)
        dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
        out = torch.matmul(dropped, v)  # (B, H, Tq, Kv)
    if empty_rows is not None:
        out = out.masked_fill(empty_rows, 0.0)
    return out, weights if need_weights else None


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     mask: torch.Tensor | None = None, *, is_causal: bool = False,
                     eps: float = 1e-6) -> torch.Tensor:
    """Kernelised linear attention with feature map elu(x) + 1.

    Args:
        q: (B, H, Tq, K); k: (B, H, Tk, K); v: (B, H, Tk, Kv).
        mask: key-padding mask only, bool broadcastable to (B, H, 1, Tk), True = may attend.
            Linear attention never forms the (Tq, Tk) matrix, so it cannot apply arbitrary masks.
        is_causal: query i sees keys up to ``Tk - Tq + i`` (bottom-right, cache-friendly).

    Returns:
        (B, H, Tq, Kv); queries with no visible key get zeros.
    """
    if mask is not None and mask.shape[-2] != 1:
        raise ValueError("linear attention takes a key-padding mask of shape (B, 1, 1, Tk) "
                         f"and is_causal separately, got a mask of shape {tuple(mask.shape)}")
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    if mask is not None:
        phi_k = phi_k * mask.transpose(-2, -1).to(phi_k.dtype)  # (B, H|1, Tk, 1)
    if not is_causal:
        context = torch.matmul(phi_k.transpose(-2, -1), v)  # (B, H, K, Kv)
        normaliser = phi_k.sum(dim=-2, keepdim=True)  # (B, H, 1, K)
        numerator = torch.matmul(phi_q, context)  # (B, H, Tq, Kv)
        denominator = (phi_q * normaliser).sum(-1, keepdim=True)  # (B, H, Tq, 1)
    else:
        offset = k.shape[-2] - q.shape[-2]
        # Running sums over keys; query i reads the prefix ending at key offset + i.
        context = torch.einsum("bhtk,bhtv->bhtkv", phi_k, v).cumsum(dim=2)[:, :, offset:]
        normaliser = phi_k.cumsum(dim=2)[:, :, offset:]  # (B, H, Tq, K)
        numerator = torch.einsum("bhtk,bhtkv->bhtv", phi_q, context)
        denominator = (phi_q * normaliser).sum(-1, keepdim=True)
    return numerator / denominator.clamp(min=eps) * (denominator > eps)


def linear_attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None,
                             *, is_causal: bool = False) -> torch.Tensor:
    """The (B, H, Tq, Tk) weights linear attention applies implicitly (for inspection only:
    this forms the quadratic matrix that the fast path avoids)."""
    scores = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-2, -1)  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores * mask
    if is_causal:
        scores = scores * causal_mask(q.shape[-2], k.shape[-2], device=q.device)
    total = scores.sum(-1, keepdim=True)
    return torch.where(total > 0, scores / total.clamp(min=1e-30), torch.zeros_like(scores))


def repeat_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, Hkv, T, K) -> (B, H, T, K): key/value head j serves query heads j*G .. j*G + G - 1."""
    kv_heads = x.shape[1]
    if kv_heads == heads:
        return x
    return x.repeat_interleave(heads // kv_heads, dim=1)


class MultiHeadAttention(nn.Module):
    """Multi-head attention: multi-head, grouped-query or multi-query (``n_kv_heads``), self-
    or cross-attention, fused or separate q/k/v projections, an optional rotary position hook
    on q and k, sliding-window masking, and a KV cache.

    Parameters are named ``qkv_proj`` (fused self-attention, rows q | k | v), ``q_proj`` +
    ``kv_proj`` (fused cross-attention) or ``q_proj``, ``k_proj``, ``v_proj`` (separate), and
    ``out_proj``.

    Args:
        d_model: model width D.
        n_heads: H query heads.
        n_kv_heads: Hkv key/value heads (default H); H must be a multiple of it.
        head_dim: K (default D / H, which must then divide evenly).
        dropout: dropout on attention weights during training.
        bias: default for ``qkv_bias`` and ``out_bias``.
        qkv_bias, out_bias: biases of the input projections and of the output projection.
        fused_qkv: one projection for q, k, v (or k, v in cross-attention).
        cross: cross-attention (keys/values from ``memory``) instead of self-attention.
        sliding_window: each query sees at most this many most recent keys (itself included),
            as Mistral; ``None`` = unlimited. Causal self-attention only.
        backend: default attention backend, ``"sdpa"``, ``"math"`` or ``"linear"``.
    """

    def __init__(self, d_model: int, n_heads: int, *, n_kv_heads: int | None = None,
                 head_dim: int | None = None, dropout: float = 0.0, bias: bool = True,
                 qkv_bias: bool | None = None, out_bias: bool | None = None,
                 fused_qkv: bool = True, cross: bool = False, sliding_window: int | None = None,
                 backend: str = "sdpa") -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if head_dim is None:
            if d_model % n_heads != 0:
                raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
            head_dim = d_model // n_heads
        if n_kv_heads < 1 or n_heads % n_kv_heads != 0:
            raise ValueError(f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}")
        if backend not in BACKENDS:
            raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
        if sliding_window is not None and (cross or sliding_window < 1):
            raise ValueError(f"sliding_window={sliding_window} needs causal self-attention and "
                             "a positive window")
        self.d_model, self.n_heads, self.n_kv_heads, self.head_dim = (
            d_model, n_heads, n_kv_heads, head_dim)
        self.dropout, self.cross, self.backend = dropout, cross, backend
        self.fused_qkv, self.sliding_window = fused_qkv, sliding_window
        qkv_bias = bias if qkv_bias is None else qkv_bias
        out_bias = bias if out_bias is None else out_bias
        q_width, kv_width = n_heads * head_dim, n_kv_heads * head_dim
        if fused_qkv and not cross:
            self.qkv_proj = nn.Linear(d_model, q_width + 2 * kv_width, bias=qkv_bias)
        else:
            self.q_proj = nn.Linear(d_model, q_width, bias=qkv_bias)
            if fused_qkv:
                self.kv_proj = nn.Linear(d_model, 2 * kv_width, bias=qkv_bias)
            else:
                self.k_proj = nn.Linear(d_model, kv_width, bias=qkv_bias)
                self.v_proj = nn.Linear(d_model, kv_width, bias=qkv_bias)
        self.out_proj = nn.Linear(q_width, d_model, bias=out_bias)

    def _heads(self, x: torch.Tensor, n_heads: int) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, K)

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, Hkv, S, K) of ``source`` (B, S, D)."""
        kv_width = self.n_kv_heads * self.head_dim
        if self.fused_qkv:
            k, v = apply_linear(self.kv_proj, source).split(kv_width, dim=-1)
        else:
            k, v = apply_linear(self.k_proj, source), apply_linear(self.v_proj, source)
        return self._heads(k, self.n_kv_heads), self._heads(v, self.n_kv_heads)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention queries (B, H, T, K), keys and values (B, Hkv, T, K) of x (B, T, D)."""
        if self.fused_qkv:
            kv_width = self.n_kv_heads * self.head_dim
            widths = [self.n_heads * self.head_dim, kv_width, kv_width]
            q, k, v = apply_linear(self.qkv_proj, x).split(widths, dim=-1)
        else:
            q, k, v = (apply_linear(self.q_proj, x), apply_linear(self.k_proj, x),
                       apply_linear(self.v_proj, x))
        return (self._heads(q, self.n_heads), self._heads(k, self.n_kv_heads),
                self._heads(v, self.n_kv_heads))

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: LayerCache | None = None,
        need_weights: bool = False,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``x`` (B, T, D) to itself or to ``memory`` (B, S, D).

        Args:
            mask: bool, broadcastable to (B, H, T, Tk), True = may attend; Tk includes cached keys.
            is_causal: causal self-attention (bottom-right aligned when a cache holds past keys).
            cache: per-layer cache. Self-attention appends the new keys/values; cross-attention
                computes the memory's keys/values once and reuses them.
            need_weights: also return the (B, H, T, Tk) attention weights (``math`` backend).
            rotary: (cos, sin), each (B|1, 1, T, K), rotating the new queries and keys before
                they are cached (``formerkit.nn.rotary.RotaryEmbedding``).

        Returns:
            (output (B, T, D), weights or None).
        """
        batch, length, _ = x.shape
        if self.cross:
            q = self._heads(apply_linear(self.q_proj, x), self.n_heads)
            if cache is not None and cache.cross_k is not None:
                k, v = cache.cross_k, cache.cross_v
            else:
                if memory is None:
                    raise ValueError("cross-attention needs `memory` (the encoder output)")
                k, v = self.project_kv(memory)  # (B, Hkv, S, K)
                if cache is not None:
                    cache.set_cross(k, v)
        else:
            q, k, v = self.project_qkv(x)
            if rotary is not None:
                q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
            if cache is not None:
                k, v = cache.append(k, v)  # (B, Hkv, Tk, K) including the past
        dropout_p = self.dropout if self.training else 0.0
        window = self.sliding_window or 0
        one_query = (length == 1 and not need_weights and self.backend == "sdpa"
                     and dropout_p == 0.0 and (mask is None or mask.shape[1] == 1))
        if one_query and (cache is not None and not self.cross  # the new key is visible
                          or self.cross and (mask is None or bool(mask.any(-1).all()))):
            # One query per row: the decoding step's attention (see formerkit.nn.decoding).
            out = attend_one_query(q, k, v, mask, 0 if self.cross else window)
            weights = None
        else:
            if window and k.shape[2] > window:  # the band is causal itself
                band = sliding_window_mask(length, k.shape[2], window, device=x.device)
                mask = band if mask is None else mask & band
            out, weights = scaled_dot_product_attention(
                q, repeat_kv(k, self.n_heads), repeat_kv(v, self.n_heads), mask,
                dropout_p=dropout_p, is_causal=is_causal and not self.cross,
                backend=self.backend, need_weights=need_weights)
        out = out.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_dim)
        return apply_linear(self.out_proj, out), weights  # (B, T, D)
