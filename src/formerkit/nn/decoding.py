"""One-token decoding steps of an ``Encoder`` or ``Decoder`` stack with the least work per step.

At batch 1, a decoding step of a small model costs more in Python and dispatch than in
arithmetic. A ``DecodingPlan`` walks the stack's modules once per decoding run and keeps each
layer's parameters in a flat tuple; ``_layers_step`` then runs every layer over one new
position per row. It covers every configuration the blocks build: LayerNorm or RMSNorm, pre-
or post-norm, fused or separate q/k/v projections with or without biases, grouped-query
attention, rotary positions, sliding windows, plain or gated feed-forward, and the seq2seq
decoder's cross-attention.

The step is not a second definition of the layers' math. It replays the modules' own operations
(``F.linear``, or a batched product over row blocks of the weight for the same product;
attention, rotary and RMSNorm call the same functions in ``formerkit.nn.functional``), and the
tests check it against the modules' cached forward for every configuration above: bit for bit
with ``FORMERKIT_EXACT_PRODUCTS=1``, within float32 rounding otherwise. Where a part must run
as a module (LoRA or another wrapper, a hook, the ``math`` or ``linear`` backend), ``build``
returns ``None`` and callers run the modules.

Batch-1 decoding reads every weight once per token, so its speed is that of the one-row matrix
products, and ``F.linear`` (MKL) runs those on one thread at about a third of the memory
bandwidth. On the CPU, for up to 4 rows, ``step_linear`` runs them as a batched product over
row blocks of the weight, one block per thread, each block the product's left operand: about
the memory's speed, within float32 rounding of ``F.linear``. ``FORMERKIT_EXACT_PRODUCTS=1``
puts the blocks on the right instead, slower but with ``F.linear``'s bits.

``_layers_step`` is compiled once per process with TorchScript, which runs the same ATen
operations without Python's per-operation cost (7-21% of a CPU decoding step of a SmolLM-135M
shape, within 8% either way for small models; ``benchmarks/bench_decoding_step.py``) and
compiles in milliseconds, where ``torch.compile`` takes seconds. TorchScript is deprecated:
where it is missing or fails, or with ``FORMERKIT_TORCHSCRIPT=0``, the same function runs as
Python, with the same results.

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

from formerkit.nn.attention import MultiHeadAttention
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
from formerkit.nn.linear import _plain, exact_products
from formerkit.nn.norms import RMSNorm

# This module avoids ``from __future__ import annotations``: TorchScript reads the annotations.

_STEP_ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "swish")  # as in layers.ACTIVATIONS


class StepLinear(NamedTuple):
    """A linear layer's tensors for the step: views of its parameters, never copies."""

    weight: Tensor  # (out, in)
    bias: Tensor | None
    blocks: Tensor | None  # the weight's n row blocks: (n, out / n, in), or (n, in, out / n)
    block_bias: Tensor | None  # the bias in blocks: (n, out / n, 1), or (n, 1, out / n)
    exact: bool  # blocks as (n, in, out / n), the product F.linear's bits; else weight-left


class _Norm(NamedTuple):
    weight: Tensor
    bias: Tensor | None
    eps: float


class _Layer(NamedTuple):
    attn_norm: _Norm
    qkv: list[StepLinear]  # one fused projection, or q, k, v
    out: StepLinear
    window: int  # sliding window, 0 = none
    cross_norm: _Norm | None  # decoder layers: cross-attention's norm, q and out projections
    cross_q: StepLinear | None
    cross_out: StepLinear | None
    ff_norm: _Norm
    ff_in: list[StepLinear]  # fc1, or gate and up
    ff_out: StepLinear


def _activate(x: Tensor, name: str) -> Tensor:
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "gelu":
        return F.gelu(x)
    if name == "relu":
        return F.relu(x)
    return F.silu(x)  # "silu" or "swish": DecodingPlan.build admits only _STEP_ACTIVATIONS


# MKL multiplies a single row by a matrix (gemv) on one thread, whatever the thread count, at
# about a third of the memory bandwidth. A batched product over row blocks of the weight runs one
# block per thread. Which operand the weight is matters more: with each block on the left,
# bmm(W_b (out / n, in), x^T (in, B)), MKL reads the weight near the memory's speed (on the
# 2-core CI machine, 19-28 GB/s from memory for the SmolLM-135M shapes, 38-57 for GPT's from the
# cache, against 9-12 for F.linear), within float32 rounding of F.linear; with the block on the
# right, bmm(x, W_b^T), it gives F.linear's bits but reads at 11-22 GB/s. The default is the
# first, ``exact_products()`` (FORMERKIT_EXACT_PRODUCTS=1) the second. For 1 to 4 rows (beam
# search included); at 8 rows MKL's matrix product threads itself. Blocks have at least
# ``BLOCK_MIN_ELEMENTS`` elements (a weight of 2^16 splits in two): for smaller ones waking a
# thread costs about what it saves, and ATen's batched product of tiny matrices is a loop with
# another summation order.
BLOCK_MIN_ELEMENTS = 2**15


class Products(NamedTuple):
    """How a plan runs its few-row products: at most ``blocks`` row blocks per weight, with
    F.linear's bits (``exact``) or the faster weight-left product."""

    blocks: int
    exact: bool


def step_linear(x: Tensor, layer: StepLinear) -> Tensor:
    """``F.linear(x, weight, bias)`` for x (B, in): bit for bit where ``layer.exact`` or the
    weight is not blocked, within float32 rounding otherwise."""
    blocks, rows = layer.blocks, x.shape[0]
    if blocks is None or rows > 4:  # a literal: TorchScript reads no globals
        # F.linear, not addmm: TorchScript's optimised graph splits addmm into mm + add, which
        # rounds differently.
        return F.linear(x, layer.weight, layer.bias)
    block_bias = layer.block_bias
    if layer.exact:
        x_per_block = x.expand(blocks.shape[0], rows, x.shape[1])  # (n, B, in)
        if block_bias is None:
            out = torch.bmm(x_per_block, blocks)
        else:
            out = torch.baddbmm(block_bias, x_per_block, blocks)
        return out.transpose(0, 1).reshape(rows, -1)  # (n, B, out / n) -> (B, out)
    columns = x.t().expand(blocks.shape[0], x.shape[1], rows)  # (n, in, B)
    if block_bias is None:
        out = torch.bmm(blocks, columns)
    else:
        out = torch.baddbmm(block_bias, blocks, columns)
    if rows == 1:
        return out.view(1, -1)  # (n, out / n, 1) -> (1, out)
    return out.permute(2, 0, 1).reshape(rows, -1)  # (n, out / n, B) -> (B, out)


def step_blocks() -> int:
    """Row blocks per weight for the step (at most): one per intra-op thread."""
    return torch.get_num_threads()


def step_products(blocks: int | None = None) -> Products:
    """The products for a step: ``blocks`` (default ``step_blocks()``) row blocks per weight,
    exact where ``FORMERKIT_EXACT_PRODUCTS`` is ``1``."""
    return Products(step_blocks() if blocks is None else blocks, exact_products())


def gather_linear(weight: Tensor, bias: Tensor | None, products: Products) -> StepLinear:
    """The step's view of a (out, in) weight and its bias, for few-row inputs: split into at
    most ``products.blocks`` row blocks where that pays: an fp32 weight on the CPU, blocks of at
    least ``BLOCK_MIN_ELEMENTS`` elements and of a multiple of 16 rows (then, in the exact
    orientation, MKL's kernels round each output as they do for the whole weight: checked for
    every such width up to 392 and some wider, with 1 to 4 rows; an odd width is not).
    Unsplit, so ``F.linear``, where that does not apply."""
    out_features, in_features = weight.shape
    exact = products.exact
    if weight.device.type != "cpu" or weight.dtype != torch.float32 \
            or not weight.is_contiguous():
        return StepLinear(weight, bias, None, None, exact)
    blocks = min(products.blocks, weight.numel() // BLOCK_MIN_ELEMENTS)
    while blocks > 1 and out_features % (16 * blocks):
        blocks -= 1
    if blocks < 2:
        return StepLinear(weight, bias, None, None, exact)
    size = out_features // blocks
    row_blocks = weight.view(blocks, size, in_features)
    if exact:
        block_bias = None if bias is None else bias.view(blocks, 1, size)
        return StepLinear(weight, bias, row_blocks.transpose(1, 2), block_bias, True)
    block_bias = None if bias is None else bias.view(blocks, size, 1)
    return StepLinear(weight, bias, row_blocks, block_bias, False)


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
            q, k, v = step_linear(h, layer.qkv[0]).split([q_width, kv_width, kv_width], dim=-1)
        else:
            q = step_linear(h, layer.qkv[0])
            k, v = step_linear(h, layer.qkv[1]), step_linear(h, layer.qkv[2])
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
        h = step_linear(attended.reshape(batch, q_width), layer.out).add_(x)
        x = h if pre_norm else _normalise(h, layer.attn_norm, rms)
        cross_norm, cross_q, cross_out = layer.cross_norm, layer.cross_q, layer.cross_out
        if cross_norm is not None and cross_q is not None and cross_out is not None:
            h = _normalise(x, cross_norm, rms) if pre_norm else x
            q = step_linear(h, cross_q).view(batch, 1, n_heads, head_dim).transpose(1, 2)
            attended = attend_one_query(q, cross[i][0], cross[i][1], memory_mask, 0)
            h = step_linear(attended.reshape(batch, q_width), cross_out).add_(x)
            x = h if pre_norm else _normalise(h, cross_norm, rms)
        h = _normalise(x, layer.ff_norm, rms) if pre_norm else x
        if len(layer.ff_in) == 1:
            h = _activate(step_linear(h, layer.ff_in[0]), activation)
        else:
            gate, up = step_linear(h, layer.ff_in[0]), step_linear(h, layer.ff_in[1])
            h = _activate(gate, activation) * up
        h = step_linear(h, layer.ff_out).add_(x)
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


def gather_module(module: nn.Module, products: Products) -> StepLinear | None:
    """A plain ``nn.Linear``'s ``gather_linear``; ``None`` for anything else (LoRA, hooks)."""
    return gather_linear(module.weight, module.bias, products) \
        if _plain(module, nn.Linear) else None


def _gather_linears(products: Products, *modules: nn.Module) -> list[StepLinear] | None:
    linears = [gather_module(module, products) for module in modules]
    return None if any(linear is None for linear in linears) else linears


def _attention_parts(attn: nn.Module, products: Products
                     ) -> tuple[list[StepLinear], StepLinear] | None:
    if type(attn) is not MultiHeadAttention or attn.backend != "sdpa":
        return None
    if attn.cross:
        inputs = _gather_linears(products, attn.q_proj)
    elif attn.fused_qkv:
        inputs = _gather_linears(products, attn.qkv_proj)
    else:
        inputs = _gather_linears(products, attn.q_proj, attn.k_proj, attn.v_proj)
    out = gather_module(attn.out_proj, products)
    return None if inputs is None or out is None else (inputs, out)


def _ff_parts(ff: nn.Module, products: Products) -> tuple[list[StepLinear], StepLinear] | None:
    if type(ff) is FeedForward:
        inputs, out = _gather_linears(products, ff.fc1), gather_module(ff.fc2, products)
    elif type(ff) is GatedFeedForward:
        inputs = _gather_linears(products, ff.gate_proj, ff.up_proj)
        out = gather_module(ff.down_proj, products)
    else:
        return None
    return None if inputs is None or out is None else (inputs, out)


def _gather(layer: nn.Module, rms: bool, products: Products) -> _Layer | None:
    """The layer's tensors, or ``None`` if any part needs its module call."""
    decoder = _plain(layer, DecoderLayer)
    if not (decoder or _plain(layer, EncoderLayer)):
        return None
    if layer.ff.activation_name not in _STEP_ACTIVATIONS:
        return None
    attention = _attention_parts(layer.self_attn, products)
    ff = _ff_parts(layer.ff, products)
    attn_norm = _gather_norm(layer.norm1, rms)
    ff_norm = _gather_norm(layer.norm3 if decoder else layer.norm2, rms)
    if attention is None or ff is None or attn_norm is None or ff_norm is None:
        return None
    cross_norm = cross_q = cross_out = None
    if decoder:
        cross = _attention_parts(layer.cross_attn, products)
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
    ``x[:, None]`` with the cache (causal): bit for bit with ``FORMERKIT_EXACT_PRODUCTS=1``, within
    float32 rounding otherwise (``step_linear``).
    """

    def __init__(self, stack: nn.Module, layers: list[_Layer], final_norm: _Norm | None,
                 products: Products, head: StepLinear | None = None) -> None:
        self.stack, self.layers, self.final_norm = stack, layers, final_norm
        self.products, self.head = products, head  # head: the output layer's, for callers
        first = stack.layers[0]
        attn = first.self_attn
        self.norm_first = first.norm_first
        self.rms = type(first.norm1) is RMSNorm
        self.heads = (attn.n_heads, attn.n_kv_heads, attn.head_dim)
        self.is_decoder = type(first) is DecoderLayer
        self.activation = first.ff.activation_name
        self.run_layers = compiled_layers_step()

    @classmethod
    def build(cls, stack: nn.Module, blocks: int | None = None,
              head: nn.Module | None = None) -> "DecodingPlan | None":
        """A plan for ``stack`` and its output layer ``head`` (``plan.head``; the caller applies
        it), or ``None`` when some part must run as a module (LoRA or another wrapper, a hook,
        a norm or feed-forward of another kind, the ``math`` or ``linear`` backend); callers
        then run the modules. ``blocks``: row blocks of each weight for few-row products (see
        ``step_products``)."""
        if type(stack) not in (Encoder, Decoder) or not len(stack.layers):
            return None
        if not _uniform(list(stack.layers)):
            return None
        rms = type(stack.layers[0].norm1) is RMSNorm
        products = step_products(blocks)
        layers = [_gather(layer, rms, products) for layer in stack.layers]
        if any(layer is None for layer in layers):
            return None
        final_norm = None
        if stack.norm is not None:
            final_norm = _gather_norm(stack.norm, rms)
            if final_norm is None:
                return None
        head_step = None
        if head is not None:
            head_step = gather_module(head, products)
            if head_step is None:
                return None
        return cls(stack, layers, final_norm, products, head_step)

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
