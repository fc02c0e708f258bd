"""Normalisation layers: LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019), built
by name through ``make_norm`` so a layer can be handed either."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from formerkit.nn.functional import rms_norm

NORMS = ("layernorm", "rmsnorm")


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned scale and no bias or centring.

    Args:
        d_model: D, the normalised (last) dimension.
        eps: added to the mean square.
    """

    def __init__(self, d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(kind: str, d_model: int, eps: float) -> nn.Module:
    """``"layernorm"`` -> ``nn.LayerNorm``, ``"rmsnorm"`` -> ``RMSNorm``."""
    if kind == "layernorm":
        return nn.LayerNorm(d_model, eps=eps)
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps=eps)
    raise ValueError(f"norm must be one of {list(NORMS)}, got {kind!r}")
