"""Language-modelling data: split, compact token stream, windows, loss and whole-split
evaluation (checked against the model's own HF-style loss and a per-window reference)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer as Backend
from tokenizers import models, pre_tokenizers
from torch import nn

import formerkit
from formerkit.data.registry import PACKAGE_DATA, sha256_of
from formerkit.data.text import (
    LMWindows,
    encode_stream,
    evaluate_lm,
    lm_loss,
    read_text,
    split_text,
)
from formerkit.data.tokenizers import Tokenizer, train_byte_bpe, train_char_tokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 8


def tiny_gpt(vocab_size: int, max_seq_len: int = 32) -> nn.Module:
    torch.manual_seed(0)
    return formerkit.create_model("gpt", vocab_size=vocab_size, d_model=16, n_heads=2,
                                  n_layers=1, max_seq_len=max_seq_len, dropout=0.0).eval()


def test_split_text_first_and_last_fraction():
    train, val = split_text("abcdefghij" * 10, 0.1)
    assert train == ("abcdefghij" * 10)[:90] and val == "abcdefghij"
    with pytest.raises(ValueError, match="val_fraction"):
        split_text("abc", 1.0)


def test_encode_stream_is_compact_and_equals_encode():
    char = train_char_tokenizer(TEXT)
    ids = encode_stream(char, TEXT)
    assert ids.dtype == torch.uint16 and ids.dim() == 1
    assert ids.long().tolist() == char.encode(TEXT)  # the lookup-table path
    bpe = train_byte_bpe(TEXT, 300)
    ids = encode_stream(bpe, TEXT + "😀")
    assert ids.dtype == torch.uint16 and ids.long().tolist() == bpe.encode(TEXT + "😀")
    # unknown characters: the tokenizer's clear error, or its <unk> id
    with pytest.raises(ValueError, match="'é'"):
        encode_stream(char, "Speaké")
    with_unk = train_char_tokenizer(TEXT, unk_token="<unk>")
    assert encode_stream(with_unk, "Speaké").long().tolist() == with_unk.encode("Speaké")


def test_encode_stream_int32_for_large_vocabularies():
    vocab = {f"w{i}": i for i in range(70_000)}
    backend = Backend(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    ids = encode_stream(Tokenizer(backend), "w1 w69999 w5")
    assert ids.dtype == torch.int32 and ids.tolist() == [1, 69_999, 5]


def test_windows_index_the_stream():
    tokens = torch.arange(20, dtype=torch.int32).to(torch.uint16)
    data = LMWindows(tokens, context=8)
    assert len(data) == 12
    item = data[3]
    assert item["input_ids"].dtype == torch.long
    assert item["input_ids"].tolist() == list(range(3, 11))
    assert item["targets"].tolist() == list(range(4, 12))
    last = data[len(data) - 1]
    assert last["targets"][-1].item() == 19
    batch = data.__getitems__([0, 11, 5])
    for got, i in zip(batch, [0, 11, 5]):
        assert torch.equal(got["input_ids"], data[i]["input_ids"])
        assert torch.equal(got["targets"], data[i]["targets"])
    with pytest.raises(ValueError, match="context=20"):
        LMWindows(tokens, context=20)


def test_lm_loss_equals_the_models_shifted_label_loss():
    tok = train_char_tokenizer(TEXT)
    data = LMWindows(encode_stream(tok, TEXT), context=16)
    model = tiny_gpt(tok.vocab_size)
    batch = torch.utils.data.default_collate(data.__getitems__([0, 7, 30]))
    ours = lm_loss(model, batch)
    # HF convention: labels = the window of T + 1 tokens, shifted inside the model
    window = torch.cat([batch["input_ids"], batch["targets"][:, -1:]], dim=1)  # (B, T + 1)
    reference = model(input_ids=window, labels=window).loss
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("context,batch_size", [(16, 3), (7, 64)])
def test_evaluate_covers_the_whole_split(context, batch_size):
    tok = train_char_tokenizer(TEXT)
    tokens = encode_stream(tok, TEXT[:203])  # 202 predictions: a shorter last window
    model = tiny_gpt(tok.vocab_size)
    got = evaluate_lm(model, tokens, context, batch_size=batch_size)
    ids = tokens.long()
    total, count = 0.0, 0
    for start in range(0, ids.numel() - 1, context):  # reference: one window at a time
        x = ids[start:start + context + 1]
        logits = model(input_ids=x[None, :-1]).logits[0]
        total += F.cross_entropy(logits, x[1:], reduction="sum").item()
        count += x.numel() - 1
    assert count == ids.numel() - 1
    assert got["loss"] == pytest.approx(total / count, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(got["loss"]), rel=1e-6)
    assert not model.training


def test_evaluate_uniform_model_scores_log_vocab():
    class Uniform(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.zeros(()))

        def forward(self, input_ids):
            return formerkit.models.base.ModelOutput(
                logits=self.scale * torch.ones(*input_ids.shape, 50))

    model = Uniform().train()
    got = evaluate_lm(model, torch.randint(0, 50, (101,)), 8)
    assert got["loss"] == pytest.approx(math.log(50), rel=1e-6)
    assert model.training  # mode restored


def test_shipped_tinyshakespeare_and_paths(tmp_path, monkeypatch):
    shipped = PACKAGE_DATA / "tinyshakespeare" / "input.txt"
    assert sha256_of(shipped) == \
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert (PACKAGE_DATA / "tinyshakespeare" / "README.md").is_file()
    monkeypatch.delenv("FORMERKIT_DATA_DIR", raising=False)
    text = read_text("tinyshakespeare")
    assert len(text) == 1_115_394 and len(set(text)) == 65
    file = tmp_path / "mine.txt"
    file.write_text("héllo\n", encoding="utf-8")
    assert read_text(path=file) == "héllo\n"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_text(path=tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="data.path"):
        read_text()
