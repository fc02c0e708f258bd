"""Tokenizers called as transformers' (``tok("x")``, ``tok(texts, padding=True,
return_tensors="pt")``, ``batch_decode``), compared with ``PreTrainedTokenizerFast`` loading
the same tokenizer.json."""

from __future__ import annotations

import pytest
import torch

from formerkit.data.tokenizers import train_byte_bpe, train_wordpiece

transformers = pytest.importorskip("transformers")

TEXT = ("the quick brown fox jumps over the lazy dog. a stitch in time saves nine. "
        "all that glitters is not gold. ") * 20
TEXTS = ["the quick fox", "a stitch in time saves nine", "gold"]


@pytest.fixture(scope="module", params=["wordpiece", "byte_bpe"])
def pair(request, tmp_path_factory):
    """(our tokenizer, transformers' fast tokenizer on the same tokenizer.json)."""
    ours = train_wordpiece(TEXT, 120) if request.param == "wordpiece" else \
        train_byte_bpe(TEXT, 300)
    path = tmp_path_factory.mktemp(request.param)
    ours.save(path)
    roles = {f"{role}_token": token for role, token in ours.special_tokens.items()
             if token is not None and role in ("pad", "unk", "cls", "sep", "mask", "bos", "eos")}
    roles.setdefault("pad_token", ours.special_tokens["eos"])  # GPT-2 style: pad with eos
    # model_input_names as BertTokenizerFast / GPT2TokenizerFast declare them
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"),
                                                  model_input_names=_keys(ours), **roles)
    return ours, theirs


def _keys(ours):
    return ["input_ids", "token_type_ids", "attention_mask"] if ours.sep_token_id is not None \
        else ["input_ids", "attention_mask"]


def test_one_text_gives_lists_as_transformers(pair):
    ours, theirs = pair
    got, expected = ours("the lazy dog"), theirs("the lazy dog")
    assert sorted(got) == sorted(k for k in expected if k in _keys(ours))
    for key in got:
        assert got[key] == expected[key]
    assert got.input_ids == expected["input_ids"]  # attribute access


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_tensors_match_transformers(pair, side):
    ours, theirs = pair
    ours.padding_side = theirs.padding_side = side
    try:
        got = ours(TEXTS, padding=True, return_tensors="pt")
        expected = theirs(TEXTS, padding=True, return_tensors="pt")
    finally:
        ours.padding_side = theirs.padding_side = "right"
    for key in _keys(ours):
        torch.testing.assert_close(got[key], expected[key])
    assert got["input_ids"].dtype == torch.long


def test_pairs_truncation_and_max_length_padding_match_transformers(pair):
    ours, theirs = pair
    kwargs = dict(padding="max_length", truncation=True, max_length=7, return_tensors="pt")
    got = ours(TEXTS, TEXTS[::-1], **kwargs)
    expected = theirs(TEXTS, TEXTS[::-1], **kwargs)
    for key in _keys(ours):
        torch.testing.assert_close(got[key], expected[key])


def test_batch_decode_matches_transformers(pair):
    ours, theirs = pair
    ids = ours(TEXTS, padding=True, return_tensors="pt")["input_ids"]
    assert ours.batch_decode(ids) == theirs.batch_decode(ids, skip_special_tokens=True)
    assert ours.batch_decode(ids.tolist(), skip_special_tokens=False) == \
        theirs.batch_decode(ids.tolist(), skip_special_tokens=False)


def test_call_output_feeds_a_model_and_moves_to_a_device(pair):
    ours, _ = pair
    enc = ours(["a b", "c"], padding=True, return_tensors="pt").to("cpu")
    assert enc.input_ids.shape == enc.attention_mask.shape == (2, enc.input_ids.shape[1])
    with pytest.raises(AttributeError, match="pixel_values"):
        getattr(enc, "pixel_values")  # noqa: B009


def test_call_errors_name_the_problem(pair):
    ours, _ = pair
    with pytest.raises(ValueError, match="padding=True"):
        ours(["a", "a b c d e f"], return_tensors="pt")
    with pytest.raises(ValueError, match="return_tensors"):
        ours("a", return_tensors="np")
    with pytest.raises(TypeError, match="string"):
        ours(3)
    with pytest.raises(ValueError, match="batch_decode"):
        ours.batch_decode(torch.zeros(3, dtype=torch.long))
