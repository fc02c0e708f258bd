"""The Llama family's training-side features: LoRA on every projection, bf16 autocast, FSDP
wrapping, presets, and config validation."""

from __future__ import annotations

import pytest
import torch

import formerkit
from formerkit.models.llama import LlamaConfig, LlamaForCausalLM
from formerkit.nn import EncoderLayer, GatedFeedForward, MultiHeadAttention, RMSNorm
from formerkit.nn.lora import LoRALinear, apply_lora, merge_lora

TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "gate_proj", "up_proj", "down_proj"]


def _tiny(**overrides) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return formerkit.create_model("llama", preset="tiny", **overrides)


def test_the_family_is_assembled_from_the_open_blocks():
    model = _tiny()
    layer = model.model.encoder.layers[0]
    assert type(layer) is EncoderLayer and layer.norm_first
    assert type(layer.self_attn) is MultiHeadAttention and layer.self_attn.n_kv_heads == 2
    assert type(layer.ff) is GatedFeedForward and type(layer.norm1) is RMSNorm
    assert type(model.model.encoder.norm) is RMSNorm


def test_lora_on_every_projection_trains_only_the_adapters_and_merges_exactly():
    model = _tiny()
    report = apply_lora(model, targets=TARGETS, rank=4, alpha=8)
    adapted = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(adapted) == 7 * model.config.n_layers
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert report.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    ids = torch.randint(0, 256, (2, 12))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        adapted_logits = model(ids).logits
        adapted_tokens = model.generate(ids[:, :4], max_new_tokens=6, eos_token_id=[])
        merge_lora(model)
        assert not any(isinstance(m, LoRALinear) for m in model.modules())
        torch.testing.assert_close(model(ids).logits, adapted_logits, atol=1e-5, rtol=0)
        assert torch.equal(model.generate(ids[:, :4], max_new_tokens=6, eos_token_id=[]),
                           adapted_tokens)


def test_bf16_autocast_training_step_stays_close_to_fp32():
    model = _tiny()
    ids = torch.randint(0, 256, (2, 16))
    fp32 = model(ids, labels=ids).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model(ids, labels=ids).loss
    bf16.backward()
    assert torch.isfinite(bf16) and abs(bf16.item() - fp32.item()) < 0.05
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)


def test_fsdp_wraps_each_llama_layer(monkeypatch):
    from formerkit.train import distributed

    wrapped = []
    monkeypatch.setattr("torch.distributed.fsdp.fully_shard", wrapped.append)
    info = distributed.DistInfo.__new__(distributed.DistInfo)
    monkeypatch.setattr(type(info), "distributed", property(lambda self: True), raising=False)
    model = _tiny()
    distributed.wrap_model(model, info, "fsdp")
    layers = list(model.model.encoder.layers)
    assert [m for m in wrapped if m is not model] == layers and wrapped[-1] is model


@pytest.mark.parametrize("preset", ["smollm-135m", "llama-3.2-1b", "qwen2.5-0.5b",
                                    "mistral-7b"])
def test_presets_build_valid_configs(preset):
    from formerkit.models.registry import build_config

    config = build_config("llama", preset)
    assert isinstance(config, LlamaConfig) and config.n_heads % config.n_kv_heads == 0


def test_smollm_preset_has_the_published_parameter_count():
    with torch.device("meta"):
        model = formerkit.create_model("llama", preset="smollm-135m")
    assert model.num_parameters() == 134_515_008  # SmolLM-135M's count (tied embeddings)


@pytest.mark.parametrize("overrides,message", [
    (dict(n_heads=4, n_kv_heads=3), "multiple of n_kv_heads=3"),
    (dict(d_model=30, n_heads=4), "divisible by n_heads=4"),
    (dict(rms_norm_eps=float("nan")), "rms_norm_eps"),
    (dict(architecture="gemma"), "architecture"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "lacks low_freq_factor"),
    (dict(n_layers=1.5), "n_layers"),
])
def test_bad_configs_are_errors_that_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        _tiny(**overrides)
