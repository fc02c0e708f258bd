"""Rotary position embedding (Su et al. 2021, "RoFormer"): rotate query and key features by
angles proportional to the position, so q . k depends on the positions' difference.

Features are rotated in ``[first half | second half]`` pairs (the layout Llama checkpoints use
on HuggingFace). Context extension follows HuggingFace's ``rope_type`` values: ``linear``
(positions divided by ``factor``), ``dynamic`` (NTK-aware base growth once a sequence outgrows
``max_seq_len``) and ``llama3`` (Llama 3.1's wavelength-dependent smoothing).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from formerkit.nn.functional import apply_rotary, rotate_half  # noqa: F401  (re-exported)

ROPE_TYPES = ("default", "linear", "dynamic", "llama3")
_REQUIRED = {"linear": ("factor",), "dynamic": ("factor",),
             "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                        "original_max_position_embeddings")}


def check_rope_scaling(scaling: dict[str, Any] | None) -> None:
    """Raise ``ValueError`` naming the problem for an unsupported or incomplete scaling dict."""
    if scaling is None:
        return
    if not isinstance(scaling, dict):
        raise ValueError(f"rope_scaling must be a dict or None, got {scaling!r}")
    kind = scaling.get("rope_type", "default")
    if kind not in ROPE_TYPES:
        raise ValueError(f"rope_scaling type {kind!r} is not supported; supported: "
                         f"{', '.join(ROPE_TYPES)}")
    missing = [key for key in _REQUIRED.get(kind, ()) if key not in scaling]
    if missing:
        raise ValueError(f"rope_scaling of type {kind!r} lacks {', '.join(missing)}")


def inverse_frequencies(head_dim: int, theta: float, scaling: dict[str, Any] | None = None,
                        *, max_seq_len: int | None = None, seq_len: int | None = None) -> Tensor:
    """The (head_dim / 2,) float32 rotation frequencies theta^(-2i / head_dim), scaled.

    Args:
        head_dim: K, the rotated features per head (even).
        theta: the base (``rope_theta``).
        scaling: HF-style ``{"rope_type": ..., "factor": ...}`` or ``None``.
        max_seq_len: trained context; ``dynamic`` scaling grows the base beyond it.
        seq_len: the longest position + 1 in the current call (``dynamic`` only).
    """
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    kind = (scaling or {}).get("rope_type", "default")
    if kind == "dynamic":
        factor = scaling["factor"]
        longest = max(seq_len or 0, max_seq_len)
        theta = theta * ((factor * longest / max_seq_len) - (factor - 1)) ** (
            head_dim / (head_dim - 2))
    inv_freq = 1.0 / (theta ** exponents)
    if kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind == "llama3":
        inv_freq = _llama3_frequencies(inv_freq, scaling)
    return inv_freq


def _llama3_frequencies(inv_freq: Tensor, scaling: dict[str, Any]) -> Tensor:
    # Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_position_embeddings"]
    wavelength = 2 * math.pi / inv_freq
    slowed = torch.where(wavelength > context / low, inv_freq / factor, inv_freq)
    smooth = (context / wavelength - low) / (high - low)
    smoothed = (1 - smooth) * slowed / factor + smooth * slowed
    medium = ~(wavelength < context / high) * ~(wavelength > context / low)
    return torch.where(medium, smoothed, slowed)


class RotaryEmbedding(nn.Module):
    """cos/sin tables of the rotation for given position ids; applied to q and k by attention.

    Args:
        head_dim: K.
        max_seq_len: the trained context (``dynamic`` scaling starts beyond it).
        theta: the base, 10000 in the paper (``rope_theta``).
        scaling: HF-style rope scaling dict (see ``ROPE_TYPES``) or ``None``.
    """

    def __init__(self, head_dim: int, *, max_seq_len: int, theta: float = 10000.0,
                 scaling: dict[str, Any] | None = None) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
        check_rope_scaling(scaling)
        self.head_dim, self.max_seq_len, self.theta = head_dim, max_seq_len, theta
        self.scaling = dict(scaling) if scaling else None
        self.register_buffer("inv_freq", inverse_frequencies(head_dim, theta, scaling,
                                                             max_seq_len=max_seq_len),
                             persistent=False)

    def _frequencies(self, position_ids: Tensor) -> Tensor:
        if (self.scaling or {}).get("rope_type") != "dynamic":
            return self.inv_freq
        longest = int(position_ids.max()) + 1 if position_ids.numel() else 0
        if longest <= self.max_seq_len:
            return self.inv_freq
        return inverse_frequencies(self.head_dim, self.theta, self.scaling,
                                   max_seq_len=self.max_seq_len,
                                   seq_len=longest).to(self.inv_freq.device)

    def forward(self, position_ids: Tensor, dtype: torch.dtype = torch.float32
                ) -> tuple[Tensor, Tensor]:
        """position_ids (B|1, T) -> (cos, sin), each (B|1, 1, T, K) in ``dtype``."""
        freqs = position_ids[..., None].float() * self._frequencies(position_ids)  # (B, T, K/2)
        angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, T, K)
        return angles.cos().to(dtype), angles.sin().to(dtype)
