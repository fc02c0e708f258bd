"""One-token decoding steps of an ``Encoder`` stack with the least work per step.

At batch 1, a decoding step of a small model costs more in Python and dispatch than in
arithmetic. ``Encoder.decode_step`` walks each layer's modules at every step and checks each for
wrappers (LoRA, hooks). A ``DecodingPlan`` does that walk once per decoding run: it keeps every
layer's parameters in a flat tuple, with each linear weight as a transposed view, and runs the
layers with ``_layers_step``. That function replays exactly the operations of
``Encoder.decode_step`` (``addmm(bias, x, weight.t())`` is what ``F.linear`` runs for a 2-D
input), so the results are bit-identical.

``_layers_step`` is compiled once per process with TorchScript, which runs the same ATen
operations without Python's per-operation cost (about a tenth of a CPU decoding step) and
compiles in milliseconds, where ``torch.compile`` takes seconds. TorchScript is deprecated.
Where it is missing or fails (it also needs the ``.py`` sources), or with
``FORMERKIT_TORCHSCRIPT=0``, the same function runs as Python, with the same results.

A plan holds views of the parameters: it follows in-place updates (an optimizer step,
``load_state_dict``) but not replaced tensors (``module.to(dtype)``, a new ``nn.Parameter``).
Build one per decoding run, as ``GPTForCausalLM.start_decoding`` does.
"""

import functools
import os
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from formerkit.nn.attention import MultiHeadAttention, _plain
from formerkit.nn.cache import KVCache
from formerkit.nn.layers import Encoder, EncoderLayer

# This module avoids ``from __future__ import annotations``: TorchScript reads the annotations.

_STEP_ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "swish")  # as in layers.ACTIVATIONS


class _Layer(NamedTuple):
    norm1_weight: Tensor
    norm1_bias: Tensor
    norm1_eps: float
    qkv_bias: Tensor
    qkv_weight_t: Tensor  # (D, 3D) view
    out_bias: Tensor
    out_weight_t: Tensor  # (D, D) view
    norm2_weight: Tensor
    norm2_bias: Tensor
    norm2_eps: float
    fc1_bias: Tensor
    fc1_weight_t: Tensor  # (D, d_ff) view
    fc2_bias: Tensor
    fc2_weight_t: Tensor  # (d_ff, D) view


def _activate(x: Tensor, name: str) -> Tensor:
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "gelu":
        return F.gelu(x)
    if name == "relu":
        return F.relu(x)
    return F.silu(x)  # "silu" or "swish": DecodingPlan.build admits only _STEP_ACTIVATIONS


def _layers_step(x: Tensor, layers: list[_Layer], keys: list[Tensor], values: list[Tensor],
                 length: int, n_heads: int, mask: Tensor | None, pre_norm: bool,
                 activation: str) -> Tensor:
    """x (B, D) through every layer; each layer's new key and value are written at position
    ``length`` of its (B, H, capacity, K) buffers in ``keys`` and ``values``."""
    batch, width = x.shape[0], x.shape[1]
    shape = [width]
    for layer, k_buffer, v_buffer in zip(layers, keys, values):
        h = torch.layer_norm(x, shape, layer.norm1_weight, layer.norm1_bias,
                             layer.norm1_eps) if pre_norm else x
        # (B, 3D) -> (B, 3, H, 1, K): q, k, v come out already split into heads.
        heads = torch.addmm(layer.qkv_bias, h, layer.qkv_weight_t).view(
            batch, 3, n_heads, 1, width // n_heads)
        k_buffer.narrow(2, length, 1).copy_(heads.select(1, 1))
        v_buffer.narrow(2, length, 1).copy_(heads.select(1, 2))
        attended = F.scaled_dot_product_attention(
            heads.select(1, 0), k_buffer.narrow(2, 0, length + 1),
            v_buffer.narrow(2, 0, length + 1), attn_mask=mask)
        # Residuals are added into the fresh projection output (h + x == x + h bit for bit).
        h = torch.addmm(layer.out_bias, attended.reshape(batch, width),
                        layer.out_weight_t).add_(x)
        x = h if pre_norm else torch.layer_norm(h, shape, layer.norm1_weight,
                                                layer.norm1_bias, layer.norm1_eps)
        h = torch.layer_norm(x, shape, layer.norm2_weight, layer.norm2_bias,
                             layer.norm2_eps) if pre_norm else x
        h = _activate(torch.addmm(layer.fc1_bias, h, layer.fc1_weight_t), activation)
        h = torch.addmm(layer.fc2_bias, h, layer.fc2_weight_t).add_(x)
        x = h if pre_norm else torch.layer_norm(h, shape, layer.norm2_weight,
                                                layer.norm2_bias, layer.norm2_eps)
    return x


@functools.cache
def compiled_layers_step() -> Callable[..., Tensor]:
    """``_layers_step`` compiled by TorchScript, or the Python function itself where
    TorchScript is unavailable, fails, or is turned off with ``FORMERKIT_TORCHSCRIPT=0``."""
    if os.environ.get("FORMERKIT_TORCHSCRIPT", "1") == "0":
        return _layers_step
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's own notice
            return torch.jit.script(_layers_step)
    except Exception as error:  # a PyTorch without TorchScript, or one that rejects the code
        warnings.warn(f"TorchScript could not compile the decoding step ({error}); decoding "
                      "runs it as Python, with the same results", RuntimeWarning, stacklevel=2)
        return _layers_step


def _norm(module: nn.Module) -> tuple[Tensor, Tensor, float] | None:
    if not _plain(module, nn.LayerNorm) or module.weight is None or module.bias is None:
        return None
    if len(module.normalized_shape) != 1:
        return None
    return module.weight, module.bias, module.eps


def _linear(module: nn.Module) -> tuple[Tensor, Tensor] | None:
    if not _plain(module, nn.Linear) or module.bias is None:
        return None
    return module.bias, module.weight.t()


def _gather(layer: nn.Module) -> _Layer | None:
    """The layer's tensors, or ``None`` if any part needs its module call (a LoRA wrapper,
    a hook, a missing bias, a non-``sdpa`` attention backend, an unknown activation)."""
    if not _plain(layer, EncoderLayer):
        return None
    attn, ff = layer.self_attn, layer.ff
    if type(attn) is not MultiHeadAttention or attn.cross or attn.backend != "sdpa":
        return None
    if ff.activation_name not in _STEP_ACTIVATIONS:
        return None
    parts = (_norm(layer.norm1), _linear(attn.qkv_proj), _linear(attn.out_proj),
             _norm(layer.norm2), _linear(ff.fc1), _linear(ff.fc2))
    if any(part is None for part in parts):
        return None
    norm1, qkv, out, norm2, fc1, fc2 = parts
    return _Layer(*norm1, *qkv, *out, *norm2, *fc1, *fc2)


class DecodingPlan:
    """An ``Encoder``'s decoding step over one new position per row, for inference.

    Build with ``DecodingPlan.build(encoder)``; ``step`` then equals ``encoder.decode_step``.
    """

    def __init__(self, encoder: Encoder, layers: list[_Layer],
                 final_norm: tuple[Tensor, Tensor, float] | None) -> None:
        self.encoder, self.layers, self.final_norm = encoder, layers, final_norm
        first = encoder.layers[0]
        self.norm_first = first.norm_first
        self.n_heads = first.self_attn.n_heads
        self.activation = first.ff.activation_name
        self.run_layers = compiled_layers_step()

    @classmethod
    def build(cls, encoder: Encoder) -> "DecodingPlan | None":
        """A plan for ``encoder``, or ``None`` when some part must run as a module (LoRA or
        another wrapper, a hook, a layer without biases, the ``math`` or ``linear`` backend);
        callers then use ``encoder.decode_step``."""
        if type(encoder) is not Encoder or not len(encoder.layers):
            return None
        layers = [_gather(layer) for layer in encoder.layers]
        if any(layer is None for layer in layers):
            return None
        final_norm = _norm(encoder.norm) if encoder.norm is not None else None
        if encoder.norm is not None and final_norm is None:
            return None
        first = encoder.layers[0]
        if any(layer.norm_first != first.norm_first
               or layer.ff.activation_name != first.ff.activation_name
               for layer in encoder.layers):
            return None
        return cls(encoder, layers, final_norm)

    def step(self, x: Tensor, cache: KVCache, mask: Tensor | None = None) -> Tensor:
        """x (B, D) -> (B, D); the new keys and values are appended to ``cache``.

        mask: bool (B, 1, 1, Tk) key-padding mask over the cached keys and the new one, or
        ``None``. Equals ``Encoder.decode_step(x, cache, mask)`` bit for bit.
        """
        if self.encoder.training:
            raise RuntimeError("DecodingPlan.step is for inference; call model.eval() first "
                               "(it applies no dropout)")
        length, layer_caches = cache.length, cache.layers
        heads_like = x.view(x.shape[0], self.n_heads, 1, -1)  # (B, H, 1, K)
        for layer_cache in layer_caches:
            layer_cache.reserve(length + 1, heads_like)
        x = self.run_layers(x, self.layers, [c.k for c in layer_caches],
                            [c.v for c in layer_caches], length, self.n_heads, mask,
                            self.norm_first, self.activation)
        for layer_cache in layer_caches:
            layer_cache.length = length + 1
        if self.final_norm is None:
            return x
        return torch.layer_norm(x, [x.shape[-1]], *self.final_norm)
