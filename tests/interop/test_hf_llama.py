"""HuggingFace Llama / Qwen2 / Mistral interop: random-init transformers models saved to disk,
loaded by formerkit (and back), compared logit for logit and token for token."""

from __future__ import annotations

import json

import pytest
import torch

import formerkit
from formerkit.models.llama import LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel

transformers = pytest.importorskip("transformers")
VOCAB = 64


def hf_model(kind: str = "llama", *, cls: str = "ForCausalLM", seed: int = 0, **extra):
    """A tiny random transformers model: 3 layers, 4 query heads over 2 key/value heads."""
    config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
                    "mistral": transformers.MistralConfig}[kind]
    options = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=56, num_hidden_layers=3,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                   rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1,
                   eos_token_id=2, pad_token_id=0, initializer_range=0.2,
                   attn_implementation="eager")
    options.update(extra)
    torch.manual_seed(seed)
    prefix = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral"}[kind]
    model = getattr(transformers, prefix + cls)(config_class(**options)).eval()
    with torch.no_grad():  # non-trivial norms, so a misplaced norm weight would show
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    return model


def batch(seed: int = 0, length: int = 12):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padded
    ids[0, :4] = 0
    return ids, mask


CASES = {
    "llama": ("llama", {}),
    "llama-tied-bias-mlp-bias": ("llama", dict(tie_word_embeddings=True, attention_bias=True,
                                               mlp_bias=True)),
    "llama-linear-rope": ("llama", dict(rope_scaling={"rope_type": "linear", "factor": 2.0},
                                        rope_theta=500.0)),
    "llama-dynamic-rope": ("llama", dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0},
                                         max_position_embeddings=8)),
    "llama3-rope": ("llama", dict(rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}, rope_theta=50000.0)),
    "llama-head-dim": ("llama", dict(head_dim=16)),
    "qwen2": ("qwen2", dict(tie_word_embeddings=True)),
    "qwen2-window": ("qwen2", dict(use_sliding_window=True, sliding_window=5,
                                   max_window_layers=1)),
    "mistral-window": ("mistral", dict(sliding_window=5)),
    "mistral-mqa": ("mistral", dict(num_key_value_heads=1, sliding_window=None)),
}


def _load(tmp_path, hf, cls=LlamaForCausalLM):
    hf.save_pretrained(tmp_path / "hf")
    return cls.from_pretrained(tmp_path / "hf")


@pytest.mark.parametrize("case", list(CASES))
def test_causal_lm_logits_match_transformers(tmp_path, case):
    kind, extra = CASES[case]
    hf = hf_model(kind, **extra)
    ours = _load(tmp_path, hf)
    ids, mask = batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        got = ours(ids, attention_mask=mask).logits
        # Unpadded rows for the loss: a padded position's logits are undefined (HF attends
        # uniformly there, formerkit zeroes it) yet scored on the next real token.
        hf_loss = hf(input_ids=ids[1:], labels=ids[1:]).loss
        our_loss = ours(ids[1:], labels=ids[1:]).loss
    real = mask.bool()
    assert (got - expected)[real].abs().max() < 1e-4
    assert abs(float(hf_loss) - float(our_loss)) < 1e-4


@pytest.mark.parametrize("case", ["llama", "qwen2-window", "mistral-window", "llama-dynamic-rope",
                                  "llama3-rope"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_matches_transformers_token_for_token(tmp_path, case, num_beams):
    kind, extra = CASES[case]
    hf = hf_model(kind, **extra)
    ours = _load(tmp_path, hf)
    ids, mask = batch(length=6)
    settings = dict(max_new_tokens=10, num_beams=num_beams, do_sample=False, eos_token_id=2,
                    pad_token_id=0)
    with torch.no_grad():
        expected = hf.generate(input_ids=ids, attention_mask=mask, **settings)
        got = ours.generate(ids, attention_mask=mask, **settings)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
def test_save_hf_loads_in_transformers_with_identical_logits(tmp_path, kind):
    extra = dict(sliding_window=5) if kind == "mistral" else {}
    ours = _load(tmp_path, hf_model(kind, **extra))
    ours.save_pretrained(tmp_path / "back", hf=True)
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["model_type"] == kind
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    ids, mask = batch()
    with torch.no_grad():
        diff = (reloaded(input_ids=ids, attention_mask=mask).logits
                - ours(ids, attention_mask=mask).logits)[mask.bool()].abs().max()
    assert diff < 1e-5


def test_backbone_and_sequence_classification_match(tmp_path):
    hf = hf_model("qwen2", cls="ForSequenceClassification", num_labels=3)
    ours = _load(tmp_path, hf, LlamaForSequenceClassification)
    ids, mask = batch()
    ids = ids.flip(1)
    mask = mask.flip(1)  # right padding with pad id 0, the last real token is pooled
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, labels=labels)
        got = ours(ids, attention_mask=mask, labels=labels)
    assert torch.allclose(got.logits, expected.logits, atol=1e-4)
    assert abs(float(got.loss) - float(expected.loss)) < 1e-4
    hf_base = hf_model("llama", cls="Model")
    base = _load(tmp_path / "base", hf_base, LlamaModel)
    with torch.no_grad():
        diff = (base(ids, attention_mask=mask).last_hidden_state
                - hf_base(input_ids=ids, attention_mask=mask).last_hidden_state)
    assert diff[mask.bool()].abs().max() < 1e-4


def test_formerkit_from_pretrained_picks_the_class_and_output_attentions(tmp_path):
    hf = hf_model("mistral", sliding_window=5)
    hf.save_pretrained(tmp_path)
    model = formerkit.from_pretrained(tmp_path)
    assert type(model) is LlamaForCausalLM and model.config.sliding_window == 5
    ids, _ = batch()
    model.config.backend = "math"
    for layer in model.model.encoder.layers:
        layer.self_attn.backend = "math"
    with torch.no_grad():
        ours = model(ids, output_attentions=True).attentions
        theirs = hf(input_ids=ids, output_attentions=True).attentions
    assert len(ours) == 3 and ours[0].shape == (3, 4, 12, 12)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, theirs))
    assert bool((ours[0][..., 11, :7] == 0).all())  # window 5: keys 0..6 hidden from query 11


def test_formerkit_round_trip_keeps_outputs(tmp_path):
    model = formerkit.create_model("llama", preset="tiny", tie_embeddings=True).eval()
    model.save_pretrained(tmp_path)
    loaded = formerkit.from_pretrained(tmp_path)
    ids = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_unsupported_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="rope_scaling type 'yarn' is not supported"):
        formerkit.create_model("llama", preset="tiny", rope_scaling={"rope_type": "yarn",
                                                                     "factor": 2.0})
    hf = hf_model("llama", hidden_act="gelu_fast")
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="hidden_act='gelu_fast' is not supported"):
        formerkit.from_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(hidden_act="silu", architectures=["LlamaForTokenClassification"])
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="LlamaForTokenClassification"):
        formerkit.from_pretrained(tmp_path)
