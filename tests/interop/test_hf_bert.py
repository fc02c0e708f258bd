"""HuggingFace parity for BERT: every head loads a transformers checkpoint and gives equal
outputs and losses; save_pretrained(hf=True) round-trips; tokenizer files load."""

from __future__ import annotations

import pytest
import torch

import formerkit
from formerkit.models import bert as fk

transformers = pytest.importorskip("transformers")

# d_model 36 with 3 heads: head count (and head width 12) not a power of two.
HF_CONFIG = dict(vocab_size=67, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                 intermediate_size=50, max_position_embeddings=24, type_vocab_size=2,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
HEADS = ["BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForNextSentencePrediction",
         "BertForSequenceClassification", "BertForTokenClassification",
         "BertForQuestionAnswering", "BertForMultipleChoice"]
B, T, C = 3, 11, 2


def _inputs(multiple_choice: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shape = (B, C, T) if multiple_choice else (B, T)
    ids = torch.randint(1, 67, shape, generator=g)
    mask = torch.ones(shape, dtype=torch.long)
    mask[..., 1, -4:] = 0 if not multiple_choice else 1
    mask[1, ..., -4:] = 0  # padding in row 1 (every choice)
    mask[2, ..., -1:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    types = torch.zeros(shape, dtype=torch.long)
    types[..., 5:] = 1
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types)


def _labels(name: str, num_labels: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    if name == "BertForPreTraining":
        labels = torch.randint(0, 67, (B, T), generator=g)
        labels[:, ::2] = -100
        return dict(labels=labels, next_sentence_label=torch.tensor([0, 1, 0]))
    if name == "BertForMaskedLM":
        labels = torch.randint(0, 67, (B, T), generator=g)
        labels[:, 1::3] = -100
        return dict(labels=labels)
    if name == "BertForNextSentencePrediction":
        return dict(labels=torch.tensor([1, 0, 1]))
    if name == "BertForSequenceClassification":
        return dict(labels=torch.randint(0, num_labels, (B,), generator=g))
    if name == "BertForTokenClassification":
        labels = torch.randint(0, num_labels, (B, T), generator=g)
        labels[1, -4:] = -100
        return dict(labels=labels)
    if name == "BertForQuestionAnswering":  # one position beyond T: clamped and ignored
        return dict(start_positions=torch.tensor([1, 3, 40]),
                    end_positions=torch.tensor([2, 6, 9]))
    if name == "BertForMultipleChoice":
        return dict(labels=torch.tensor([0, 1, 1]))
    return {}


def _hf_model(name: str, tmp_path, **extra) -> tuple[torch.nn.Module, str]:
    torch.manual_seed(0)
    num_labels = 2 if name == "BertForQuestionAnswering" else 3  # HF's QA head has num_labels
    config = transformers.BertConfig(**HF_CONFIG, num_labels=num_labels, **extra)
    config._attn_implementation = "eager"
    model = getattr(transformers, name)(config).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases
        for param_name, param in model.named_parameters():
            if "LayerNorm" in param_name or param_name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
    directory = tmp_path / name
    model.save_pretrained(directory)
    return model, str(directory)


def _assert_outputs_equal(ours, theirs, atol: float = 1e-4) -> None:
    compared = 0
    for field in ("loss", "logits", "last_hidden_state", "pooler_output", "prediction_logits",
                  "seq_relationship_logits", "start_logits", "end_logits"):
        hf_value = getattr(theirs, field, None)
        if hf_value is None:
            continue
        value = getattr(ours, field)
        assert value is not None, field
        torch.testing.assert_close(value, hf_value, atol=atol, rtol=1e-4, msg=field)
        compared += 1
    assert compared >= 1


@pytest.mark.parametrize("name", HEADS)
def test_every_head_matches_transformers(name, tmp_path):
    hf, directory = _hf_model(name, tmp_path)
    model = getattr(fk, name).from_pretrained(directory)
    assert type(model).__name__ == name
    inputs = _inputs(multiple_choice=name == "BertForMultipleChoice")
    labels = _labels(name)
    with torch.no_grad():
        theirs = hf(**inputs, **labels, output_attentions=True)
        ours = model(**inputs, **labels, output_attentions=True)
    _assert_outputs_equal(ours, theirs)
    if labels:
        assert ours.loss is not None and theirs.loss is not None
    assert len(ours.attentions) == len(theirs.attentions) == 2
    for a, b in zip(ours.attentions, theirs.attentions):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("num_labels,labels", [
    (1, torch.tensor([0.3, -1.2, 2.0])),
    (3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])),
])
def test_sequence_classification_problem_types(num_labels, labels, tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(**HF_CONFIG, num_labels=num_labels)
    hf = transformers.BertForSequenceClassification(config).eval()
    hf.save_pretrained(tmp_path)
    model = formerkit.from_pretrained(tmp_path)
    inputs = _inputs()
    with torch.no_grad():
        _assert_outputs_equal(model(**inputs, labels=labels), hf(**inputs, labels=labels))
    expected = "regression" if num_labels == 1 else "multi_label_classification"
    assert hf.config.problem_type == expected


@pytest.mark.parametrize("name", HEADS)
def test_save_pretrained_hf_round_trip(name, tmp_path):
    config = fk.BertConfig(vocab_size=67, d_model=36, n_heads=3, n_layers=2, d_ff=50,
                           max_seq_len=24, num_labels=3, dropout=0.0, attn_dropout=0.0)
    torch.manual_seed(0)
    model = getattr(fk, name)(config).eval()
    model.save_pretrained(tmp_path / "hf", hf=True)
    hf = getattr(transformers, name).from_pretrained(tmp_path / "hf",
                                                     attn_implementation="eager").eval()
    inputs = _inputs(multiple_choice=name == "BertForMultipleChoice")
    labels = _labels(name)
    with torch.no_grad():
        _assert_outputs_equal(model(**inputs, **labels), hf(**inputs, **labels))
    again = formerkit.from_pretrained(tmp_path / "hf")
    assert type(again) is type(model)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=k)


def test_head_checkpoint_loads_as_bare_encoder(tmp_path):
    hf, directory = _hf_model("BertForPreTraining", tmp_path)
    encoder = fk.BertModel.from_pretrained(directory)
    inputs = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(encoder(**inputs).last_hidden_state,
                                   hf.bert(**inputs).last_hidden_state, atol=1e-4, rtol=1e-4)


def test_unsupported_position_embedding_type(tmp_path):
    _, directory = _hf_model("BertModel", tmp_path, position_embedding_type="relative_key")
    with pytest.raises(ValueError, match="position_embedding_type"):
        fk.BertModel.from_pretrained(directory)


def _vocab() -> list[str]:
    words = ["the", "cat", "sat", "on", "mat", "dog", "##s", "run", "##ning", ".", ","]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words


def test_vocab_txt_tokenizer_loads_with_model(tmp_path):
    _, directory = _hf_model("BertForMaskedLM", tmp_path)
    vocab = _vocab()
    (tmp_path / "BertForMaskedLM" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    model = formerkit.from_pretrained(directory)
    assert model.tokenizer is not None
    hf_tok = transformers.BertTokenizer.from_pretrained(directory)  # reads vocab.txt
    text, pair = "The cats sat on the mat.", "Dogs running, the dog"
    ids = model.tokenizer.encode(text, pair)
    assert ids == hf_tok(text, pair)["input_ids"]
    assert model.tokenizer.unk_token_id not in ids  # every word is in the vocabulary
    batch = model.tokenizer.encode_batch([text], [pair])
    assert batch["token_type_ids"][0].tolist() == hf_tok(text, pair)["token_type_ids"]


def test_tokenizer_json_loads_with_model(tmp_path):
    _, directory = _hf_model("BertForMaskedLM", tmp_path)
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "vocab.txt").write_text("\n".join(_vocab()) + "\n")
    hf_tok = transformers.BertTokenizer.from_pretrained(tmp_path / "vocab")
    hf_tok.save_pretrained(directory)  # writes tokenizer.json (and vocab.txt)
    (tmp_path / "BertForMaskedLM" / "vocab.txt").unlink(missing_ok=True)
    model = fk.BertForMaskedLM.from_pretrained(directory)
    text = "the dog sat on the cats."
    assert model.tokenizer.encode(text) == hf_tok(text)["input_ids"]
    assert model.tokenizer.mask_token_id == hf_tok.mask_token_id
