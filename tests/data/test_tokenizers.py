"""Tokenizers: round trips, special tokens, truncation and padding, save/load, and equality with
``transformers``' fast tokenizers built from the same files."""

from __future__ import annotations

import json

import pytest
import torch

from formerkit.data.tokenizers import (
    Tokenizer,
    load_tokenizer,
    load_tokenizer_if_present,
    train_bpe,
    train_byte_bpe,
    train_char_tokenizer,
    train_wordpiece,
)

CORPUS = [
    "First Citizen: Before we proceed any further, hear me speak.",
    "All: Speak, speak. You are all resolved rather to die than to famish?",
    "The quick brown fox jumps over the lazy dog; Zwölf Boxkämpfer jagen Viktor.",
    "Unaffable, unbelievable, unhappiness, happiness, happily, helpfully.",
    "Numbers 12345 and 3.14159, e-mail: a@b.c -- dashes... and \"quotes\"!",
] * 20
UNICODE = ["héllo wörld", "naïve café", "日本語のテキスト", "emoji 😀🎉 ok",
           "tabs\tand\nnewlines  ", "e\u0301 combining", ""]


@pytest.fixture(scope="module")
def byte_bpe() -> Tokenizer:
    return train_byte_bpe(CORPUS, 400)


@pytest.fixture(scope="module")
def wordpiece() -> Tokenizer:
    return train_wordpiece(CORPUS, 300)


# ---- character level ----------------------------------------------------------------------
def test_char_tokenizer_sorted_ids_and_round_trip():
    text = "".join(CORPUS + UNICODE)
    tok = train_char_tokenizer(text)
    chars = sorted(set(text))
    assert tok.vocab_size == len(chars)
    assert [tok.id_to_token(i) for i in range(len(chars))] == chars
    for sample in UNICODE + CORPUS[:5]:
        ids = tok.encode(sample)
        assert ids == [chars.index(c) for c in sample]
        assert tok.decode(ids) == sample
    assert tok.pad_token_id is None and tok.eos_token_id is None and tok.is_char_level


def test_char_tokenizer_unknown_characters():
    tok = train_char_tokenizer("abc \n")
    with pytest.raises(ValueError, match=r"'é' \(U\+00E9\)"):
        tok.encode("abé")
    with_unk = train_char_tokenizer("abc \n", unk_token="<unk>")
    assert with_unk.unk_token_id == 5 and with_unk.vocab_size == 6
    ids = with_unk.encode("abé c")
    assert ids == [2, 3, 5, 1, 4]  # "\n" " " a b c sorted, then <unk>
    assert with_unk.decode(ids) == "ab c"
    assert with_unk.decode(ids, skip_special_tokens=False) == "ab<unk> c"
    with pytest.raises(ValueError, match="unk_token"):
        train_char_tokenizer("a<unk>", unk_token="a")
    with pytest.raises(ValueError, match="empty"):
        train_char_tokenizer("")


# ---- byte-level BPE -----------------------------------------------------------------------
def test_byte_bpe_round_trips_any_unicode(byte_bpe):
    assert byte_bpe.vocab_size == 400
    for sample in UNICODE + CORPUS[:5]:
        assert byte_bpe.decode(byte_bpe.encode(sample)) == sample
    eot = byte_bpe.token_to_id("<|endoftext|>")
    assert byte_bpe.bos_token_id == byte_bpe.eos_token_id == eot and byte_bpe.pad_token_id is None
    # merges were learned: a frequent word is shorter than its bytes
    assert len(byte_bpe.encode(" speak")) < len(b" speak")
    # the special token is one id, never split, and skipped on decode
    ids = byte_bpe.encode("speak<|endoftext|>")
    assert ids[-1] == eot and byte_bpe.decode(ids) == "speak"


def test_gpt2_files_load_like_transformers(byte_bpe, tmp_path):
    transformers = pytest.importorskip("transformers")
    byte_bpe.backend.model.save(str(tmp_path))  # vocab.json + merges.txt, GPT-2's layout
    assert {p.name for p in tmp_path.iterdir()} == {"vocab.json", "merges.txt"}
    ours = load_tokenizer(tmp_path)
    ref = transformers.GPT2TokenizerFast.from_pretrained(str(tmp_path))
    for sample in UNICODE + CORPUS[:5] + ["speak<|endoftext|> again"]:
        assert ours.encode(sample) == ref(sample)["input_ids"], sample
        ids = ours.encode(sample)
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)
    assert ours.eos_token_id == ref.eos_token_id and ours.bos_token_id == ref.bos_token_id


# ---- WordPiece ----------------------------------------------------------------------------
def test_wordpiece_specials_and_pair_encoding(wordpiece):
    assert [wordpiece.pad_token_id, wordpiece.unk_token_id, wordpiece.cls_token_id,
            wordpiece.sep_token_id, wordpiece.mask_token_id] == [0, 1, 2, 3, 4]
    a, b = "Speak, speak.", "hear me"
    ids_a = wordpiece.encode(a, add_special_tokens=False)
    ids_b = wordpiece.encode(b, add_special_tokens=False)
    assert wordpiece.encode(a, b) == [2, *ids_a, 3, *ids_b, 3]
    batch = wordpiece.encode_batch([a], [b])
    assert batch["token_type_ids"][0].tolist() == [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)
    assert wordpiece.decode(wordpiece.encode(a, b)) == "speak, speak. hear me"
    assert wordpiece.decode(wordpiece.encode("Xylophone")) != ""  # unknown pieces -> [UNK]
    assert wordpiece.unk_token_id in wordpiece.encode("§")


@pytest.mark.parametrize("lowercase", [True, False])
def test_bert_vocab_txt_loads_like_transformers(wordpiece, tmp_path, lowercase):
    transformers = pytest.importorskip("transformers")
    vocab = wordpiece.get_vocab()
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in sorted(vocab, key=vocab.get)))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lowercase}))
    ours = load_tokenizer(tmp_path)
    ref = transformers.BertTokenizerFast.from_pretrained(str(tmp_path))
    pairs = [("Speak, speak.", "You are ALL resolved"), ("Zwölf Boxkämpfer", "naïve café 日本"),
             ("unhappiness [MASK] here", "x")]
    for a, b in pairs:
        assert ours.encode(a) == ref(a)["input_ids"]
        assert ours.encode(a, b) == ref(a, b)["input_ids"]
    ours_batch = ours.encode_batch([a for a, _ in pairs], [b for _, b in pairs])
    ref_batch = ref([a for a, _ in pairs], [b for _, b in pairs], padding=True,
                    return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(ours_batch[key], ref_batch[key]), key


@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
def test_truncation_strategies_match_transformers(wordpiece, tmp_path, strategy):
    transformers = pytest.importorskip("transformers")
    wordpiece.save(tmp_path)
    ref = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    long_a = "First Citizen: Before we proceed any further, hear me speak."
    long_b = "You are all resolved rather to die than to famish?"
    texts, pairs = {"longest_first": ([long_a, "All: Speak"], [long_b, "happily"]),
                    "only_first": ([long_a, long_b], ["hear me", "happily"]),
                    "only_second": (["hear me", "All: Speak"], [long_a, long_b])}[strategy]
    ours = wordpiece.encode_batch(texts, pairs, max_length=14, truncation=strategy)
    theirs = ref(texts, pairs, max_length=14, truncation=strategy, padding=True,
                 return_token_type_ids=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(ours[key], theirs[key]), key
    assert ours["input_ids"].shape[1] == 14
    assert wordpiece.backend.truncation is None  # the setting does not leak
    # a segment too short to truncate is an error (as in transformers), not a silent overflow
    with pytest.raises(ValueError, match="too short"):
        wordpiece.encode_batch(["hear me"], [long_b], max_length=8, truncation="only_first")
    assert wordpiece.backend.truncation is None


def test_padding_modes(wordpiece, byte_bpe):
    out = wordpiece.encode_batch(["speak", "speak speak speak"], padding="max_length",
                                 max_length=10, truncation=False)
    assert out["input_ids"].shape == (2, 10) and out["input_ids"].dtype == torch.long
    assert out["attention_mask"][0].tolist() == [1, 1, 1] + [0] * 7
    assert out["input_ids"][0, 3:].eq(wordpiece.pad_token_id).all()
    ragged = wordpiece.encode_batch(["speak", "speak speak"], padding=False,
                                    return_tensors=False)
    assert [len(r) for r in ragged["input_ids"]] == [3, 4]
    # no pad token (GPT-2): pads with eos, masked out
    gpt = byte_bpe.encode_batch(["a", "a b c"])
    assert gpt["input_ids"][0, -1].item() == byte_bpe.eos_token_id
    assert gpt["attention_mask"][0].tolist() == [1, 0, 0, 0, 0][: gpt["input_ids"].shape[1]]


def test_encode_batch_argument_errors(wordpiece):
    with pytest.raises(ValueError, match="truncation"):
        wordpiece.encode_batch(["a"], truncation="middle")
    with pytest.raises(ValueError, match="max_length"):
        wordpiece.encode_batch(["a"], padding="max_length")
    with pytest.raises(ValueError, match="return_tensors"):
        wordpiece.encode_batch(["a"], padding=False)
    with pytest.raises(ValueError, match="pairs has 1 items"):
        wordpiece.encode_batch(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="texts"):
        wordpiece.encode_batch("a")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        wordpiece.decode([0, 10_000])
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece(CORPUS, 3)


# ---- translation BPE ----------------------------------------------------------------------
def test_translation_bpe_appends_eos():
    tok = train_bpe(CORPUS, 300)
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    ids = tok.encode("hear me speak")
    assert ids[-1] == 2 and 2 not in ids[:-1]
    assert tok.decode(ids) == "hear me speak"
    assert tok.unk_token_id in tok.encode("日")


# ---- saving and loading -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["char", "byte_bpe", "wordpiece", "bpe"])
def test_save_load_round_trip(kind, tmp_path, byte_bpe, wordpiece):
    tok = {"char": lambda: train_char_tokenizer("".join(CORPUS), unk_token="<unk>"),
           "byte_bpe": lambda: byte_bpe, "wordpiece": lambda: wordpiece,
           "bpe": lambda: train_bpe(CORPUS, 300)}[kind]()
    tok.save(tmp_path)
    loaded = load_tokenizer_if_present(tmp_path)
    assert loaded is not None and loaded.vocab_size == tok.vocab_size
    assert loaded.special_tokens == tok.special_tokens
    for sample in CORPUS[:5]:
        assert loaded.encode(sample) == tok.encode(sample)
        assert loaded.decode(loaded.encode(sample)) == tok.decode(tok.encode(sample))


def test_saved_directory_loads_in_transformers(byte_bpe, tmp_path):
    transformers = pytest.importorskip("transformers")
    byte_bpe.save(tmp_path)
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert ref.eos_token_id == byte_bpe.eos_token_id and ref.pad_token_id is None
    assert ref("naïve café 😀")["input_ids"] == byte_bpe.encode("naïve café 😀")


def test_missing_and_bad_files(tmp_path):
    assert load_tokenizer_if_present(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        Tokenizer(train_char_tokenizer("ab").backend, {"eos": "</s>"})


def test_wordpiece_training_is_deterministic_and_matches_huggingface_trainer():
    text = ["the quick brown fox jumps over the lazy dog", "a quick brown dog naps",
            "foxes and dogs are quick and lazy"] * 20
    ours = [train_wordpiece(text, 80) for _ in range(3)]
    assert all(t.backend.get_vocab() == ours[0].backend.get_vocab() for t in ours)
    hf = train_wordpiece(text, 80, trainer="tokenizers")
    ours_set, hf_set = set(ours[0].backend.get_vocab()), set(hf.backend.get_vocab())
    # Same algorithm: the vocabularies differ only where equal-count merges tie (this toy
    # corpus has several; tests/data/test_wordpiece_trainer.py compares on Shakespeare).
    assert len(ours_set) == len(hf_set) == 80
    assert len(ours_set & hf_set) >= 72
    assert ours[0].backend.encode("the lazy fox").tokens == ["[CLS]", "the", "lazy", "fox",
                                                             "[SEP]"]
    assert [ours[0].backend.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                      "[MASK]")] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="trainer"):
        train_wordpiece(text, 80, trainer="sentencepiece")


def test_call_arguments_decide_padding_and_truncation_not_the_saved_file(tmp_path):
    """A tokenizer.json that saved padding to 128 and truncation to 6 (as sentence-transformers
    directories do): padding=True pads to the longest row, as transformers does, and nothing
    is truncated unless max_length says so; the saved settings survive the call."""
    transformers = pytest.importorskip("transformers")
    from formerkit.data.tokenizers import load_tokenizer, train_wordpiece

    tokenizer = train_wordpiece(["the cat sat on the mat and the dog sat too"] * 20, 60)
    tokenizer.backend.enable_padding(length=128, pad_id=tokenizer.pad_token_id,
                                     pad_token="[PAD]")
    tokenizer.backend.enable_truncation(6)
    tokenizer.save(tmp_path)
    ours = load_tokenizer(tmp_path)
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
    texts = ["the cat", "the dog sat on the mat and the cat sat too"]
    got = ours.encode_batch(texts)
    expected = reference(texts, padding=True, return_tensors="pt")
    assert got["input_ids"].shape[1] == expected["input_ids"].shape[1] < 128
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["attention_mask"], expected["attention_mask"])
    assert ours.encode(texts[1]) == reference(texts[1])["input_ids"]  # not cut to 6
    cut = ours.encode_batch(texts, max_length=5)
    assert cut["input_ids"].shape[1] == 5
    assert ours.backend.padding["length"] == 128 and ours.backend.truncation["max_length"] == 6
