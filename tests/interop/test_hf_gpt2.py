"""HuggingFace GPT-2 interop: random-init transformers models saved to disk, loaded by formerkit
(and back), compared logit for logit."""

from __future__ import annotations

import json

import pytest
import torch

import formerkit
from formerkit.models.gpt import GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel

transformers = pytest.importorskip("transformers")

# (n_embd, n_head, n_layer, n_inner, activation): includes 3 and 6 heads (not powers of two).
SHAPES = [
    (60, 3, 2, None, "gelu_new"),
    (32, 4, 3, 48, "gelu_new"),
    (24, 6, 1, None, "gelu"),
]
VOCAB, CONTEXT = 50, 32


def hf_config(n_embd: int = 60, n_head: int = 3, n_layer: int = 2, n_inner: int | None = None,
              activation: str = "gelu_new", **extra):
    return transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=CONTEXT, n_embd=n_embd, n_head=n_head, n_layer=n_layer,
        n_inner=n_inner, activation_function=activation, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, initializer_range=0.1,
        attn_implementation="eager", **extra)


def save_hf(model, path, *, safetensors: bool = True):
    model.save_pretrained(path)
    if not safetensors:
        (path / "model.safetensors").unlink()
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    return path


def batch_with_padding(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padded
    mask[1, -2:] = 0  # right padded
    return ids, mask


def assert_close_where(a, b, mask, atol=1e-4):
    """Compare (B, T, ...) tensors at real (unpadded) positions only: padding rows of the
    attention are undefined (HF spreads them uniformly, formerkit zeroes them)."""
    diff = (a - b)[mask.bool()].abs().max()
    assert diff < atol, f"max difference {diff}"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("safetensors", [True, False])
def test_causal_lm_logits_match(tmp_path, shape, safetensors):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_config(*shape)).eval()
    model = GPTForCausalLM.from_pretrained(save_hf(hf, tmp_path, safetensors=safetensors))
    assert model.config.n_heads == shape[1] and model.config.d_ff == (shape[3] or 4 * shape[0])
    ids, mask = batch_with_padding()
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, atol=1e-4, rtol=0)
        assert_close_where(model(ids, attention_mask=mask).logits,
                           hf(ids, attention_mask=mask).logits, mask)
        ours = model(ids, attention_mask=mask, position_ids=position_ids).logits
        theirs = hf(ids, attention_mask=mask, position_ids=position_ids).logits
    assert_close_where(ours, theirs, mask)


def test_base_model_and_auto_loading(tmp_path):
    torch.manual_seed(1)
    hf = transformers.GPT2Model(hf_config()).eval()
    path = save_hf(hf, tmp_path)
    model = formerkit.from_pretrained(path)
    assert isinstance(model, GPTModel)
    ids, mask = batch_with_padding(1)
    with torch.no_grad():
        assert_close_where(model(ids, attention_mask=mask).last_hidden_state,
                           hf(ids, attention_mask=mask).last_hidden_state, mask)


def test_lm_checkpoint_loads_as_base_model(tmp_path):
    torch.manual_seed(2)
    hf = transformers.GPT2LMHeadModel(hf_config()).eval()
    model = GPTModel.from_pretrained(save_hf(hf, tmp_path))
    ids, _ = batch_with_padding(2)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).last_hidden_state,
                                   hf.transformer(ids).last_hidden_state, atol=1e-4, rtol=0)


def test_sequence_classification_matches(tmp_path):
    torch.manual_seed(3)
    hf = transformers.GPT2ForSequenceClassification(
        hf_config(num_labels=3, pad_token_id=0)).eval()
    model = formerkit.from_pretrained(save_hf(hf, tmp_path))
    assert isinstance(model, GPTForSequenceClassification) and model.config.num_labels == 3
    ids, mask = batch_with_padding(3)
    ids = ids.masked_fill(mask == 0, 0)  # pooling finds the last token that is not pad
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        ours = model(ids, attention_mask=mask, labels=labels)
        theirs = hf(ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-5, rtol=0)


def test_lm_checkpoint_starts_a_classifier(tmp_path):
    torch.manual_seed(8)
    hf = transformers.GPT2LMHeadModel(hf_config(pad_token_id=0)).eval()
    with pytest.warns(UserWarning, match="score.weight"):
        model = GPTForSequenceClassification.from_pretrained(save_hf(hf, tmp_path), num_labels=3)
    ids, _ = batch_with_padding(8)
    with torch.no_grad():
        torch.testing.assert_close(model.transformer(ids).last_hidden_state,
                                   hf.transformer(ids).last_hidden_state, atol=1e-4, rtol=0)
    assert model(ids).logits.shape == (3, 3)


def test_output_attentions_match_eager(tmp_path):
    torch.manual_seed(4)
    hf = transformers.GPT2LMHeadModel(hf_config(24, 6, 2)).eval()
    model = GPTForCausalLM.from_pretrained(save_hf(hf, tmp_path))
    ids, mask = batch_with_padding(4)
    with torch.no_grad():
        ours = model(ids, attention_mask=mask, output_attentions=True).attentions
        theirs = hf(ids, attention_mask=mask, output_attentions=True).attentions
    assert len(ours) == 2 and ours[0].shape == (3, 6, 9, 9)
    for a, b in zip(ours, theirs):
        # (B, H, T, Tk) -> (B, T, H, Tk) so that the mask selects real query rows
        assert_close_where(a.transpose(1, 2), b.transpose(1, 2), mask, atol=1e-5)


@pytest.mark.parametrize("tie", [True, False])
def test_save_hf_loads_in_transformers(tmp_path, tie):
    torch.manual_seed(5)
    model = GPTForCausalLM(GPTConfig(vocab_size=VOCAB, d_model=36, n_heads=3, n_layers=2,
                                     max_seq_len=CONTEXT, dropout=0.0, tie_embeddings=tie,
                                     bos_token_id=1, eos_token_id=2)).eval()
    model.save_pretrained(tmp_path, hf=True)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids, mask = batch_with_padding(5)
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids).logits, atol=1e-5, rtol=0)
        assert_close_where(hf(ids, attention_mask=mask).logits,
                           model(ids, attention_mask=mask).logits, mask)
    # ... and formerkit reads its own HF directory back.
    again = GPTForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_save_hf_sequence_classification(tmp_path):
    torch.manual_seed(6)
    model = GPTForSequenceClassification(GPTConfig(
        vocab_size=VOCAB, d_model=24, n_heads=2, n_layers=1, max_seq_len=CONTEXT, dropout=0.0,
        num_labels=4, pad_token_id=0)).eval()
    model.save_pretrained(tmp_path, hf=True)
    hf = transformers.GPT2ForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask = batch_with_padding(6)
    ids = ids.masked_fill(mask == 0, 0)
    with torch.no_grad():
        torch.testing.assert_close(hf(ids, attention_mask=mask).logits,
                                   model(ids, attention_mask=mask).logits, atol=1e-5, rtol=0)


def test_gpt2_tokenizer_files_load_with_the_model(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(["hello world, hello there"] * 10, vocab_size=VOCAB + 256,
                            min_frequency=1, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(tmp_path))  # vocab.json + merges.txt, as GPT-2 checkpoints ship them
    torch.manual_seed(7)
    save_hf(transformers.GPT2LMHeadModel(hf_config()), tmp_path)
    model = GPTForCausalLM.from_pretrained(tmp_path)
    assert model.tokenizer is not None
    assert model.tokenizer.decode(model.tokenizer.encode("hello world")) == "hello world"


# ---- errors ----------------------------------------------------------------------------------

def test_other_architecture_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="llama"):
        GPTForCausalLM.from_pretrained(tmp_path)
    bert = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=32)
    transformers.BertModel(bert).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="bert"):
        GPTForCausalLM.from_pretrained(tmp_path / "bert")


def test_unsupported_gpt2_variant_is_a_clear_error(tmp_path):
    save_hf(transformers.GPT2LMHeadModel(hf_config(scale_attn_by_inverse_layer_idx=True)),
            tmp_path)
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        GPTForCausalLM.from_pretrained(tmp_path)


def test_missing_and_truncated_weights(tmp_path):
    save_hf(transformers.GPT2LMHeadModel(hf_config()), tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        GPTForCausalLM.from_pretrained(tmp_path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        GPTForCausalLM.from_pretrained(tmp_path)
    torch.save({"x": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with open(tmp_path / "pytorch_model.bin", "r+b") as f:
        f.truncate(20)
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        GPTForCausalLM.from_pretrained(tmp_path)


def test_mismatched_shapes_name_the_tensor(tmp_path):
    save_hf(transformers.GPT2LMHeadModel(hf_config()), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_positions"] = CONTEXT * 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"embed_positions.weight.*model.safetensors|"
                                         r"model.safetensors.*embed_positions.weight"):
        GPTForCausalLM.from_pretrained(tmp_path)


def test_special_ids_outside_the_vocabulary_load_with_a_warning(tmp_path):
    """transformers accepts vocab_size 99 with GPT-2's default bos/eos 50256; so does formerkit,
    keeping those ids out of generation, and output_attentions comparisons work."""
    config = transformers.GPT2Config(vocab_size=99, n_positions=16, n_embd=24, n_head=2,
                                     n_layer=1, attn_implementation="eager")
    assert config.bos_token_id == 50256
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="bos_token_id=50256 is outside the vocabulary of 99"):
        ours = formerkit.from_pretrained(tmp_path)
    assert ours.config.bos_token_id is None and ours.config.eos_token_id is None
    assert not (ours.generation_config or {}).get("eos_token_id")
    ids = torch.randint(0, 99, (2, 7))
    ours.config.backend = "math"
    for layer in ours.transformer.encoder.layers:
        layer.self_attn.backend = "math"
    with torch.no_grad():
        theirs = hf(ids, output_attentions=True).attentions
        mine = ours(ids, output_attentions=True).attentions
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(mine, theirs))
    assert ours.generate(ids[:, :3], max_new_tokens=4).shape == (2, 7)
