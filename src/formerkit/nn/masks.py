"""Attention masks, one convention everywhere: boolean, True = may attend (as torch SDPA).

Masks broadcast against attention scores of shape (B, H, Tq, Tk). A causal mask is aligned
bottom-right: with a KV cache the Tq new queries sit at absolute positions
``Tk - Tq .. Tk - 1``, so query i may see keys ``0 .. Tk - Tq + i``.
"""

from __future__ import annotations

import torch


def causal_mask(query_len: int, key_len: int | None = None, *,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Bottom-right aligned causal mask of shape (1, 1, Tq, Tk).

    Args:
        query_len: Tq, the number of new queries.
        key_len: Tk >= Tq, keys including cached ones (default Tq).
    """
    key_len = query_len if key_len is None else key_len
    if key_len < query_len:
        raise ValueError(f"key_len ({key_len}) must be >= query_len ({query_len})")
    offset = key_len - query_len
    mask = torch.ones(query_len, key_len, dtype=torch.bool, device=device).tril(diagonal=offset)
    return mask[None, None]  # (1, 1, Tq, Tk)


def sliding_window_mask(query_len: int, key_len: int, window: int, *,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """Causal mask (1, 1, Tq, Tk), bottom-right aligned, in which each query also sees at most
    ``window`` keys: itself and the ``window - 1`` before it (Mistral's sliding window)."""
    offset = key_len - query_len
    if offset < 0:
        raise ValueError(f"key_len ({key_len}) must be >= query_len ({query_len})")
    ones = torch.ones(query_len, key_len, dtype=torch.bool, device=device)
    band = ones.tril(diagonal=offset) & ones.triu(diagonal=offset - window + 1)
    return band[None, None]  # (1, 1, Tq, Tk)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """HF-style ``attention_mask`` (B, Tk), 1 = token, 0 = padding -> bool (B, 1, 1, Tk)."""
    if attention_mask.dim() != 2:
        raise ValueError("attention_mask must have shape (B, T), "
                         f"got {tuple(attention_mask.shape)}")
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, Tk)


def make_attention_mask(
    attention_mask: torch.Tensor | None = None,
    *,
    query_len: int,
    key_len: int | None = None,
    causal: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """Combine padding and causal structure into one boolean mask, or ``None`` if nothing is
    masked (so the caller can take a fused fast path).

    Args:
        attention_mask: (B, Tk) with 1 = attend, 0 = padding; covers cached keys too.
        query_len: Tq.
        key_len: Tk (default: ``attention_mask.shape[1]`` or Tq). ``Tk - Tq`` is the cache offset.
        causal: add the bottom-right aligned causal structure.

    Returns:
        bool tensor broadcastable to (B, H, Tq, Tk), True = may attend; or ``None``.
    """
    if key_len is None:
        key_len = attention_mask.shape[1] if attention_mask is not None else query_len
    if attention_mask is not None and attention_mask.shape[1] != key_len:
        raise ValueError(f"attention_mask covers {attention_mask.shape[1]} keys, "
                         f"expected {key_len}")
    device = attention_mask.device if attention_mask is not None else device
    mask = None
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        mask = padding_mask(attention_mask)
    if causal and query_len > 1:
        structure = causal_mask(query_len, key_len, device=device)
        mask = structure if mask is None else mask & structure
    return mask
