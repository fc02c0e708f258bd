"""Feed-forward, encoder/decoder layers and stacks; KV-cached decoding equals a full pass."""

import pytest
import torch
import torch.nn.functional as F

from formerkit.nn import (
    Decoder,
    Encoder,
    EncoderLayer,
    FeedForward,
    KVCache,
    get_activation,
    init_weights,
    make_attention_mask,
    scale_residual_projections,
)

D, H, FF = 16, 4, 32


def test_activations_by_name():
    x = torch.linspace(-3, 3, 11)
    torch.testing.assert_close(get_activation("gelu")(x), 0.5 * x * (1 + torch.erf(x / 2 ** 0.5)))
    tanh_form = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)))
    torch.testing.assert_close(get_activation("gelu_tanh")(x), tanh_form)
    torch.testing.assert_close(get_activation("swish")(x), x * torch.sigmoid(x))
    torch.testing.assert_close(get_activation("relu")(x), x.clamp(min=0))
    with pytest.raises(ValueError, match="activation"):
        FeedForward(4, 8, activation="tanhh")


def test_feed_forward_is_two_linears():
    ff = FeedForward(D, FF, activation="relu")
    x = torch.randn(2, 3, D)
    expected = F.linear(F.relu(F.linear(x, ff.fc1.weight, ff.fc1.bias)), ff.fc2.weight, ff.fc2.bias)
    torch.testing.assert_close(ff(x), expected)


def test_post_norm_layer_matches_torch_transformer_encoder_layer():
    torch.manual_seed(0)
    ours = EncoderLayer.build(D, H, FF, dropout=0.0, activation="relu").eval()
    ref = torch.nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True).eval()
    _copy_layer(ours, ref)
    x = torch.randn(2, 5, D)
    pad = torch.tensor([[1] * 5, [1, 1, 1, 0, 0]])
    out, _ = ours(x, mask=make_attention_mask(pad, query_len=5))
    expected = ref(x, src_key_padding_mask=pad == 0)
    torch.testing.assert_close(out[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :3], expected[1, :3], atol=1e-5, rtol=1e-5)


def test_pre_norm_layer_matches_torch_with_norm_first():
    torch.manual_seed(1)
    ours = EncoderLayer.build(D, H, FF, dropout=0.0, activation="gelu", norm_first=True).eval()
    ref = torch.nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True,
                                           activation="gelu", norm_first=True).eval()
    _copy_layer(ours, ref)
    x = torch.randn(2, 5, D)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(5)
    torch.testing.assert_close(ours(x, is_causal=True)[0], ref(x, src_mask=causal),
                               atol=1e-5, rtol=1e-5)


def _copy_layer(ours, ref):
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(ours.self_attn.qkv_proj.weight)
        ref.self_attn.in_proj_bias.copy_(ours.self_attn.qkv_proj.bias)
        ref.self_attn.out_proj.weight.copy_(ours.self_attn.out_proj.weight)
        ref.self_attn.out_proj.bias.copy_(ours.self_attn.out_proj.bias)
        for a, b in [(ours.ff.fc1, ref.linear1), (ours.ff.fc2, ref.linear2),
                     (ours.norm1, ref.norm1), (ours.norm2, ref.norm2)]:
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_stack_cached_steps_equal_full_pass(norm_first):
    torch.manual_seed(2)
    decoder = Decoder.build(2, d_model=D, n_heads=H, d_ff=FF, dropout=0.0, norm_first=norm_first,
                            final_norm=norm_first).eval()
    target, memory = torch.randn(2, 6, D), torch.randn(2, 4, D)
    memory_pad = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    memory_mask = make_attention_mask(memory_pad, query_len=1)
    full, _, _ = decoder(target, memory, memory_mask=memory_mask, is_causal=True)
    cache, cross_cache = KVCache(2, max_len=6), KVCache(2)
    steps = []
    for t in range(6):
        out, _, _ = decoder(target[:, t:t + 1], memory if t == 0 else None,
                            memory_mask=memory_mask, cache=cache, cross_cache=cross_cache)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 6


def test_decoder_only_cache_prefill_then_steps_with_padding():
    torch.manual_seed(3)
    stack = Encoder.build(2, d_model=D, n_heads=H, d_ff=FF, dropout=0.0, norm_first=True,
                          final_norm=True).eval()
    x = torch.randn(2, 7, D)
    pad = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])  # left padding
    full, _ = stack(x, mask=make_attention_mask(pad, query_len=7, causal=True))
    cache = KVCache(2, max_len=2)  # smaller than needed: the buffer grows
    prefill, _ = stack(x[:, :4], cache=cache,
                       mask=make_attention_mask(pad[:, :4], query_len=4, causal=True))
    outs = [prefill]
    for t in range(4, 7):
        mask = make_attention_mask(pad[:, :t + 1], query_len=1, causal=True)
        outs.append(stack(x[:, t:t + 1], mask=mask, cache=cache)[0])
    got = torch.cat(outs, 1)
    torch.testing.assert_close(got[:, 2:], full[:, 2:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], full[1], atol=1e-5, rtol=1e-5)


def test_cache_reorder_selects_rows():
    cache = KVCache(1)
    k = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 2, 1).contiguous()
    cache[0].append(k, k)
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache[0].k[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0]


def test_stack_returns_per_layer_attentions_and_checkpointing_matches():
    torch.manual_seed(4)
    stack = Encoder.build(3, d_model=D, n_heads=H, d_ff=FF, dropout=0.0)
    x = torch.randn(2, 5, D, requires_grad=True)
    out, attentions = stack(x, output_attentions=True)
    assert len(attentions) == 3 and attentions[0].shape == (2, H, 5, 5)
    torch.testing.assert_close(attentions[0].sum(-1), torch.ones(2, H, 5))
    out.sum().backward()
    grad = x.grad.clone()
    x.grad = None
    stack.gradient_checkpointing = True
    out2, _ = stack(x)
    out2.sum().backward()
    torch.testing.assert_close(out2, out)
    torch.testing.assert_close(x.grad, grad)


def test_init_schemes():
    torch.manual_seed(5)
    linear = torch.nn.Linear(400, 400)
    init_weights(linear, scheme="trunc_normal", std=0.02)
    assert linear.weight.abs().max() <= 0.04 + 1e-7
    assert abs(linear.weight.std().item() - 0.0176) < 0.002  # std of N(0, .02) cut at 2 std
    assert linear.bias.abs().max() == 0
    init_weights(linear, scheme="normal", std=0.02)
    assert abs(linear.weight.std().item() - 0.02) < 0.001
    init_weights(linear, scheme="xavier")
    bound = (6 / 800) ** 0.5
    assert linear.weight.abs().max() <= bound
    with pytest.raises(ValueError, match="scheme"):
        init_weights(linear, scheme="kaiming9")
    stack = Encoder.build(8, d_model=D, n_heads=H, d_ff=FF)
    scale_residual_projections(stack, 8)
    assert stack.layers[0].ff.fc2.weight.std().item() < 0.02 / 3
