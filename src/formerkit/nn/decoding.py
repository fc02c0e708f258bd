"""One-token decoding steps of an ``Encoder`` stack with the least Python work per step.

At batch 1, a decoding step of a small model costs more in Python and dispatch than in
arithmetic. ``Encoder.decode_step`` walks each layer's modules at every step and checks each for
wrappers (LoRA, hooks). A ``DecodingPlan`` does that walk once per decoding run. It keeps every
layer's parameters in a flat tuple, with each linear weight as a transposed view, and replays
exactly the operations of ``Encoder.decode_step``: ``addmm(bias, x, weight.t())`` is what
``F.linear`` runs for a 2-D input, so the results are bit-identical.

A plan holds views of the parameters: it follows in-place updates (an optimizer step,
``load_state_dict``) but not replaced tensors (``module.to(dtype)``, a new ``nn.Parameter``).
Build one per decoding run, as ``GPTForCausalLM.start_decoding`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from formerkit.nn.attention import MultiHeadAttention, _plain
from formerkit.nn.cache import KVCache
from formerkit.nn.layers import Encoder, EncoderLayer


class _Norm(NamedTuple):
    shape: tuple[int, ...]
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float


class _Layer(NamedTuple):
    norm1: _Norm
    qkv_bias: torch.Tensor
    qkv_weight_t: torch.Tensor  # (D, 3D) view
    out_bias: torch.Tensor
    out_weight_t: torch.Tensor  # (D, D) view
    norm2: _Norm
    fc1_bias: torch.Tensor
    fc1_weight_t: torch.Tensor  # (D, d_ff) view
    activation: Callable[[torch.Tensor], torch.Tensor]
    fc2_bias: torch.Tensor
    fc2_weight_t: torch.Tensor  # (d_ff, D) view


def _norm(module: nn.Module) -> _Norm | None:
    if not _plain(module, nn.LayerNorm) or module.weight is None or module.bias is None:
        return None
    return _Norm(tuple(module.normalized_shape), module.weight, module.bias, module.eps)


def _linear(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not _plain(module, nn.Linear) or module.bias is None:
        return None
    return module.bias, module.weight.t()


def _gather(layer: nn.Module) -> _Layer | None:
    """The layer's tensors, or ``None`` if any part needs its module call (a LoRA wrapper,
    a hook, a missing bias, a non-``sdpa`` attention backend)."""
    if not _plain(layer, EncoderLayer):
        return None
    attn, ff = layer.self_attn, layer.ff
    if type(attn) is not MultiHeadAttention or attn.cross or attn.backend != "sdpa":
        return None
    parts = (_norm(layer.norm1), _linear(attn.qkv_proj), _linear(attn.out_proj),
             _norm(layer.norm2), _linear(ff.fc1), _linear(ff.fc2))
    if any(part is None for part in parts):
        return None
    norm1, qkv, out, norm2, fc1, fc2 = parts
    return _Layer(norm1, *qkv, *out, norm2, *fc1, ff.activation, *fc2)


class DecodingPlan:
    """An ``Encoder``'s decoding step over one new position per row, for inference.

    Build with ``DecodingPlan.build(encoder)``; ``step`` then equals ``encoder.decode_step``.
    """

    def __init__(self, encoder: Encoder, layers: list[_Layer], final_norm: _Norm | None
                 ) -> None:
        self.encoder, self.layers, self.final_norm = encoder, layers, final_norm
        self.norm_first = encoder.layers[0].norm_first
        self.n_heads = encoder.layers[0].self_attn.n_heads

    @classmethod
    def build(cls, encoder: Encoder) -> DecodingPlan | None:
        """A plan for ``encoder``, or ``None`` when some part must run as a module (LoRA or
        another wrapper, a hook, a layer without biases, the ``math`` or ``linear`` backend);
        callers then use ``encoder.decode_step``."""
        if type(encoder) is not Encoder or not len(encoder.layers):
            return None
        layers = [_gather(layer) for layer in encoder.layers]
        final_norm = _norm(encoder.norm) if encoder.norm is not None else None
        if any(layer is None for layer in layers) or (encoder.norm is not None
                                                      and final_norm is None):
            return None
        first = encoder.layers[0]
        if any(layer.norm_first != first.norm_first for layer in encoder.layers):
            return None
        return cls(encoder, layers, final_norm)

    def step(self, x: torch.Tensor, cache: KVCache,
             mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, D) -> (B, D); the new keys and values are appended to ``cache``.

        mask: bool (B, 1, 1, Tk) key-padding mask over the cached keys and the new one, or
        ``None``. Equals ``Encoder.decode_step(x, cache, mask)`` bit for bit.
        """
        if self.encoder.training:
            raise RuntimeError("DecodingPlan.step is for inference; call model.eval() first "
                               "(it applies no dropout)")
        batch, width = x.shape
        split = (batch, 3, self.n_heads, 1, width // self.n_heads)
        pre_norm, layer_norm = self.norm_first, torch.layer_norm  # F.layer_norm's wrapper costs
        for layer, layer_cache in zip(self.layers, cache.layers, strict=True):
            # Unpacked into locals: attribute lookups are a measurable share of a step.
            norm1, qkv_b, qkv_w, out_b, out_w, norm2, fc1_b, fc1_w, act, fc2_b, fc2_w = layer
            h = layer_norm(x, *norm1) if pre_norm else x
            # (B, 3D) -> (B, 3, H, 1, K): q, k, v come out already split into heads.
            q, k, v = torch.addmm(qkv_b, h, qkv_w).view(split).unbind(1)
            k, v = layer_cache.append(k, v)  # (B, H, Tk, K)
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            # Residuals are added into the fresh projection output (h + x == x + h bit for bit).
            h = torch.addmm(out_b, attended.reshape(batch, width), out_w).add_(x)
            x = h if pre_norm else layer_norm(h, *norm1)
            h = layer_norm(x, *norm2) if pre_norm else x
            h = torch.addmm(fc2_b, act(torch.addmm(fc1_b, h, fc1_w)), fc2_w).add_(x)
            x = h if pre_norm else layer_norm(h, *norm2)
        return layer_norm(x, *self.final_norm) if self.final_norm is not None else x
