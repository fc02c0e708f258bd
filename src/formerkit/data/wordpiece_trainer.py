"""A deterministic WordPiece vocabulary trainer, the BPE-with-``##`` training of HuggingFace's
``WordPieceTrainer`` (Wu et al. 2016 WordPiece, as BERT's vocabularies are built).

``tokenizers``' trainer breaks pair-count ties by symbol ids that it hands out in hash-map
order, so two trainings on the same text can learn different vocabularies
(huggingface/tokenizers#1794) and BERT pre-training is not reproducible for a fixed seed. This
module reproduces the same training steps in pure Python and numbers the symbols in code-point
order, so ties break the same way every time.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["count_words", "learn_wordpiece_vocab"]


def count_words(texts: Iterable[str], normalizer: Any, pre_tokenizer: Any) -> Counter[str]:
    """Count pre-tokenised words as ``tokenizers``' trainers see them.

    Args:
        texts: the training texts (a single ``str`` counts as one text).
        normalizer: a ``tokenizers.normalizers`` object (``normalize_str``), or ``None``.
        pre_tokenizer: a ``tokenizers.pre_tokenizers`` object (``pre_tokenize_str``).

    Returns:
        How many times each word occurs.
    """
    if isinstance(texts, str):
        texts = [texts]
    counts: Counter[str] = Counter()
    for text in texts:
        if normalizer is not None:
            text = normalizer.normalize_str(text)
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(text))
    return counts


def learn_wordpiece_vocab(words: Mapping[str, int], vocab_size: int,
                          special_tokens: Sequence[str], *, prefix: str = "##",
                          strict: bool = True) -> list[str]:
    """The WordPiece vocabulary, in id order, that HuggingFace's WordPieceTrainer learns (BPE
    merges over words split into a first character and prefix-marked continuation characters),
    with ties broken deterministically.

    Merges follow ``tokenizers``' ``BpeTrainer`` step for step, including its lazy count
    updates, and keep merging while a pair occurs at all (its ``min_frequency=0``). Among pairs
    of equal count the one whose ``(left, right)`` ids in the returned list are smallest merges
    first, which is tokenizers' own rule once its continuation symbols, numbered in hash order
    there, are numbered in code-point order. The result does not depend on the order of
    ``words``.

    Args:
        words: word -> count, e.g. from :func:`count_words`; counts are positive ints.
        vocab_size: the size to stop at; at least the special tokens plus the alphabet.
        special_tokens: tokens given the first ids, in this order.
        prefix: the continuation marker (``"##"`` for BERT).
        strict: raise when ``vocab_size`` cannot hold the special tokens and the alphabet;
            with ``False`` return just those, larger than ``vocab_size`` (as ``tokenizers``).

    Returns:
        ``special_tokens``, then every character seen, then every character seen after the
        first position with ``prefix`` (each group in code-point order), then the merged
        symbols in merge order; at most ``vocab_size`` tokens.

    Raises:
        ValueError: naming the argument, when ``words`` is empty or holds a non-positive count,
            or ``vocab_size`` is not an int or is too small for the special tokens and alphabet.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise ValueError(f"vocab_size must be an int, got {vocab_size!r}")
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty str, got {prefix!r}")
    if not words:
        raise ValueError("words must hold at least one word with its count, got an empty mapping")
    bad = [(w, c) for w, c in words.items() if isinstance(c, bool) or not isinstance(c, int)
           or c < 1 or not w]
    if bad:
        raise ValueError(f"words must map non-empty strings to positive int counts, got {bad[0]!r}")

    vocab = list(dict.fromkeys(special_tokens))
    ordered = sorted(words)
    firsts = sorted({c for w in ordered for c in w})
    continuations = sorted({c for w in ordered for c in w[1:]})
    for token in firsts + [prefix + c for c in continuations]:
        if token not in vocab:
            vocab.append(token)
    if vocab_size < len(vocab) and strict:
        raise ValueError(f"vocab_size must be at least {len(vocab)} (the special tokens plus "
                         f"the alphabet of the words), got {vocab_size}")
    ids = {token: i for i, token in enumerate(vocab)}
    symbols = [[ids[w[0]]] + [ids[prefix + c] for c in w[1:]] for w in ordered]
    counts = [words[w] for w in ordered]
    _merge(symbols, counts, vocab, ids, vocab_size, prefix)
    return vocab


def _merge(symbols: list[list[int]], counts: list[int], vocab: list[str], ids: dict[str, int],
           vocab_size: int, prefix: str) -> None:
    """Apply merges to ``symbols`` in place, appending new tokens to ``vocab`` and ``ids``."""
    pair_counts: Counter[tuple[int, int]] = Counter()
    where: dict[tuple[int, int], set[int]] = {}
    for i, word in enumerate(symbols):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += counts[i]
            where.setdefault(pair, set()).add(i)

    # Entries are (-count, pair, tie, word indices). As in tokenizers, an entry covers only the
    # words where its pair was (re)formed when it was pushed, and a stale count is refreshed when
    # popped; ``tie`` keeps entries of one pair and count first-in first-out.
    heap: list[tuple[int, tuple[int, int], int, set[int]]] = []
    tie = 0

    def push_all(updated: dict[tuple[int, int], set[int]]) -> None:
        nonlocal tie
        for pair, pos in updated.items():
            if pair_counts[pair] > 0:
                heapq.heappush(heap, (-pair_counts[pair], pair, tie, pos))
                tie += 1

    push_all(where)
    while len(vocab) < vocab_size and heap:
        neg, pair, _, pos = heapq.heappop(heap)
        count = pair_counts[pair]
        if -neg != count:
            heapq.heappush(heap, (-count, pair, tie, pos))
            tie += 1
            continue
        if count < 1:
            break
        a, b = pair
        left, right = vocab[a], vocab[b]
        token = left + (right[len(prefix):] if right.startswith(prefix) else right)
        new = ids.get(token)
        if new is None:
            new = ids[token] = len(vocab)
            vocab.append(token)
        # The merged pair's own count is left as is, as tokenizers does.
        updated: dict[tuple[int, int], set[int]] = {}
        for i in sorted(pos):
            word, c = symbols[i], counts[i]
            j = 0
            while j < len(word) - 1:
                if word[j] == a and word[j + 1] == b:
                    if j > 0:
                        pair_counts[word[j - 1], a] -= c
                        pair_counts[word[j - 1], new] += c
                        updated.setdefault((word[j - 1], new), set()).add(i)
                    word[j:j + 2] = [new]
                    if j < len(word) - 1:
                        pair_counts[b, word[j + 1]] -= c
                        pair_counts[new, word[j + 1]] += c
                        updated.setdefault((new, word[j + 1]), set()).add(i)
                j += 1
        push_all(updated)
