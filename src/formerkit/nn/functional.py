"""Math shared by the blocks' forward passes and the compiled decoding step
(``formerkit.nn.decoding``): each piece is defined once, here, and both paths call it.

This module avoids ``from __future__ import annotations``: TorchScript reads the annotations.
"""


import torch
import torch.nn.functional as F
from torch import Tensor


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """weight * x / sqrt(mean(x^2) + eps), computed in float32 and cast back before the
    weight, as Llama's reference (and HuggingFace) do, so bf16 runs match them."""
    # Written out rather than F.rms_norm: the same arithmetic as those references, and
    # exportable to ONNX (the TorchScript-based exporter has no aten::rms_norm).
    x32 = x.float()
    normalised = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normalised.to(x.dtype)


def rotate_half(x: Tensor) -> Tensor:
    """(..., K) -> (..., K): [x1 | x2] -> [-x2 | x1]."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, H, T, K) by angles whose cos/sin are (B|1, 1, T, K)."""
    return x * cos + rotate_half(x) * sin


def attend_one_query(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
                     window: int) -> Tensor:
    """SDPA of one query per row: the decoding step's attention.

    Args:
        q: (B, H, 1, K); k, v: (B, Hkv, Tk, K) with H a multiple of Hkv (grouped-query).
        mask: bool (B|1, 1, 1, Tk), True = may attend; at least one key visible per row.
        window: keep only the last ``window`` keys (sliding-window attention); 0 = all.

    Returns:
        (B, H, 1, K).
    """
    total = k.shape[2]
    if window > 0 and total > window:
        start = total - window
        k, v = k.narrow(2, start, window), v.narrow(2, start, window)
        if mask is not None:
            mask = mask.narrow(3, start, window)
    batch, heads, kv_heads, head_dim = q.shape[0], q.shape[1], k.shape[1], q.shape[3]
    if kv_heads == heads:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    # Grouped-query: the G = H / Hkv query heads of a key/value head become G queries of it,
    # so keys and values are never copied per query head.
    grouped = q.view(batch, kv_heads, heads // kv_heads, head_dim)  # (B, Hkv, G, K)
    out = F.scaled_dot_product_attention(grouped, k, v, attn_mask=mask)
    return out.view(batch, heads, 1, head_dim)  # (B, H, 1, K)
