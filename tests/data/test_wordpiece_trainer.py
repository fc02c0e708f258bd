"""The deterministic WordPiece trainer: hand-checked merges, tie-breaking, determinism, input
checks, and agreement with ``tokenizers``' WordPieceTrainer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from formerkit.data.wordpiece_trainer import count_words, learn_wordpiece_vocab

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def hf_vocab(texts: list[str], vocab_size: int, special: list[str], *, bert: bool) -> list[str]:
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    if bert:
        backend.normalizer = normalizers.BertNormalizer(lowercase=True)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    else:
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special,
                                        show_progress=False)
    backend.train_from_iterator(texts, trainer)
    vocab = backend.get_vocab()
    return sorted(vocab, key=vocab.get)


def shakespeare_lines(n: int) -> list[str]:
    root = Path(os.environ.get("FORMERKIT_DATA_DIR", "/nonexistent"))
    path = root / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path.read_text(encoding="utf-8").splitlines()[:n]


def test_hand_checked_merges() -> None:
    # pairs: (a,##b)=5, then a tie at 3 among (a,##a), (##a,##a), (##a,##b) that goes to the
    # smallest ids; "aa" leaves (##a,##a) at 0, then "##ab" and finally "aaab".
    vocab = learn_wordpiece_vocab({"aaab": 3, "ab": 5}, 100, ["[UNK]"])
    assert vocab == ["[UNK]", "a", "b", "##a", "##b", "ab", "aa", "##ab", "aaab"]
    assert learn_wordpiece_vocab({"aaab": 3, "ab": 5}, 7, ["[UNK]"]) == vocab[:7]


def test_tie_goes_to_smallest_ids() -> None:
    # (q,##x), (z,##b) and (##x,##y) all occur twice: pairs starting with a plain character
    # (smaller ids) win, q before z; then "zb" beats (qx,##y) whose "qx" is newer.
    vocab = learn_wordpiece_vocab({"zb": 2, "qxy": 2}, 100, ["[UNK]"])
    assert vocab == ["[UNK]", "b", "q", "x", "y", "z", "##b", "##x", "##y", "qx", "zb", "qxy"]


@pytest.mark.parametrize("words", [{"aaab": 3, "ab": 5}, {"zb": 2, "qxy": 2}])
def test_small_examples_equal_huggingface(words: dict[str, int]) -> None:
    texts = [word for word, count in words.items() for _ in range(count)]
    ours = learn_wordpiece_vocab(words, 100, ["[UNK]"])
    theirs = hf_vocab(texts, 100, ["[UNK]"], bert=False)
    assert set(ours) == set(theirs)
    # Same ids except the "##" characters, which tokenizers numbers in hash-map order.
    assert [t for t in ours if len(t) != 3 or not t.startswith("##")] == \
        [t for t in theirs if len(t) != 3 or not t.startswith("##")]


def test_deterministic_and_order_independent() -> None:
    lines = shakespeare_lines(500)
    words = count_words(lines, normalizers.BertNormalizer(lowercase=True),
                        pre_tokenizers.BertPreTokenizer())
    first = learn_wordpiece_vocab(words, 300, SPECIAL)
    assert learn_wordpiece_vocab(words, 300, SPECIAL) == first
    assert learn_wordpiece_vocab(dict(reversed(list(words.items()))), 300, SPECIAL) == first
    assert len(first) == len(set(first)) == 300


def test_agrees_with_huggingface_wordpiece_trainer() -> None:
    lines = shakespeare_lines(2000)
    words = count_words(lines, normalizers.BertNormalizer(lowercase=True),
                        pre_tokenizers.BertPreTokenizer())
    ours = learn_wordpiece_vocab(words, 400, SPECIAL)
    theirs = hf_vocab(lines, 400, SPECIAL, bert=True)
    assert len(ours) == len(theirs) == 400
    assert ours[:len(SPECIAL)] == SPECIAL
    # Only ties between "##" pairs, ordered by hash in tokenizers, can differ (100% observed).
    assert len(set(ours) & set(theirs)) / len(theirs) >= 0.97


def test_count_words_matches_pipeline() -> None:
    counts = count_words(["Hello, hello world!", "World"], normalizers.BertNormalizer(),
                         pre_tokenizers.BertPreTokenizer())
    assert counts == {"hello": 2, ",": 1, "world": 2, "!": 1}


@pytest.mark.parametrize(("words", "vocab_size", "name"), [
    ({"abc": 1}, 7, "vocab_size"),  # 5 specials + a b c ##b ##c = 10 > 7
    ({"abc": 1}, 10.0, "vocab_size"),
    ({"abc": 1}, True, "vocab_size"),
    ({}, 100, "words"),
    ({"abc": 0}, 100, "words"),
])
def test_invalid_arguments(words: dict[str, int], vocab_size: int, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        learn_wordpiece_vocab(words, vocab_size, SPECIAL)
