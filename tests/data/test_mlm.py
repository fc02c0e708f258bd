"""MLM masking statistics (>= 1M tokens, each rate within 0.5 pp) and NSP pair building."""

from __future__ import annotations

import random

import pytest
import torch

from formerkit.data.mlm import MLMCollator, build_nsp_examples, pad_examples, read_documents

V, PAD, CLS, SEP, MASK = 1000, 0, 2, 3, 4
SPECIAL = (0, 1, 2, 3, 4)


def _collator(**kwargs) -> MLMCollator:
    return MLMCollator(vocab_size=V, mask_token_id=MASK, pad_token_id=PAD,
                       special_token_ids=SPECIAL, generator=torch.Generator().manual_seed(0),
                       **kwargs)


def test_masking_rates_over_a_million_tokens():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, V, (1024, 1100), generator=g)
    ids[:, 0], ids[:, 500] = CLS, SEP
    lengths = torch.randint(900, 1100, (1024,), generator=g)
    ids[torch.arange(1100)[None] >= lengths[:, None]] = PAD
    candidates = ids >= 5
    assert candidates.sum() >= 1_000_000
    masked, labels = _collator().mask_tokens(ids)
    selected = labels != -100
    assert not selected[~candidates].any()  # special tokens and padding are never chosen
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(masked[~selected], ids[~selected])
    n = selected.sum().item()
    rate = n / candidates.sum().item()
    to_mask = (masked == MASK) & selected
    kept = (masked == ids) & selected
    to_random = selected & ~to_mask & ~kept
    assert abs(rate - 0.15) < 0.005
    assert abs(to_mask.sum().item() / n - 0.8) < 0.005
    # A random draw equals the original token with probability 1/995 (counted as kept).
    assert abs(to_random.sum().item() / n - 0.1) < 0.005
    assert abs(kept.sum().item() / n - 0.1) < 0.005
    assert (masked[to_random] >= 5).all()  # random replacements are never special


def test_whole_word_masking_selects_entire_words():
    g = torch.Generator().manual_seed(2)
    continuation = list(range(500, V))  # ids >= 500 play '##' pieces
    collator = _collator(whole_word=True, continuation_ids=continuation)
    ids = torch.randint(5, V, (256, 400), generator=g)
    ids[:, 0] = CLS
    _, labels = collator.mask_tokens(ids)
    selected = (labels != -100)
    starts = ids < 500
    starts[:, 0] = False
    word = torch.cumsum(starts.long(), dim=1)
    rows, words_selected, words_total = 0, 0, 0
    for r in range(ids.shape[0]):
        for w in torch.unique(word[r, 1:]):
            tokens = selected[r, 1:][word[r, 1:] == w]
            assert tokens.all() or not tokens.any()  # all or none of a word's tokens
            words_selected += int(tokens.all())
            words_total += 1
        rows += 1
    assert abs(words_selected / words_total - 0.15) < 0.01


def test_collator_pads_and_stacks_labels():
    collator = _collator()
    batch = collator([{"input_ids": [CLS, 7, 8, SEP], "token_type_ids": [0, 0, 0, 0],
                       "next_sentence_label": 1},
                      {"input_ids": [CLS, 9, SEP], "token_type_ids": [0, 0, 0],
                       "next_sentence_label": 0}])
    assert batch["input_ids"].shape == (2, 4)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["next_sentence_label"].tolist() == [1, 0]
    assert batch["labels"][1, 3] == -100
    with pytest.raises(ValueError, match="mlm_probability"):
        _collator(mlm_probability=1.5)
    with pytest.raises(ValueError, match="empty"):
        pad_examples([], 0)


def _corpus(n_docs: int, seed: int = 0) -> list[list[list[int]]]:
    # token = doc * 100000 + sentence * 100 + position: pairs can be traced to their source.
    rng = random.Random(seed)
    return [[[d * 100000 + s * 100 + k for k in range(rng.randint(3, 12))]
             for s in range(rng.randint(10, 40))] for d in range(n_docs)]


def test_nsp_pairs_are_half_true_next_and_packed():
    examples = build_nsp_examples(_corpus(1500), max_length=64, cls_token_id=-1,
                                  sep_token_id=-2, seed=0)
    assert len(examples) > 5000
    labels = [e["next_sentence_label"] for e in examples]
    assert abs(sum(labels) / len(labels) - 0.5) < 0.02
    lengths = [len(e["input_ids"]) for e in examples]
    assert max(lengths) <= 64
    assert sum(n >= 60 for n in lengths) / len(lengths) > 0.6  # packed to the maximum length
    for e in examples:
        ids = e["input_ids"]
        first_sep = ids.index(-2)
        a, b = ids[1:first_sep], ids[first_sep + 1:-1]
        assert ids[0] == -1 and ids[-1] == -2 and a and b
        assert e["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        doc_a, doc_b = {t // 100000 for t in a}, {t // 100000 for t in b}
        assert len(doc_a) == 1 and len(doc_b) == 1
        if e["next_sentence_label"] == 0:
            assert doc_a == doc_b
            # B continues A in document order (truncation may trim tokens at the seam).
            assert all(x < y for x, y in zip(a + b, (a + b)[1:]))
        else:
            assert doc_a != doc_b


def test_read_documents_and_errors():
    docs = read_documents("First line.\nSecond line.\n\n\nOther doc.\n")
    assert docs == [["First line.", "Second line."], ["Other doc."]]
    with pytest.raises(ValueError, match="2 documents"):
        build_nsp_examples([[[5, 6]]], max_length=16, cls_token_id=2, sep_token_id=3)
