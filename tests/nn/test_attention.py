"""scaled_dot_product_attention backends and MultiHeadAttention against torch references."""

import math

import pytest
import torch
import torch.nn.functional as F

from formerkit.nn import MultiHeadAttention, make_attention_mask, scaled_dot_product_attention


def _qkv(batch=2, heads=3, q_len=5, k_len=7, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, dim, generator=gen)
    k = torch.randn(batch, heads, k_len, dim, generator=gen)
    v = torch.randn(batch, heads, k_len, dim, generator=gen)
    return q, k, v


def _padding(lengths, total):
    return (torch.arange(total)[None] < torch.tensor(lengths)[:, None]).long()


def test_math_backend_is_the_formula():
    q, k, v = _qkv()
    out, weights = scaled_dot_product_attention(q, k, v, backend="math", need_weights=True)
    expected_w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    torch.testing.assert_close(weights, expected_w)
    torch.testing.assert_close(out, expected_w @ v)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("lengths", [(6, 6), (4, 6), (1, 6)])  # self-, cached and 1-step query
def test_backends_agree_with_torch_sdpa(causal, padded, lengths):
    q_len, k_len = lengths
    q, k, v = _qkv(q_len=q_len, k_len=k_len)
    attention_mask = _padding([k_len, k_len - 2], k_len) if padded else None
    mask = make_attention_mask(attention_mask, query_len=q_len, key_len=k_len, causal=causal)
    fast, _ = scaled_dot_product_attention(q, k, v, mask, backend="sdpa")
    slow, _ = scaled_dot_product_attention(q, k, v, mask, backend="math")
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    # Reference: torch SDPA with an explicit bottom-right causal float mask.
    bias = torch.zeros(q.shape[0], 1, q_len, k_len)
    if causal:
        offset = k_len - q_len
        allowed = torch.ones(q_len, k_len, dtype=torch.bool).tril(offset)
        bias = bias.masked_fill(~allowed, float("-inf"))
    if padded:
        bias = bias.masked_fill(attention_mask[:, None, None, :] == 0, float("-inf"))
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


def test_causal_flag_is_bottom_right_with_fewer_queries():
    q, k, v = _qkv(q_len=3, k_len=7)
    out, _ = scaled_dot_product_attention(q, k, v, is_causal=True)
    mask = make_attention_mask(None, query_len=3, key_len=7, causal=True)
    expected, _ = scaled_dot_product_attention(q, k, v, mask, backend="math")
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    # The last query sees every key: equal to unmasked attention for that row.
    unmasked, _ = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out[:, :, -1], unmasked[:, :, -1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_fully_masked_rows_are_zero_not_nan(backend):
    q, k, v = _qkv()
    q.requires_grad_(True)
    k.requires_grad_(True)
    mask = torch.ones(2, 1, 5, 7, dtype=torch.bool)
    mask[0, :, 2] = False  # query 2 of batch 0 sees nothing
    out, _ = scaled_dot_product_attention(q, k, v, mask, backend=backend)
    assert torch.isfinite(out).all()
    assert out[0, :, 2].abs().max() == 0
    assert out[0, :, 1].abs().max() > 0
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()
    assert q.grad[0, :, 2].abs().max() == 0


def test_invalid_arguments_are_named():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="backend"):
        scaled_dot_product_attention(q, k, v, backend="flash9")
    with pytest.raises(TypeError, match="bool"):
        scaled_dot_product_attention(q, k, v, torch.zeros(1, 1, 5, 7))
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)


def _copy_to_torch(mha: MultiHeadAttention) -> torch.nn.MultiheadAttention:
    ref = torch.nn.MultiheadAttention(mha.d_model, mha.n_heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(mha.qkv_proj.weight)
        ref.in_proj_bias.copy_(mha.qkv_proj.bias)
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        ref.out_proj.bias.copy_(mha.out_proj.bias)
    return ref.eval()


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_torch_multihead(backend, causal):
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3, backend=backend).eval()
    ref = _copy_to_torch(mha)
    x = torch.randn(3, 6, 12)
    attention_mask = _padding([6, 4, 5], 6)
    mask = make_attention_mask(attention_mask, query_len=6, causal=causal)
    out, weights = mha(x, mask=mask, need_weights=True)
    ref_causal = ~torch.ones(6, 6, dtype=torch.bool).tril() if causal else None
    expected, ref_weights = ref(x, x, x, key_padding_mask=attention_mask == 0,
                                attn_mask=ref_causal, average_attn_weights=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, ref_weights, atol=1e-5, rtol=1e-5)


def test_cross_attention_matches_torch_multihead():
    torch.manual_seed(1)
    mha = MultiHeadAttention(12, 4, cross=True).eval()
    ref = torch.nn.MultiheadAttention(12, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mha.q_proj.weight, mha.kv_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.kv_proj.bias]))
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        ref.out_proj.bias.copy_(mha.out_proj.bias)
    x, memory = torch.randn(2, 4, 12), torch.randn(2, 9, 12)
    memory_mask = _padding([9, 5], 9)
    out, _ = mha(x, memory, mask=make_attention_mask(memory_mask, query_len=4))
    expected, _ = ref(x, memory, memory, key_padding_mask=memory_mask == 0)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_cross_attention_requires_memory():
    mha = MultiHeadAttention(8, 2, cross=True)
    with pytest.raises(ValueError, match="memory"):
        mha(torch.randn(1, 3, 8))


def _linear_reference(q, k, v, allowed):
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    scores = (phi_q @ phi_k.transpose(-2, -1)) * allowed  # (B, H, Tq, Tk)
    return (scores @ v) / scores.sum(-1, keepdim=True)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [(6, 6), (2, 6)])
def test_linear_backend_equals_its_quadratic_form(causal, lengths):
    q_len, k_len = lengths
    q, k, v = _qkv(q_len=q_len, k_len=k_len)
    pad = _padding([k_len, k_len - 1], k_len)
    key_mask = make_attention_mask(pad, query_len=1)  # (B, 1, 1, Tk)
    out, _ = scaled_dot_product_attention(q, k, v, key_mask, is_causal=causal, backend="linear")
    allowed = pad[:, None, None, :].float().expand(-1, 1, q_len, -1)
    if causal:
        allowed = allowed * torch.ones(q_len, k_len).tril(k_len - q_len)
    torch.testing.assert_close(out, _linear_reference(q, k, v, allowed), atol=1e-5, rtol=1e-4)


def test_linear_backend_rejects_full_masks_and_runs_in_a_layer():
    q, k, v = _qkv(q_len=4, k_len=4)
    full = make_attention_mask(torch.tensor([[1, 1, 1, 0]] * 2), query_len=4, causal=True)
    with pytest.raises(ValueError, match="key-padding mask"):
        scaled_dot_product_attention(q, k, v, full, backend="linear")
    mha = MultiHeadAttention(12, 3, backend="linear")
    out, _ = mha(torch.randn(2, 5, 12))
    assert out.shape == (2, 5, 12) and torch.isfinite(out).all()


def test_linear_backend_weights_reproduce_its_output():
    q, k, v = _qkv(q_len=5, k_len=5)
    out, weights = scaled_dot_product_attention(q, k, v, is_causal=True, backend="linear",
                                                need_weights=True)
    torch.testing.assert_close(weights @ v, out, atol=1e-5, rtol=1e-4)
    assert weights[0, 0, 0, 1:].abs().max() == 0
