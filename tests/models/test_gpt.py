"""GPT models: config validation, registry, causal structure, loss, KV cache, init, heads,
save/load."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import formerkit
from formerkit.models.gpt import GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel
from formerkit.nn import KVCache


def tiny(**overrides) -> GPTConfig:
    values = dict(vocab_size=30, d_model=24, n_heads=3, n_layers=2, max_seq_len=16, dropout=0.0)
    values.update(overrides)
    return GPTConfig(**values)


def ids(batch: int = 2, length: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 30, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_config_defaults_and_validation():
    config = GPTConfig()
    assert (config.d_model, config.n_layers, config.n_heads, config.max_seq_len) == \
        (768, 12, 12, 1024)
    assert config.d_ff == 4 * 768 and config.activation == "gelu_tanh"
    assert GPTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="d_model=30 must be divisible by n_heads=4"):
        GPTConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="activation"):
        GPTConfig(activation="tanh")
    with pytest.raises(ValueError, match="eos_token_id"):
        GPTConfig(vocab_size=10, eos_token_id=10)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.5)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig.from_dict({"n_layer": 2})


def test_registry_and_presets():
    assert "gpt" in formerkit.list_models()
    model = formerkit.create_model("gpt", preset="tiny", n_layers=1)
    assert isinstance(model, GPTForCausalLM) and model.config.n_layers == 1
    gpt2 = formerkit.models.registry.build_config("gpt", "gpt2")
    assert (gpt2.d_model, gpt2.n_layers, gpt2.vocab_size, gpt2.eos_token_id) == \
        (768, 12, 50257, 50256)
    small = formerkit.models.registry.build_config("gpt", "small")
    assert small.d_model <= 384 and small.n_layers <= 6


def gpt_parameter_count(c: GPTConfig) -> int:
    """GPT-2's count: embeddings, per layer 2 LayerNorms + QKV + output + MLP, final norm."""
    per_layer = 4 * c.d_model + 3 * c.d_model * (c.d_model + 1) + c.d_model * (c.d_model + 1) \
        + c.d_ff * (c.d_model + 1) + c.d_model * (c.d_ff + 1)
    return (c.vocab_size + c.max_seq_len) * c.d_model + c.n_layers * per_layer + 2 * c.d_model


def test_gpt2_124m_parameter_count():
    small = tiny(d_ff=40)
    assert GPTForCausalLM(small).num_parameters() == gpt_parameter_count(small)
    gpt2 = formerkit.models.registry.build_config("gpt", "gpt2")
    assert gpt_parameter_count(gpt2) == 124_439_808  # HF's GPT-2 (tied head counted once)


def test_forward_shapes_and_tied_head():
    model = GPTForCausalLM(tiny()).eval()
    out = model(ids())
    assert out.logits.shape == (2, 8, 30) and out.loss is None
    assert model.lm_head.weight is model.transformer.embed_tokens.weight
    untied = GPTForCausalLM(tiny(tie_embeddings=False))
    assert untied.lm_head.weight is not untied.transformer.embed_tokens.weight


def test_loss_is_shifted_cross_entropy_with_ignore_index():
    model = GPTForCausalLM(tiny()).eval()
    x = ids()
    labels = x.clone()
    labels[0, 5] = -100
    out = model(x, labels=labels)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, 30), labels[:, 1:].reshape(-1),
                               ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.transformer.embed_tokens.weight.grad is not None


def test_causal_future_tokens_do_not_change_the_past():
    model = GPTForCausalLM(tiny()).eval()
    x = ids()
    changed = x.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 30
    with torch.no_grad():
        a, b = model(x).logits, model(changed).logits
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_kv_cache_matches_full_forward():
    model = GPTForCausalLM(tiny()).eval()
    x = ids(length=10)
    with torch.no_grad():
        full = model(x).logits
        out = model(x[:, :4], use_cache=True)
        steps = [out.logits]
        cache = out.past_key_values
        assert isinstance(cache, KVCache) and cache.length == 4
        steps.append(model(x[:, 4:7], past_key_values=cache).logits)  # several at once
        for t in range(7, 10):
            steps.append(model(x[:, t:t + 1], past_key_values=cache).logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_padding_mask_and_math_backend_agree_with_sdpa():
    x = ids()
    mask = torch.ones_like(x)
    mask[1, :3] = 0
    sdpa = GPTForCausalLM(tiny()).eval()
    math_model = GPTForCausalLM(tiny(backend="math")).eval()
    math_model.load_state_dict(sdpa.state_dict())
    with torch.no_grad():
        a = sdpa(x, attention_mask=mask).logits
        b = math_model(x, attention_mask=mask).logits
    torch.testing.assert_close(a[mask.bool()], b[mask.bool()], atol=1e-5, rtol=0)
    # Real tokens never see the padding: the padded row equals the unpadded prompt alone.
    with torch.no_grad():
        alone = sdpa(x[1:, 3:], position_ids=torch.arange(3, 8)[None]).logits
    torch.testing.assert_close(a[1, 3:], alone[0], atol=1e-5, rtol=0)


def test_output_attentions():
    model = GPTForCausalLM(tiny()).eval()
    out = model(ids(length=5), output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 3, 5, 5)
    weights = out.attentions[1]
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))
    assert (weights.triu(diagonal=1) == 0).all()
    assert model(ids()).attentions is None


def test_scaled_residual_init():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(d_model=256, n_heads=4, n_layers=8, vocab_size=64,
                               max_seq_len=32))
    layer = model.encoder.layers[0]
    scaled = 0.02 / math.sqrt(2 * 8)
    assert abs(layer.self_attn.out_proj.weight.std().item() - scaled) < 0.1 * scaled
    assert abs(layer.ff.fc2.weight.std().item() - scaled) < 0.1 * scaled
    assert abs(layer.self_attn.qkv_proj.weight.std().item() - 0.02) < 0.002
    assert abs(model.embed_tokens.weight.std().item() - 0.02) < 0.002
    assert torch.all(layer.ff.fc1.bias == 0) and torch.all(layer.norm1.weight == 1)


def test_dropout_only_in_training():
    model = GPTForCausalLM(tiny(dropout=0.5))
    x = ids()
    model.train()
    assert not torch.equal(model(x).logits, model(x).logits)
    model.eval()
    assert torch.equal(model(x).logits, model(x).logits)


def test_length_errors():
    model = GPTForCausalLM(tiny()).eval()
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model(ids(length=17))
    with pytest.raises(ValueError, match="position_ids"):
        model(ids(length=2), position_ids=torch.tensor([[15, 16]]))
    out = model(ids(length=10), use_cache=True)
    with pytest.raises(ValueError, match="cached 10"):
        model(ids(length=7), past_key_values=out.past_key_values)


def test_sequence_classification_pools_last_non_pad_token():
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny(num_labels=3, pad_token_id=0)).eval()
    x = ids(batch=3).clamp(min=1)
    x[0, 6:] = 0  # right padding
    x[1, :2] = 0  # left padding: the last token is still the last non-pad one
    mask = (x != 0).long()
    out = model(x, attention_mask=mask)
    hidden = model.transformer(x, attention_mask=mask).last_hidden_state
    expected = model.score(hidden[torch.arange(3), torch.tensor([5, 7, 7])])
    torch.testing.assert_close(out.logits, expected)
    labels = torch.tensor([0, 2, 1])
    torch.testing.assert_close(model(x, mask, labels=labels).loss,
                               F.cross_entropy(out.logits, labels))
    regression = GPTForSequenceClassification(tiny(num_labels=1, pad_token_id=0)).eval()
    target = torch.tensor([0.5, -1.0, 2.0])
    reg = regression(x, mask, labels=target)
    torch.testing.assert_close(reg.loss, F.mse_loss(reg.logits.squeeze(-1), target))
    multi = torch.tensor([[1.0, 0.0, 1.0]] * 3)
    torch.testing.assert_close(model(x, mask, labels=multi).loss,
                               F.binary_cross_entropy_with_logits(out.logits, multi))
    with pytest.raises(ValueError, match="pad_token_id"):
        GPTForSequenceClassification(tiny())(x)


@pytest.mark.parametrize("cls", [GPTModel, GPTForCausalLM, GPTForSequenceClassification])
def test_save_and_load_round_trip(tmp_path, cls):
    model = cls(tiny(pad_token_id=0, eos_token_id=1)).eval()
    model.save_pretrained(tmp_path)
    loaded = formerkit.from_pretrained(tmp_path)
    assert type(loaded) is cls and loaded.config == model.config
    x = ids().clamp(min=1)
    a, b = model(x), loaded(x)
    field = "last_hidden_state" if cls is GPTModel else "logits"
    torch.testing.assert_close(getattr(a, field), getattr(b, field), atol=0, rtol=0)
    if cls is GPTForCausalLM:
        assert loaded.generation_config == {"eos_token_id": 1, "pad_token_id": 0}
        assert loaded.lm_head.weight is loaded.transformer.embed_tokens.weight


def test_mismatched_checkpoint_shapes_are_named(tmp_path):
    GPTForCausalLM(tiny()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="embed_positions.weight"):
        GPTForCausalLM.from_pretrained(tmp_path, max_seq_len=32)
