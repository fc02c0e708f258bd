"""Weight initialisation schemes: normal(0, 0.02) as BERT/GPT-2, truncated normal, xavier."""

from __future__ import annotations

import math

from torch import nn

from formerkit.nn.norms import RMSNorm

SCHEMES = ("normal", "trunc_normal", "xavier")


def init_weights(module: nn.Module, *, scheme: str = "normal", std: float = 0.02) -> None:
    """Initialise one module (use with ``model.apply``): linear and embedding weights by
    ``scheme``, biases to zero, LayerNorm and RMSNorm to identity. ``trunc_normal`` cuts at
    two standard deviations (``nn.init.trunc_normal_`` takes absolute bounds, so they are
    scaled by std)."""
    if scheme not in SCHEMES:
        raise ValueError(f"init scheme must be one of {SCHEMES}, got {scheme!r}")
    if isinstance(module, (nn.Linear, nn.Embedding)):
        if scheme == "normal":
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif scheme == "trunc_normal":
            nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
        else:
            nn.init.xavier_uniform_(module.weight)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()
    elif isinstance(module, RMSNorm):
        nn.init.ones_(module.weight)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def scale_residual_projections(model: nn.Module, n_layers: int, *, std: float = 0.02,
                               suffixes: tuple[str, ...] = ("out_proj.weight", "fc2.weight")
                               ) -> None:
    """GPT-2's scaled init: projections that write into the residual stream get
    std / sqrt(2 * n_layers), so the stream's variance does not grow with depth."""
    scaled = std / math.sqrt(2 * n_layers)
    for name, param in model.named_parameters():
        if name.endswith(suffixes):
            nn.init.normal_(param, mean=0.0, std=scaled)
