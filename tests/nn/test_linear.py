"""formerkit.nn.linear: oneDNN's product for large fp32 CPU products, F.linear otherwise; the
same outputs and gradients as F.linear within float32 rounding, and F.linear's own graph
wherever a tracer, an exporter or autocast needs it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import formerkit
from formerkit.nn import linear as fk_linear
from formerkit.nn.linear import ONEDNN_MIN_MACS, apply_linear, linear

needs_onednn = pytest.mark.skipif(not fk_linear.has_onednn_linear(),
                                  reason="this PyTorch has no oneDNN linear (x86 builds do)")


def _on_onednn(out: torch.Tensor) -> bool:
    return type(out.grad_fn).__name__ == "_OneDNNLinearBackward"


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(600,), (3, 200), (2, 5, 60)])  # leading dims: 600 rows
def test_large_products_run_on_onednn_with_f_linear_outputs_and_gradients(shape, bias):
    torch.manual_seed(0)
    x, weight = torch.randn(*shape, 576), torch.randn(1536, 576) / 24
    b = torch.randn(1536) if bias else None
    ours, reference = _leaves(x, weight), _leaves(x, weight)
    if bias:
        ours.append(b.clone().requires_grad_())
        reference.append(b.clone().requires_grad_())
    out = linear(*ours)
    expected = F.linear(*reference)
    assert _on_onednn(out) and out.shape == expected.shape == (*shape, 1536)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(expected)
    out.backward(grad)
    expected.backward(grad)
    for mine, theirs in zip(ours, reference, strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_gradients_flow_only_where_asked():
    torch.manual_seed(0)
    x, weight = torch.randn(600, 576, requires_grad=True), torch.randn(1536, 576)
    out = linear(x, weight)
    assert _on_onednn(out)
    out.sum().backward()
    torch.testing.assert_close(x.grad, weight.sum(0).expand(600, 576), rtol=1e-5, atol=1e-4)
    frozen_input = torch.randn(600, 576)
    w = weight.clone().requires_grad_()
    linear(frozen_input, w).sum().backward()
    torch.testing.assert_close(w.grad, frozen_input.sum(0).expand(1536, 576), rtol=1e-5,
                               atol=1e-3)


def test_small_products_and_other_dtypes_are_f_linear_bit_for_bit():
    torch.manual_seed(0)
    small = torch.randn(8, 64, requires_grad=True), torch.randn(64, 64)
    assert 8 * 64 * 64 < ONEDNN_MIN_MACS
    assert torch.equal(linear(*small), F.linear(*small))
    assert not _on_onednn(linear(*small))
    big = torch.randn(600, 576).double(), torch.randn(1536, 576).double()
    assert torch.equal(linear(*big), F.linear(*big))


@needs_onednn
def test_exact_products_keep_f_linear(monkeypatch):
    torch.manual_seed(0)
    x, weight = torch.randn(600, 576, requires_grad=True), torch.randn(1536, 576)
    monkeypatch.setenv("FORMERKIT_EXACT_PRODUCTS", "1")
    out = linear(x, weight)
    assert not _on_onednn(out) and torch.equal(out, F.linear(x, weight))


@needs_onednn
def test_autocast_tracing_and_functorch_take_f_linear():
    torch.manual_seed(0)
    x, weight = torch.randn(600, 576), torch.randn(1536, 576)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x, weight).dtype == torch.bfloat16  # autocast casts as for F.linear
    traced = torch.jit.trace(lambda a: linear(a, weight), (x,), check_trace=False)
    assert "mkldnn" not in str(traced.graph) and "linear" in str(traced.graph)
    grad = torch.func.grad(lambda w: linear(x, w).square().sum())(weight)
    torch.testing.assert_close(grad, 2 * F.linear(x, weight).t().mm(x), rtol=1e-4, atol=1e-2)


def test_wrapped_or_hooked_layers_run_their_own_forward():
    layer = torch.nn.Linear(576, 1536)
    calls = []
    layer.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    apply_linear(layer, torch.randn(600, 576))
    assert calls == [(600, 1536)]


@needs_onednn
def test_a_llama_training_step_on_onednn_equals_the_f_linear_step(monkeypatch):
    torch.manual_seed(0)
    model = formerkit.create_model("llama", vocab_size=128, d_model=64, n_heads=4, n_kv_heads=2,
                                   n_layers=2, d_ff=96, max_seq_len=32)
    ids = torch.randint(0, 128, (4, 32))

    def step() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = model(ids, labels=ids).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    monkeypatch.setenv("FORMERKIT_EXACT_PRODUCTS", "1")
    loss, grads = step()
    monkeypatch.setenv("FORMERKIT_EXACT_PRODUCTS", "0")
    monkeypatch.setattr(fk_linear, "ONEDNN_MIN_MACS", 1)  # every product of the tiny model
    seen = []
    original = fk_linear._OneDNNLinear.apply
    monkeypatch.setattr(fk_linear._OneDNNLinear, "apply",
                        lambda *args: seen.append(1) or original(*args))
    onednn_loss, onednn_grads = step()
    assert len(seen) == 2 * 7 + 1  # q, k, v, out, gate, up, down per layer, and the head
    torch.testing.assert_close(onednn_loss, loss, rtol=1e-6, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(onednn_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@needs_onednn
def test_lora_runs_its_frozen_base_on_onednn_with_the_same_adapter_gradients(monkeypatch):
    from formerkit.nn.lora import LoRALinear

    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(576, 1536), rank=8, alpha=16)
    torch.nn.init.normal_(layer.lora_B)  # a non-zero update, so its gradient reaches A
    x = torch.randn(600, 576, requires_grad=True)

    def run() -> list[torch.Tensor]:
        for tensor in (x, layer.lora_A, layer.lora_B):
            tensor.grad = None
        out = layer(x)
        out.square().mean().backward()
        return [out.detach(), x.grad, layer.lora_A.grad, layer.lora_B.grad]

    monkeypatch.setenv("FORMERKIT_EXACT_PRODUCTS", "1")
    expected = run()
    monkeypatch.setenv("FORMERKIT_EXACT_PRODUCTS", "0")
    got = run()
    assert layer.base.weight.grad is None  # the base stays frozen
    for mine, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    assert not torch.equal(got[0], expected[0])  # oneDNN ran: its rounding differs


@needs_onednn
def test_second_derivatives_match_float64():
    torch.manual_seed(0)
    x, weight, bias = torch.randn(600, 576), torch.randn(1536, 576) / 24, torch.randn(1536)

    def gradient_penalty(fn, tensors):  # create_graph: the backward itself is differentiated
        out = fn(*tensors)
        grads = torch.autograd.grad(out.tanh().sum(), tensors, create_graph=True)
        penalty = sum(g.square().sum() for g in grads)
        return out, torch.autograd.grad(penalty, tensors)

    out, second = gradient_penalty(linear, _leaves(x, weight, bias))
    _, exact = gradient_penalty(F.linear, _leaves(x.double(), weight.double(), bias.double()))
    assert _on_onednn(out)
    for mine, truth in zip(second, exact, strict=True):  # values up to 2e5: rounding is relative
        assert (mine.double() - truth).abs().max() < 1e-6 * truth.abs().max()
