"""The dense product x W^T + b of every linear layer in the blocks, on the faster CPU kernel.

PyTorch runs ``F.linear`` in float32 on the CPU through MKL. On the CI machine's AMD EPYC
(2 cores), oneDNN's kernel for the same product is faster for the shapes that training and
prompt processing run: at the SmolLM-135M and GPT benchmark shapes (512 and 2,048 rows) its
forward product ran 1.13-1.63x and its input gradient (g W) 1.06-1.58x faster
(``benchmarks/bench_linear.py``), and a SmolLM-135M training step went from 0.95-0.99x
transformers' speed to 1.14-1.30x (``benchmarks/bench_llama.py``, with
``formerkit.nn.losses``). It is slower for small products (about 20 us of fixed cost:
0.23-0.97x under about 5M multiply-adds) and for most weight gradients (g^T x), which stay on
MKL. Its summation order is not MKL's: results are within float32 rounding of ``F.linear``,
not bit-equal.

``linear`` takes oneDNN's kernel for fp32 CPU products of at least ``ONEDNN_MIN_MACS``
multiply-adds, outside autocast, tracing, scripting, ``torch.compile``/``torch.export`` and
functorch transforms (which need ``F.linear``'s own graph), where this PyTorch has the kernel
(its x86 builds) and ``FORMERKIT_EXACT_PRODUCTS`` is not ``1``; every other product is
``F.linear``. Batch-1 decoding has its own product choice (``formerkit.nn.decoding``).
"""

import functools
import os
import platform
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Under a few million multiply-adds oneDNN's fixed cost outweighs its faster inner loop: its
# forward product measured 0.65-0.97x F.linear's speed from 2.1M to 5.3M multiply-adds (0.4x at
# 0.5M), 1.25x at 7.1M and 1.13-1.63x from 57M up (fp32, the 2-core CI machine).
ONEDNN_MIN_MACS = 2**23


@functools.cache
def has_onednn_linear() -> bool:
    """oneDNN's linear kernel is in this PyTorch (its x86 CPU builds)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False  # measured on x86 only
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                            "_linear_pointwise")


def exact_products() -> bool:
    """``FORMERKIT_EXACT_PRODUCTS=1``: every product gives ``F.linear``'s bits (MKL), in the
    modules and in the decoding step, at the price of the faster kernels."""
    return os.environ.get("FORMERKIT_EXACT_PRODUCTS", "0") == "1"


def onednn_allowed() -> bool:
    """oneDNN's kernel is in this PyTorch and ``FORMERKIT_EXACT_PRODUCTS`` does not rule it
    out."""
    return not exact_products() and has_onednn_linear()


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """oneDNN's x W^T + b for a 2-D x (no autograd): within float32 rounding of F.linear."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def functorch_active() -> bool:
    """A functorch transform (``torch.func.grad``, ``vmap``, ...) is running: custom autograd
    functions without its rules must step aside."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active()) if active is not None else False


def _takes_onednn(x: Tensor, weight: Tensor) -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting() or weight.dim() != 2:
        return False  # before the size test, which a tracer would record
    out_features, in_features = weight.shape
    if x.numel() // max(in_features, 1) * in_features * out_features < ONEDNN_MIN_MACS:
        return False  # most small products stop here
    return (x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and weight.device.type == "cpu"
            and weight.is_contiguous() and x.dim() >= 1 and x.shape[-1] == in_features
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
            and not functorch_active() and onednn_allowed())


class _OneDNNLinear(torch.autograd.Function):
    """x W^T + b with oneDNN's forward and input-gradient products and MKL's weight gradient;
    under ``create_graph`` the backward is MKL's differentiable ``mm``s, for second
    derivatives."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        return onednn_linear(rows, weight, bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_rows = grad.reshape(-1, grad.shape[-1])  # (N, out)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # g W: oneDNN reads the transposed view without a copy. With create_graph the
            # backward runs with gradients on and must itself be differentiable: MKL's mm.
            grad_x = (grad_rows.mm(weight) if torch.is_grad_enabled()
                      else onednn_linear(grad_rows, weight.t())).view(x.shape)
        if ctx.needs_input_grad[1]:
            grad_weight = grad_rows.t().mm(x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_x, grad_weight, grad_bias


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``: on oneDNN's kernel where that is faster (see the module
    docstring), within float32 rounding of F.linear, with the same gradients."""
    if _takes_onednn(x, weight):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


def _plain(module: nn.Module, cls: type[nn.Module]) -> bool:
    """True when ``module`` is exactly ``cls`` (no subclass or wrapper) and has no hooks."""
    return type(module) is cls and not (module._forward_hooks or module._forward_pre_hooks)


def apply_linear(layer: nn.Module, x: Tensor) -> Tensor:
    """``layer(x)``: for a plain ``nn.Linear`` without hooks, ``linear`` on its parameters;
    LoRA and other wrapped or hooked layers run their own forward."""
    if _plain(layer, nn.Linear):
        return linear(x, layer.weight, layer.bias)
    return layer(x)
