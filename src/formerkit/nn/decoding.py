"""One-token decoding steps of an ``Encoder`` or ``Decoder`` stack with the least work per step.

At batch 1, a decoding step of a small model costs more in Python and dispatch than in
arithmetic. A ``DecodingPlan`` walks the stack's modules once per decoding run and keeps each
layer's parameters in a flat tuple (linear weights as transposed views); ``_layers_step`` then
runs every layer over one new position per row. It covers every configuration the blocks
build: LayerNorm or RMSNorm, pre- or post-norm, fused or separate q/k/v projections with or
without biases, grouped-query attention, rotary positions, sliding windows, plain or gated
feed-forward, and the seq2seq decoder's cross-attention.

The step is not a second definition of the layers' math. It replays the modules' own operations
(``addmm(bias, x, weight.t())`` is what ``F.linear`` runs; attention, rotary and RMSNorm call the
same functions in ``formerkit.nn.functional``), and the tests check it bit for bit against the
modules' cached forward for every configuration above. Where a part must run as a module (LoRA or
another wrapper, a hook, the ``math`` or ``linear`` backend), ``build`` returns ``None`` and
callers run the modules.

``_layers_step`` is compiled once per process with TorchScript, which runs the same ATen
operations without Python's per-operation cost (about a tenth of a CPU decoding step; measured
in ``benchmarks/bench_gpt.py``) and compiles in milliseconds, where ``torch.compile`` takes
seconds. TorchScript is deprecated: where it is missing or fails, or with
``FORMERKIT_TORCHSCRIPT=0``, the same function runs as Python, with the same results.

A plan holds views of the parameters: it follows in-place updates (an optimizer step,
``load_state_dict``) but not replaced tensors (``module.to(dtype)``, a new ``nn.Parameter``).
Build one per decoding run.
"""

import functools
import os
import warnings
from collections.abc import Callable
from typing import NamedTuple  # noqa: UP035  (TorchScript)

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from formerkit.nn.attention import MultiHeadAttention, _plain
from formerkit.nn.cache import KVCache
from formerkit.nn.functional import apply_rotary, attend_one_query, rms_norm
from formerkit.nn.layers import (
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    FeedForward,
    GatedFeedForward,
)
from formerkit.nn.norms import RMSNorm

# This module avoids ``from __future__ import annotations``: TorchScript reads the annotations.

_STEP_ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "swish")  # as in layers.ACTIVATIONS


class _Linear(NamedTuple):
    weight_t: Tensor  # (in, out) view of the (out, in) weight
    bias: Tensor | None


class _Norm(NamedTuple):
    weight: Tensor
    bias: Tensor | None
    eps: float


class _Layer(NamedTuple):
    attn_norm: _Norm
    qkv: list[_Linear]  # one fused projection, or q, k, v
    out: _Linear
    window: int  # sliding window, 0 = none
    cross_norm: _Norm | None  # decoder layers: cross-attention's norm, q and out projections
    cross_q: _Linear | None
    cross_out: _Linear | None
    ff_norm: _Norm
    ff_in: list[_Linear]  # fc1, or gate and up
    ff_out: _Linear


def _activate(x: Tensor, name: str) -> Tensor:
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "gelu":
        return F.gelu(x)
    if name == "relu":
        return F.relu(x)
    return F.silu(x)  # "silu" or "swish": DecodingPlan.build admits only _STEP_ACTIVATIONS


def _linear(x: Tensor, layer: _Linear) -> Tensor:
    bias = layer.bias
    if bias is None:
        return torch.mm(x, layer.weight_t)
    return torch.addmm(bias, x, layer.weight_t)


def _normalise(x: Tensor, norm: _Norm, rms: bool) -> Tensor:
    if rms:
        return rms_norm(x, norm.weight, norm.eps)
    return torch.layer_norm(x, [x.shape[-1]], norm.weight, norm.bias, norm.eps)


def _layers_step(x: Tensor, layers: list[_Layer], keys: list[Tensor], values: list[Tensor],
                 cross: list[tuple[Tensor, Tensor]], length: int, mask: Tensor | None,
                 memory_mask: Tensor | None, rotary: tuple[Tensor, Tensor] | None,
                 heads: tuple[int, int, int], pre_norm: bool, rms: bool,
                 activation: str) -> Tensor:
    """x (B, D) through every layer; each layer's new key and value are written at position
    ``length`` of its (B, Hkv, capacity, K) buffers in ``keys`` and ``values``. ``cross``
    holds each decoder layer's cached (B, Hkv, S, K) cross-attention keys and values.
    ``heads`` is (H, Hkv, K)."""
    batch = x.shape[0]
    n_heads, n_kv_heads, head_dim = heads
    q_width, kv_width = n_heads * head_dim, n_kv_heads * head_dim
    for i, layer in enumerate(layers):
        h = _normalise(x, layer.attn_norm, rms) if pre_norm else x
        if len(layer.qkv) == 1:
            q, k, v = _linear(h, layer.qkv[0]).split([q_width, kv_width, kv_width], dim=-1)
        else:
            q, k, v = _linear(h, layer.qkv[0]), _linear(h, layer.qkv[1]), _linear(h, layer.qkv[2])
        q = q.view(batch, 1, n_heads, head_dim).transpose(1, 2)  # (B, H, 1, K)
        k = k.view(batch, 1, n_kv_heads, head_dim).transpose(1, 2)  # (B, Hkv, 1, K)
        v = v.view(batch, 1, n_kv_heads, head_dim).transpose(1, 2)
        if rotary is not None:
            q, k = apply_rotary(q, rotary[0], rotary[1]), apply_rotary(k, rotary[0], rotary[1])
        keys[i].narrow(2, length, 1).copy_(k)
        values[i].narrow(2, length, 1).copy_(v)
        attended = attend_one_query(q, keys[i].narrow(2, 0, length + 1),
                                    values[i].narrow(2, 0, length + 1), mask, layer.window)
        # Residuals are added into the fresh projection output (h + x == x + h bit for bit).
        h = _linear(attended.reshape(batch, q_width), layer.out).add_(x)
        x = h if pre_norm else _normalise(h, layer.attn_norm, rms)
        cross_norm, cross_q, cross_out = layer.cross_norm, layer.cross_q, layer.cross_out
        if cross_norm is not None and cross_q is not None and cross_out is not None:
            h = _normalise(x, cross_norm, rms) if pre_norm else x
            q = _linear(h, cross_q).view(batch, 1, n_heads, head_dim).transpose(1, 2)
            attended = attend_one_query(q, cross[i][0], cross[i][1], memory_mask, 0)
            h = _linear(attended.reshape(batch, q_width), cross_out).add_(x)
            x = h if pre_norm else _normalise(h, cross_norm, rms)
        h = _normalise(x, layer.ff_norm, rms) if pre_norm else x
        if len(layer.ff_in) == 1:
            h = _activate(_linear(h, layer.ff_in[0]), activation)
        else:
            h = _activate(_linear(h, layer.ff_in[0]), activation) * _linear(h, layer.ff_in[1])
        h = _linear(h, layer.ff_out).add_(x)
        x = h if pre_norm else _normalise(h, layer.ff_norm, rms)
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


# ---- gathering a stack's tensors -------------------------------------------------------------
def _gather_norm(module: nn.Module, rms: bool) -> _Norm | None:
    if rms:
        return _Norm(module.weight, None, module.eps) if _plain(module, RMSNorm) else None
    if not _plain(module, nn.LayerNorm) or module.weight is None:
        return None
    if len(module.normalized_shape) != 1:
        return None
    return _Norm(module.weight, module.bias, module.eps)


def _gather_linear(module: nn.Module) -> _Linear | None:
    return _Linear(module.weight.t(), module.bias) if _plain(module, nn.Linear) else None


def _gather_linears(*modules: nn.Module) -> list[_Linear] | None:
    linears = [_gather_linear(module) for module in modules]
    return None if any(linear is None for linear in linears) else linears


def _attention_parts(attn: nn.Module) -> tuple[list[_Linear], _Linear] | None:
    if type(attn) is not MultiHeadAttention or attn.backend != "sdpa":
        return None
    if attn.cross:
        inputs = _gather_linears(attn.q_proj)
    elif attn.fused_qkv:
        inputs = _gather_linears(attn.qkv_proj)
    else:
        inputs = _gather_linears(attn.q_proj, attn.k_proj, attn.v_proj)
    out = _gather_linear(attn.out_proj)
    return None if inputs is None or out is None else (inputs, out)


def _ff_parts(ff: nn.Module) -> tuple[list[_Linear], _Linear] | None:
    if type(ff) is FeedForward:
        inputs, out = _gather_linears(ff.fc1), _gather_linear(ff.fc2)
    elif type(ff) is GatedFeedForward:
        inputs, out = _gather_linears(ff.gate_proj, ff.up_proj), _gather_linear(ff.down_proj)
    else:
        return None
    return None if inputs is None or out is None else (inputs, out)


def _gather(layer: nn.Module, rms: bool) -> _Layer | None:
    """The layer's tensors, or ``None`` if any part needs its module call."""
    decoder = _plain(layer, DecoderLayer)
    if not (decoder or _plain(layer, EncoderLayer)):
        return None
    if layer.ff.activation_name not in _STEP_ACTIVATIONS:
        return None
    attention, ff = _attention_parts(layer.self_attn), _ff_parts(layer.ff)
    attn_norm = _gather_norm(layer.norm1, rms)
    ff_norm = _gather_norm(layer.norm3 if decoder else layer.norm2, rms)
    if attention is None or ff is None or attn_norm is None or ff_norm is None:
        return None
    cross_norm = cross_q = cross_out = None
    if decoder:
        cross = _attention_parts(layer.cross_attn)
        cross_norm = _gather_norm(layer.norm2, rms)
        if cross is None or cross_norm is None:
            return None
        (cross_q,), cross_out = cross
    return _Layer(attn_norm, attention[0], attention[1], layer.self_attn.sliding_window or 0,
                  cross_norm, cross_q, cross_out, ff_norm, ff[0], ff[1])


def _uniform(layers: list[nn.Module]) -> bool:
    """Every layer shares what the step takes once: placement, norm kind, activation, heads."""
    def signature(layer: nn.Module) -> tuple:
        attn = layer.self_attn
        return (type(layer), layer.norm_first, type(layer.norm1), layer.ff.activation_name,
                attn.n_heads, attn.n_kv_heads, attn.head_dim)

    first = signature(layers[0])
    return all(signature(layer) == first for layer in layers)


class DecodingPlan:
    """An ``Encoder``'s or ``Decoder``'s step over one new position per row, for inference.

    Build with ``DecodingPlan.build(stack)``; ``step`` then equals the stack's forward on
    ``x[:, None]`` with the cache (causal), bit for bit.
    """

    def __init__(self, stack: nn.Module, layers: list[_Layer],
                 final_norm: _Norm | None) -> None:
        self.stack, self.layers, self.final_norm = stack, layers, final_norm
        first = stack.layers[0]
        attn = first.self_attn
        self.norm_first = first.norm_first
        self.rms = type(first.norm1) is RMSNorm
        self.heads = (attn.n_heads, attn.n_kv_heads, attn.head_dim)
        self.is_decoder = type(first) is DecoderLayer
        self.activation = first.ff.activation_name
        self.run_layers = compiled_layers_step()

    @classmethod
    def build(cls, stack: nn.Module) -> "DecodingPlan | None":
        """A plan for ``stack``, or ``None`` when some part must run as a module (LoRA or
        another wrapper, a hook, a norm or feed-forward of another kind, the ``math`` or
        ``linear`` backend); callers then run the modules."""
        if type(stack) not in (Encoder, Decoder) or not len(stack.layers):
            return None
        if not _uniform(list(stack.layers)):
            return None
        rms = type(stack.layers[0].norm1) is RMSNorm
        layers = [_gather(layer, rms) for layer in stack.layers]
        if any(layer is None for layer in layers):
            return None
        final_norm = None
        if stack.norm is not None:
            final_norm = _gather_norm(stack.norm, rms)
            if final_norm is None:
                return None
        return cls(stack, layers, final_norm)

    def step(self, x: Tensor, cache: KVCache, mask: Tensor | None = None, *,
             rotary: tuple[Tensor, Tensor] | None = None,
             memory_mask: Tensor | None = None) -> Tensor:
        """x (B, D) -> (B, D); the new keys and values are appended to ``cache``.

        Args:
            mask: bool (B, 1, 1, Tk) key-padding mask over the cached keys and the new one.
            rotary: (cos, sin), each (B|1, 1, 1, K), for the new position.
            memory_mask: bool (B, 1, 1, S) source padding mask (decoder stacks), with at least
                one visible source position per row.
        """
        if self.stack.training:
            raise RuntimeError("DecodingPlan.step is for inference; call model.eval() first "
                               "(it applies no dropout)")
        length, layer_caches = cache.length, cache.layers
        cross: list[tuple[Tensor, Tensor]] = []
        if self.is_decoder:
            if any(c.cross_k is None for c in layer_caches):
                raise RuntimeError("a decoder plan needs the cross-attention keys and values in "
                                   "the cache: run the first decoding position through the "
                                   "modules")
            cross = [(c.cross_k, c.cross_v) for c in layer_caches]
        n_heads, n_kv_heads, head_dim = self.heads
        heads_like = x.new_empty(x.shape[0], n_kv_heads, 1, head_dim)  # (B, Hkv, 1, K)
        for layer_cache in layer_caches:
            layer_cache.reserve(length + 1, heads_like)
        x = self.run_layers(x, self.layers, [c.k for c in layer_caches],
                            [c.v for c in layer_caches], cross, length, mask, memory_mask,
                            rotary, self.heads, self.norm_first, self.rms, self.activation)
        for layer_cache in layer_caches:
            layer_cache.length = length + 1
        if self.final_norm is None:
            return x
        return _normalise(x, self.final_norm, self.rms)
