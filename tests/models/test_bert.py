"""BERT model unit tests: config validation, shapes, losses, tying and save/load."""

from __future__ import annotations

import pytest
import torch

import formerkit
from formerkit.models.bert import (
    BertConfig,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    load_pretrained_encoder,
)

TINY = dict(vocab_size=50, d_model=24, n_heads=3, n_layers=2, d_ff=32, max_seq_len=16)


def _config(**overrides) -> BertConfig:
    return BertConfig(**{**TINY, **overrides})


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="d_model"):
        _config(d_model=25)
    with pytest.raises(ValueError, match="activation"):
        _config(activation="tanh")
    with pytest.raises(ValueError, match="problem_type"):
        _config(problem_type="ranking")
    with pytest.raises(ValueError, match="pad_token_id"):
        _config(pad_token_id=50)


def test_registry_presets():
    assert "bert" in formerkit.list_models()
    model = formerkit.create_model("bert", preset="tiny", vocab_size=100)
    assert isinstance(model, BertModel)
    assert (model.config.d_model, model.config.n_layers) == (128, 2)
    assert model.config.layer_norm_eps == 1e-12 and model.config.activation == "gelu"


def test_shapes_and_padding_invariance():
    torch.manual_seed(0)
    model = BertModel(_config()).eval()
    ids = torch.randint(1, 50, (2, 7))
    out = model(ids, output_attentions=True)
    assert out.last_hidden_state.shape == (2, 7, 24) and out.pooler_output.shape == (2, 24)
    assert out.attentions[0].shape == (2, 3, 7, 7)
    # Appending padding must not change the real tokens' states.
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(2, 7), torch.zeros(2, 3)], dim=1).long()
    again = model(padded, attention_mask=mask).last_hidden_state[:, :7]
    torch.testing.assert_close(again, out.last_hidden_state, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="sequence length"):
        model(torch.ones(1, 17, dtype=torch.long))


def test_mlm_decoder_is_tied_and_loss_ignores_minus_100():
    torch.manual_seed(0)
    model = BertForMaskedLM(_config(dropout=0.0, attn_dropout=0.0))
    assert model.mlm.decoder.weight is model.bert.embeddings.token.weight
    ids = torch.randint(1, 50, (2, 6))
    labels = torch.full_like(ids, -100)
    labels[0, 2] = 7
    out = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[0, 2][None], torch.tensor([7]))
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.bert.embeddings.token.weight.grad is not None


def test_pretraining_loss_sums_given_losses():
    torch.manual_seed(0)
    model = BertForPreTraining(_config()).eval()
    ids = torch.randint(1, 50, (2, 6))
    labels = ids.clone()
    nsp = torch.tensor([0, 1])
    both = model(ids, labels=labels, next_sentence_label=nsp)
    mlm = model(ids, labels=labels).loss
    only_nsp = model(ids, next_sentence_label=nsp).loss
    torch.testing.assert_close(both.loss, mlm + only_nsp)
    assert both.prediction_logits.shape == (2, 6, 50)
    assert both.seq_relationship_logits.shape == (2, 2)


def test_question_answering_clamps_positions():
    torch.manual_seed(0)
    model = BertForQuestionAnswering(_config()).eval()
    ids = torch.randint(1, 50, (2, 6))
    out = model(ids, start_positions=torch.tensor([1, 99]), end_positions=torch.tensor([2, 3]))
    f = torch.nn.functional.cross_entropy
    start = f(out.start_logits[:1], torch.tensor([1]))  # row 2's start is out of range: ignored
    end = f(out.end_logits, torch.tensor([2, 3]))
    torch.testing.assert_close(out.loss, (start + end) / 2)


def test_multiple_choice_and_classification_shapes():
    torch.manual_seed(0)
    choice = BertForMultipleChoice(_config()).eval()
    out = choice(torch.randint(1, 50, (2, 4, 5)), labels=torch.tensor([0, 3]))
    assert out.logits.shape == (2, 4) and out.loss.ndim == 0
    with pytest.raises(ValueError, match="choices"):
        choice(torch.randint(1, 50, (2, 5)))
    tokens = BertForTokenClassification(_config(num_labels=5)).eval()
    assert tokens(torch.randint(1, 50, (2, 5))).logits.shape == (2, 5, 5)
    regression = BertForSequenceClassification(_config(num_labels=1)).eval()
    out = regression(torch.randint(1, 50, (3, 5)), labels=torch.tensor([0.5, 1.0, -1.0]))
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(
        out.logits.squeeze(), torch.tensor([0.5, 1.0, -1.0])))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(_config(num_labels=3)).eval()
    model.save_pretrained(tmp_path)
    loaded = formerkit.from_pretrained(tmp_path)
    assert type(loaded) is BertForSequenceClassification
    ids = torch.randint(1, 50, (2, 5))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    # A pre-training checkpoint initialises a fine-tuning head's encoder.
    pre = BertForPreTraining(_config()).eval()
    pre.save_pretrained(tmp_path / "pre")
    for head in (BertForTokenClassification(_config()), BertForSequenceClassification(_config())):
        load_pretrained_encoder(head, tmp_path / "pre")
        head.eval()
        torch.testing.assert_close(head.bert(ids).last_hidden_state,
                                   pre.bert(ids).last_hidden_state)
    with pytest.raises(ValueError, match="d_model|shape"):
        load_pretrained_encoder(BertForSequenceClassification(_config(d_model=48)),
                                tmp_path / "pre")
