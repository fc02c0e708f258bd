"""Attention capture: every registered text model returns per-layer, per-head weights with
``output_attentions=True`` in HuggingFace's shapes, equal to HF's eager attention for GPT-2
and BERT on the same weights, and leaves outputs unchanged (no weights when it is off)."""

from __future__ import annotations

import pytest
import torch

from formerkit.models.registry import get_model_entry, list_models

B, T, TT, H = 2, 7, 5, 4
TINY = dict(vocab_size=40, tgt_vocab_size=40, d_model=32, n_heads=H, n_layers=2,
            n_encoder_layers=2, n_decoder_layers=3, d_ff=48, max_seq_len=16, dropout=0.0,
            pad_token_id=0)


def _text_models() -> list[str]:
    return [name for name in list_models()
            if "vocab_size" in get_model_entry(name).config_class.field_names()]


def _tiny(name: str) -> torch.nn.Module:
    entry = get_model_entry(name)
    fields = entry.config_class.field_names()
    torch.manual_seed(0)
    config = entry.config_class.from_dict({k: v for k, v in TINY.items() if k in fields})
    return entry.model_class(config).eval()


def _inputs(seq2seq: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 40, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, -2:] = 0  # right padding in row 1
    inputs = dict(input_ids=ids.masked_fill(mask == 0, 0), attention_mask=mask)
    if seq2seq:
        inputs["decoder_input_ids"] = torch.randint(1, 40, (B, TT), generator=g)
    return inputs


def test_some_text_model_is_registered():
    assert _text_models(), "no registered model has a vocabulary"


@pytest.mark.parametrize("name", _text_models())
def test_output_attentions_shapes(name):
    model = _tiny(name)
    config = model.config
    seq2seq = hasattr(config, "n_decoder_layers")
    inputs = _inputs(seq2seq)
    with torch.no_grad():
        plain = model(**inputs)
        out = model(**inputs, output_attentions=True)
    assert plain.attentions is None  # the fast path returns no weights
    if seq2seq:
        expected = {"encoder_attentions": (config.n_encoder_layers, (B, H, T, T)),
                    "attentions": (config.n_decoder_layers, (B, H, TT, TT)),
                    "cross_attentions": (config.n_decoder_layers, (B, H, TT, T))}
    else:
        expected = {"attentions": (config.n_layers, (B, H, T, T))}
    for field, (n_layers, shape) in expected.items():
        weights = getattr(out, field)
        assert weights is not None and len(weights) == n_layers, field
        for w in weights:
            assert tuple(w.shape) == shape, field
            assert torch.isfinite(w).all()
            # every query's weights sum to 1 (row 0 has no padding)
            torch.testing.assert_close(w[0].sum(-1), torch.ones(w.shape[1:-1]))
        # padded keys of row 1 get no weight
        if field in ("encoder_attentions", "cross_attentions") or not seq2seq:
            assert float(weights[0][1, ..., -2:].abs().max()) == 0.0
    # capturing the weights (math backend) must not change the result
    for field in ("logits", "last_hidden_state"):
        if getattr(plain, field, None) is not None:
            torch.testing.assert_close(getattr(out, field), getattr(plain, field),
                                       atol=1e-5, rtol=1e-5)


def _decoder_only_names() -> list[str]:
    return [n for n in _text_models() if "n_layers" in get_model_entry(n).config_class
            .field_names() and "type_vocab_size" not in get_model_entry(n).config_class
            .field_names()]


@pytest.mark.parametrize("name", _decoder_only_names())
def test_causal_weights_are_lower_triangular(name):
    model = _tiny(name)
    with torch.no_grad():
        out = model(input_ids=torch.randint(1, 40, (1, T)), output_attentions=True)
    for w in out.attentions:
        above = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        assert float(w[0][:, above].abs().max()) == 0.0


# ---- equality with transformers' eager attention ---------------------------------------------

transformers = pytest.importorskip("transformers")


def _hf_pair(kind: str, tmp_path):
    """A random HF model (eager attention) and the formerkit model loaded from its files."""
    import formerkit

    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=H,
                                         n_positions=16, resid_pdrop=0.0, embd_pdrop=0.0,
                                         attn_pdrop=0.0, bos_token_id=39, eos_token_id=39)
        hf = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=H, intermediate_size=48,
                                         max_position_embeddings=16,
                                         hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0)
        hf = transformers.BertModel(config)
    config._attn_implementation = "eager"
    with torch.no_grad():  # non-trivial biases so every projection matters
        for param_name, param in hf.named_parameters():
            if param_name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
    hf.eval().save_pretrained(tmp_path)
    return hf, formerkit.from_pretrained(tmp_path).eval()


@pytest.mark.parametrize("kind,family", [("gpt2", "gpt"), ("bert", "bert")])
def test_attentions_equal_transformers_eager(kind, family, tmp_path):
    if family not in list_models():
        pytest.skip(f"{family} is not registered yet")
    hf, ours = _hf_pair(kind, tmp_path)
    inputs = _inputs(seq2seq=False)
    with torch.no_grad():
        theirs = hf(**inputs, output_attentions=True).attentions
        mine = ours(**inputs, output_attentions=True).attentions
    assert len(mine) == len(theirs) == 2
    real = inputs["attention_mask"].bool()  # compare the rows of real (non-padding) queries
    for a, b in zip(mine, theirs):
        assert a.shape == b.shape == (B, H, T, T)
        torch.testing.assert_close(a.transpose(1, 2)[real], b.transpose(1, 2)[real],
                                   atol=1e-5, rtol=1e-4)
