"""HuggingFace Marian <-> formerkit Transformer: logits, greedy and beam ``generate()``, saving."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import formerkit  # noqa: E402
from formerkit.models.transformer import (  # noqa: E402
    TransformerConfig,
    TransformerForSeq2Seq,
    TransformerModel,
)

PAD, EOS, VOCAB = 58, 0, 59


def _hf_config(**overrides):
    values = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                  decoder_ffn_dim=48 + 16, max_position_embeddings=64,
                  activation_function="swish", pad_token_id=PAD, eos_token_id=EOS,
                  decoder_start_token_id=PAD, scale_embedding=True, forced_eos_token_id=None,
                  dropout=0.0)
    values.update(overrides)
    return transformers.MarianConfig(**values)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch.manual_seed(0)
    # An untied, larger output projection makes a random model's outputs vary with the input
    # (with tied embeddings it mostly repeats its last token).
    model = transformers.MarianMTModel(_hf_config(init_std=0.1, tie_word_embeddings=False))
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.3)
        model.final_logits_bias.normal_(0.0, 0.1)
        model.final_logits_bias[0, EOS] = 2.0  # so that some hypotheses end early
        model.final_logits_bias[0, PAD] = -1e4  # and pad is never a real token
    path = tmp_path_factory.mktemp("marian")
    model.save_pretrained(path)
    return path


def _source():
    torch.manual_seed(1)
    ids = torch.randint(1, PAD, (3, 9))
    mask = torch.ones_like(ids)
    ids[1, 6:], mask[1, 6:] = PAD, 0  # a padded source
    ids[2, 4:], mask[2, 4:] = PAD, 0
    return ids, mask


def test_config_mapping(hf_dir):
    model = TransformerForSeq2Seq.from_pretrained(hf_dir)
    c = model.config
    assert (c.position_layout, c.activation, c.final_logits_bias) == ("halves", "swish", True)
    assert (c.pad_token_id, c.decoder_start_token_id, c.eos_token_id) == (PAD, PAD, EOS)
    assert c.tie_embeddings is False and model.lm_head.weight is not model.model.tgt_embed.weight
    assert model.model.src_embed is not model.model.tgt_embed  # transformers 5 unties all


def test_logits_match(hf_dir):
    hf = transformers.MarianMTModel.from_pretrained(hf_dir).eval()
    ours = formerkit.from_pretrained(hf_dir)
    assert isinstance(ours, TransformerForSeq2Seq)
    ids, mask = _source()
    dec = torch.randint(1, PAD, (3, 6))
    dec[:, 0] = PAD
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
        got = ours(ids, mask, dec)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.encoder_last_hidden_state,
                               expected.encoder_last_hidden_state, atol=1e-4, rtol=0)
    labels = torch.randint(1, PAD, (3, 6))
    with torch.no_grad():
        hf_loss = hf(input_ids=ids, attention_mask=mask, labels=labels).loss
        our_loss = ours(ids, mask, labels=labels).loss
    torch.testing.assert_close(our_loss, hf_loss, atol=1e-5, rtol=0)


def test_base_model_matches(hf_dir):
    hf = transformers.MarianModel.from_pretrained(hf_dir).eval()
    ours = TransformerModel.from_pretrained(hf_dir)
    ids, mask = _source()
    dec = torch.randint(1, PAD, (3, 5))
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
        got = ours(ids, mask, dec)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=1e-4,
                               rtol=0)


@pytest.mark.parametrize("beams,length_penalty,early_stopping", [
    (1, 1.0, False), (3, 1.0, False), (4, 0.6, True), (3, 2.0, "never")])
def test_generate_matches_transformers(hf_dir, beams, length_penalty, early_stopping):
    hf = transformers.MarianMTModel.from_pretrained(hf_dir).eval()
    ours = TransformerForSeq2Seq.from_pretrained(hf_dir)
    ids, mask = _source()
    kwargs = dict(max_new_tokens=12, num_beams=beams, length_penalty=length_penalty,
                  early_stopping=early_stopping)
    with torch.no_grad():
        expected = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, **kwargs)
    got = ours.generate(ids, mask, **kwargs)
    assert got.tolist() == expected.tolist()
    # Hypotheses that ended early are padded: the comparison covers eos and padding.
    assert bool((expected[:, 1:] == EOS).any())
    if length_penalty <= 1.0:  # (a strong length penalty favours the long hypotheses here)
        assert bool((expected[:, 1:] == PAD).any())


def test_cached_decoding_equals_full_forward(hf_dir):
    model = TransformerForSeq2Seq.from_pretrained(hf_dir)
    ids, mask = _source()
    out = model.generate(ids, mask, max_new_tokens=8, eos_token_id=[])  # never stops early
    with torch.no_grad():
        full = model(ids, mask, out[:, :-1]).logits  # (B, T, V) without a cache
    torch.testing.assert_close(full.argmax(-1), out[:, 1:])
    start, state = model.start_decoding(ids, mask, expand=1, max_new_tokens=8)
    with torch.no_grad():
        steps = [model.decoding_logits(state, out[:, t:t + 1]) for t in range(out.shape[1] - 1)]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout,shared", [("halves", True), ("interleaved", False)])
def test_save_hf_round_trip(tmp_path, layout, shared):
    torch.manual_seed(2)
    config = TransformerConfig(vocab_size=40, tgt_vocab_size=None if shared else 45, d_model=32,
                               n_heads=4, n_encoder_layers=2, n_decoder_layers=1, d_ff=64,
                               max_seq_len=32, dropout=0.0, position_layout=layout,
                               share_embeddings=shared, final_logits_bias=shared,
                               activation="gelu")
    ours = TransformerForSeq2Seq(config).eval()
    if shared:
        ours.final_logits_bias.normal_()
    ours.save_pretrained(tmp_path, hf=True)
    hf = transformers.MarianMTModel.from_pretrained(tmp_path).eval()
    ids = torch.randint(3, 40, (2, 7))
    dec = torch.randint(3, 40, (2, 5))
    with torch.no_grad():
        expected = ours(ids, None, dec).logits
        torch.testing.assert_close(hf(input_ids=ids, decoder_input_ids=dec).logits, expected,
                                   atol=1e-4, rtol=0)
        back = TransformerForSeq2Seq.from_pretrained(tmp_path)
        torch.testing.assert_close(back(ids, None, dec).logits, expected, atol=1e-4, rtol=0)


def test_base_model_saves_as_marian_model(tmp_path):
    torch.manual_seed(3)
    config = TransformerConfig(vocab_size=40, d_model=32, n_heads=4, n_encoder_layers=1,
                               n_decoder_layers=2, d_ff=64, max_seq_len=32, dropout=0.0,
                               activation="swish", position_layout="halves")
    ours = TransformerModel(config).eval()
    ours.save_pretrained(tmp_path, hf=True)
    hf = transformers.MarianModel.from_pretrained(tmp_path).eval()
    ids, dec = torch.randint(3, 40, (2, 6)), torch.randint(3, 40, (2, 4))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids, decoder_input_ids=dec).last_hidden_state,
                                   ours(ids, None, dec).last_hidden_state, atol=1e-4, rtol=0)


    with pytest.raises(ValueError, match="permuted"):
        TransformerModel(config.replace(position_layout="interleaved")).save_pretrained(
            tmp_path / "x", hf=True)


def test_pre_norm_cannot_be_saved_as_marian(tmp_path):
    model = TransformerForSeq2Seq(TransformerConfig(vocab_size=20, d_model=16, n_heads=2,
                                                    n_encoder_layers=1, n_decoder_layers=1,
                                                    d_ff=32, norm_first=True))
    with pytest.raises(ValueError, match="norm_first"):
        model.save_pretrained(tmp_path, hf=True)
