"""Encoder-decoder Transformer: config, forward, loss, masks, cached decoding, beams, saving."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import formerkit
from formerkit.models.registry import build_config
from formerkit.models.transformer import (
    TransformerConfig,
    TransformerForSeq2Seq,
    TransformerModel,
    shift_tokens_right,
)


def tiny(**overrides) -> TransformerConfig:
    values = dict(vocab_size=30, d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2,
                  d_ff=64, max_seq_len=40, dropout=0.0)
    values.update(overrides)
    return TransformerConfig(**values)


def model_of(**overrides) -> TransformerForSeq2Seq:
    torch.manual_seed(0)
    return TransformerForSeq2Seq(tiny(**overrides)).eval()


def test_presets_follow_the_paper():
    base = build_config("transformer", "base")
    big = build_config("transformer", "big")
    assert (base.d_model, base.n_heads, base.d_ff, base.n_encoder_layers) == (512, 8, 2048, 6)
    assert (big.d_model, big.n_heads, big.d_ff, big.dropout) == (1024, 16, 4096, 0.3)
    assert base.label_smoothing == 0.1 and base.scale_embedding and not base.norm_first
    assert "transformer" in formerkit.list_models()
    model = formerkit.create_model("transformer", "tiny", vocab_size=50)
    assert isinstance(model, TransformerForSeq2Seq)


@pytest.mark.parametrize("overrides,field", [
    (dict(d_model=30, n_heads=4), "d_model"),
    (dict(tgt_vocab_size=31), "share_embeddings"),
    (dict(activation="tanh"), "activation"),
    (dict(position_layout="rotary"), "position_layout"),
    (dict(pad_token_id=30), "pad_token_id"),
    (dict(label_smoothing=1.0), "label_smoothing"),
])
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny(**overrides)


def test_embeddings_scaled_and_positions_added():
    model = model_of(n_encoder_layers=1)
    ids = torch.tensor([[5, 6, 7]])
    x = model.model._embed(model.model.src_embed, ids)
    table = model.model.positions.table
    expected = model.model.src_embed.weight[ids] * math.sqrt(32) + table[:3]
    torch.testing.assert_close(x, expected)
    # The paper's layout interleaves sin (even features) and cos (odd features).
    torch.testing.assert_close(table[1, 0:2], torch.tensor([math.sin(1.0), math.cos(1.0)]))


def test_label_smoothed_loss_matches_formula():
    model = model_of(label_smoothing=0.1)
    ids = torch.randint(3, 30, (2, 6))
    labels = torch.randint(3, 30, (2, 5))
    labels[1, 3:] = -100
    out = model(ids, labels=labels)
    log_probs = F.log_softmax(out.logits, dim=-1)
    keep = labels != -100
    nll = -log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0][keep]
    smooth = -log_probs.mean(-1)[keep]
    torch.testing.assert_close(out.loss, (0.9 * nll + 0.1 * smooth).mean())
    # decoder inputs are the labels shifted right after the start token
    shifted = shift_tokens_right(labels, 0, 1)
    assert shifted[:, 0].tolist() == [1, 1] and shifted[1, 4] == 0
    torch.testing.assert_close(model(ids, decoder_input_ids=shifted).logits, out.logits)


@pytest.mark.parametrize("norm_first", [False, True])
def test_padding_does_not_change_results(norm_first):
    model = model_of(norm_first=norm_first)
    src = torch.randint(3, 30, (1, 5))
    padded = torch.cat([src, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 5 + [0] * 3])
    dec = torch.randint(3, 30, (1, 4))
    alone = model(src, None, dec).logits
    batched = model(padded, mask, dec).logits
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("overrides", [{}, dict(norm_first=True, position_layout="halves"),
                                       dict(share_embeddings=False, tgt_vocab_size=23,
                                            tie_embeddings=False, final_logits_bias=True)])
def test_cached_decoding_equals_full_forward(overrides):
    model = model_of(**overrides)
    src = torch.randint(3, 23, (3, 7))
    mask = torch.ones_like(src)
    mask[0, 5:] = 0
    tgt = torch.randint(3, 23, (3, 6))
    full = model(src, mask, tgt).logits  # (B, T, V), no cache
    _, state = model.start_decoding(src, mask, expand=1, max_new_tokens=6)
    with torch.no_grad():
        steps = [model.decoding_logits(state, tgt[:, t:t + 1]) for t in range(tgt.shape[1])]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=0)
    # Feeding a prefix at once, then one token, gives the same logits too.
    _, state = model.start_decoding(src, mask, expand=1, max_new_tokens=6)
    with torch.no_grad():
        model.decoding_logits(state, tgt[:, :4])
        last = model.decoding_logits(state, tgt[:, 4:5])
    torch.testing.assert_close(last, full[:, 4], atol=1e-5, rtol=0)


def test_greedy_generate_is_argmax_of_full_forward():
    model = model_of()
    src = torch.randint(3, 30, (2, 6))
    out = model.generate(src, max_new_tokens=7, eos_token_id=[])
    assert out.shape == (2, 8) and bool((out[:, 0] == model.config.decoder_start_token_id).all())
    with torch.no_grad():
        logits = model(src, decoder_input_ids=out[:, :-1]).logits
    assert logits.argmax(-1).tolist() == out[:, 1:].tolist()


def test_beam_search_batched_equals_one_by_one():
    model = model_of()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # sharper distributions: beams diverge from greedy
    src = torch.randint(3, 30, (3, 6))
    mask = torch.ones_like(src)
    src[1, 4:], mask[1, 4:] = 0, 0
    batched = model.generate(src, mask, max_new_tokens=6, num_beams=3)
    for row in range(3):
        length = int(mask[row].sum())
        single = model.generate(src[row:row + 1, :length], max_new_tokens=6, num_beams=3)
        got = batched[row, :single.shape[1]]
        assert got.tolist() == single[0].tolist()
        assert bool((batched[row, single.shape[1]:] == model.config.pad_token_id).all())
    greedy = model.generate(src, mask, max_new_tokens=6, num_beams=1)
    assert model.generate(src, mask, max_new_tokens=6, num_beams=1).tolist() == greedy.tolist()


def test_generate_rejects_too_many_tokens():
    model = model_of(max_seq_len=8)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.randint(3, 30, (1, 4)), max_new_tokens=9)


def test_tied_embeddings_and_gradients():
    model = model_of()
    model.train()
    assert model.lm_head.weight is model.model.tgt_embed.weight is model.model.src_embed.weight
    out = model(torch.randint(3, 30, (2, 5)), labels=torch.randint(3, 30, (2, 4)))
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    untied = model_of(share_embeddings=False, tie_embeddings=False)
    names = {n for n, _ in untied.named_parameters()}
    assert {"model.src_embed.weight", "model.tgt_embed.weight", "lm_head.weight"} <= names


def test_save_and_load_round_trip(tmp_path):
    model = model_of(final_logits_bias=True, position_layout="halves")
    model.final_logits_bias.normal_()
    model.save_pretrained(tmp_path)
    loaded = formerkit.from_pretrained(tmp_path)
    assert isinstance(loaded, TransformerForSeq2Seq) and loaded.config == model.config
    src, dec = torch.randint(3, 30, (2, 5)), torch.randint(3, 30, (2, 4))
    torch.testing.assert_close(loaded(src, decoder_input_ids=dec).logits,
                               model(src, decoder_input_ids=dec).logits)
    encoder_only = TransformerModel(model.config)
    encoder_only.load_state_dict({k[len("model."):]: v for k, v in model.state_dict().items()
                                  if k.startswith("model.")})
    hidden = encoder_only(src, None, dec).last_hidden_state
    torch.testing.assert_close(model.logits(hidden), model(src, decoder_input_ids=dec).logits)


def test_attentions_are_returned():
    model = model_of()
    out = model(torch.randint(3, 30, (2, 5)), decoder_input_ids=torch.randint(3, 30, (2, 4)),
                output_attentions=True)
    assert out.encoder_attentions[0].shape == (2, 4, 5, 5)
    assert out.attentions[0].shape == (2, 4, 4, 4)
    assert out.cross_attentions[1].shape == (2, 4, 4, 5)
    torch.testing.assert_close(out.cross_attentions[0].sum(-1), torch.ones(2, 4, 4))


def test_gathered_target_step_equals_the_modules_bit_for_bit():
    """TargetStep (embedding, DecodingPlan, output layer and final_logits_bias gathered once)
    gives exactly the logits of the modules' decode() at every position."""
    torch.manual_seed(2)
    model = TransformerForSeq2Seq(TransformerConfig(
        vocab_size=40, d_model=32, n_heads=4, n_encoder_layers=1, n_decoder_layers=2, d_ff=48,
        dropout=0.0, max_seq_len=32, final_logits_bias=True, scale_embedding=True,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_()
    src, tokens = torch.randint(3, 40, (3, 6)), torch.randint(3, 40, (3, 5))
    mask = torch.ones_like(src)
    mask[2, 4:] = 0
    with torch.no_grad():
        start, stepped = model.start_decoding(src, mask, expand=1, max_new_tokens=6)
        _, by_modules = model.start_decoding(src, mask, expand=1, max_new_tokens=6)
        by_modules.extras["step"] = None
        inputs = torch.cat([start, tokens], 1)
        for t in range(inputs.shape[1]):
            column = inputs[:, t:t + 1]
            assert torch.equal(model.decoding_logits(stepped, column),
                               model.decoding_logits(by_modules, column)), t


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_takes_the_gathered_decoder_step_with_the_same_tokens(norm_first, num_beams):
    """The plan's one-token step gives the tokens (and logits) of the modules' decode()."""
    torch.manual_seed(0)
    model = TransformerForSeq2Seq(TransformerConfig(
        vocab_size=40, d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=48,
        dropout=0.0, max_seq_len=32, norm_first=norm_first, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, decoder_start_token_id=1)).eval()
    src = torch.randint(3, 40, (2, 7))
    mask = torch.ones_like(src)
    mask[1, 5:] = 0
    _, state = model.start_decoding(src, mask, expand=1, max_new_tokens=6)
    assert state.extras["step"] is not None
    with torch.no_grad():
        planned = model.generate(src, mask, max_new_tokens=12, num_beams=num_beams)
        model.model.decoder.layers[0].register_forward_hook(lambda *args: None)
        _, state = model.start_decoding(src, mask, expand=1, max_new_tokens=6)
        assert state.extras["step"] is None
        by_modules = model.generate(src, mask, max_new_tokens=12, num_beams=num_beams)
    assert torch.equal(planned, by_modules)
