"""Absolute positions: sinusoidal (Vaswani et al. 2017, sec. 3.5) and learned embeddings.

PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)). fairseq and
Marian lay the same values out as ``[sin | cos]`` halves instead of interleaving them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LAYOUTS = ("interleaved", "halves")


def sinusoidal_table(max_len: int, d_model: int, *, layout: str = "interleaved") -> torch.Tensor:
    """The (max_len, d_model) sinusoidal table in the given layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if d_model % 2 != 0:
        raise ValueError(f"sinusoidal positions need an even d_model, got {d_model}")
    position = torch.arange(max_len, dtype=torch.float64)[:, None]  # (T, 1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64)
                         * (-math.log(10000.0) / d_model))  # (D/2,)
    angles = position * inv_freq  # (T, D/2)
    if layout == "halves":
        table = torch.cat([angles.sin(), angles.cos()], dim=-1)
    else:
        table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (T, D)
    return table.float()


def check_length(length: int, max_len: int) -> None:
    """Raise ``ValueError`` naming both lengths when ``length > max_len``. Callers that decode
    with a cache check the total length (cached + new), since ids past the table would index
    out of range."""
    if length > max_len:
        raise ValueError(f"sequence length {length} exceeds the maximum of {max_len} positions")


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sinusoidal table (a non-persistent buffer, so checkpoints do not carry it)."""

    def __init__(self, max_len: int, d_model: int, *, layout: str = "interleaved") -> None:
        super().__init__()
        self.max_len = max_len
        self.register_buffer("table", sinusoidal_table(max_len, d_model, layout=layout),
                             persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        """position_ids (..., T) integer -> (..., T, D)."""
        check_length(position_ids.shape[-1], self.max_len)
        return self.table[position_ids]


class LearnedPositionalEmbedding(nn.Embedding):
    """Trainable absolute positions (BERT, GPT)."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__(max_len, d_model)
        self.max_len = max_len

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        """position_ids (..., T) integer -> (..., T, D)."""
        check_length(position_ids.shape[-1], self.max_len)
        return super().forward(position_ids)


def positions(length: int, *, offset: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """Position ids ``offset .. offset + length - 1`` as a (1, T) tensor."""
    return torch.arange(offset, offset + length, device=device)[None]
