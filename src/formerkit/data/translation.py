"""Parallel text for sequence-to-sequence training (Vaswani et al. 2017, sec. 5.1: a shared
subword vocabulary, batches of similar-length pairs capped by token count).

Multi30k (Elliott et al. 2016) is read from ``$FORMERKIT_DATA_DIR/multi30k`` through the dataset
registry; a synthetic copy / reverse task over letters gives a seconds-long end-to-end check.
Sentences are tokenised once into one flat integer tensor with offsets; batches are formed by
index, and padded only when collated.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterable, Sequence

import torch

from formerkit.data.registry import dataset_file
from formerkit.data.tokenizers import Tokenizer

SYNTHETIC = ("copy", "reverse")
MULTI30K_SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}


def read_multi30k(split: str, lang: str, *, download: bool = False) -> list[str]:
    """Sentences of one Multi30k side: split ``train``, ``val`` or ``test``
    (test_2016_flickr), lang ``en`` or ``de``."""
    if split not in MULTI30K_SPLITS:
        raise ValueError(f"split must be one of {list(MULTI30K_SPLITS)}, got {split!r}")
    if lang not in ("en", "de"):
        raise ValueError(f"Multi30k language must be 'en' or 'de', got {lang!r}")
    path = dataset_file("multi30k", f"{MULTI30K_SPLITS[split]}.{lang}.gz", download=download)
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def synthetic_pairs(n: int, *, mode: str = "copy", n_symbols: int = 10, min_len: int = 3,
                    max_len: int = 10, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` random letter sequences ("c a f") and their copies or reversals."""
    if mode not in SYNTHETIC:
        raise ValueError(f"synthetic mode must be one of {SYNTHETIC}, got {mode!r}")
    if not 1 <= n_symbols <= 26:
        raise ValueError(f"n_symbols must be in 1..26, got {n_symbols}")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    rng = random.Random(seed)
    letters = [chr(ord("a") + i) for i in range(n_symbols)]
    sources, targets = [], []
    for _ in range(n):
        seq = [rng.choice(letters) for _ in range(rng.randint(min_len, max_len))]
        sources.append(" ".join(seq))
        targets.append(" ".join(seq if mode == "copy" else seq[::-1]))
    return sources, targets


class ParallelDataset:
    """Token ids of sentence pairs, stored flat: item i is ``{"src": (S,), "tgt": (T,)}``.

    Args:
        tokenizer: encodes both sides (appending eos, as ``train_bpe``'s post-processor does).
        sources, targets: parallel sentences.
        max_len: drop pairs with a side longer than this many tokens (``None``: keep all).
    """

    def __init__(self, tokenizer: Tokenizer, sources: Sequence[str], targets: Sequence[str], *,
                 max_len: int | None = None) -> None:
        if len(sources) != len(targets):
            raise ValueError(f"sources ({len(sources)}) and targets ({len(targets)}) differ "
                             "in length")
        src = [e.ids for e in tokenizer.backend.encode_batch(list(sources))]
        tgt = [e.ids for e in tokenizer.backend.encode_batch(list(targets))]
        keep = [i for i in range(len(src))
                if max_len is None or max(len(src[i]), len(tgt[i])) <= max_len]
        self.sources = [sources[i] for i in keep]
        self.targets = [targets[i] for i in keep]
        self.src_ids, self.src_offsets = _flatten([src[i] for i in keep])
        self.tgt_ids, self.tgt_offsets = _flatten([tgt[i] for i in keep])

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def src_lengths(self) -> torch.Tensor:
        return self.src_offsets[1:] - self.src_offsets[:-1]

    @property
    def tgt_lengths(self) -> torch.Tensor:
        return self.tgt_offsets[1:] - self.tgt_offsets[:-1]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s0, s1 = int(self.src_offsets[i]), int(self.src_offsets[i + 1])
        t0, t1 = int(self.tgt_offsets[i]), int(self.tgt_offsets[i + 1])
        return {"src": self.src_ids[s0:s1].long(), "tgt": self.tgt_ids[t0:t1].long()}


def _flatten(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    offsets = torch.zeros(len(seqs) + 1, dtype=torch.long)
    offsets[1:] = lengths.cumsum(0)
    flat = [t for s in seqs for t in s]
    dtype = torch.int16 if (max(flat, default=0) < 2 ** 15) else torch.int32
    return torch.tensor(flat, dtype=dtype), offsets


def pad_batch(seqs: Sequence[torch.Tensor], pad_value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D sequences -> (ids (B, T), attention_mask (B, T) with 1 = token)."""
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_value, dtype=torch.long)
    mask = torch.zeros(len(seqs), length, dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1
    return ids, mask


def collate_pairs(items: list[dict[str, torch.Tensor]], pad_token_id: int
                  ) -> dict[str, torch.Tensor]:
    """Items -> ``input_ids``/``attention_mask`` (B, S) and ``labels`` (B, T), -100 = padding.
    The model builds ``decoder_input_ids`` by shifting ``labels`` right."""
    input_ids, attention_mask = pad_batch([item["src"] for item in items], pad_token_id)
    labels, label_mask = pad_batch([item["tgt"] for item in items], pad_token_id)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "labels": labels.masked_fill(label_mask == 0, -100)}


def token_batches(src_lengths: torch.Tensor, tgt_lengths: torch.Tensor, max_tokens: int, *,
                  seed: int = 0, epoch: int = 0, shuffle: bool = True) -> list[list[int]]:
    """Group pairs of similar length into batches of at most ``max_tokens`` padded tokens
    (batch size x the longer side's longest sentence), in shuffled order.

    Pairs are sorted by (longer side, shorter side) after a seeded random tie-break, cut
    greedily, and the batch order is shuffled per ``epoch``; every pair is in exactly one batch.
    """
    n = len(src_lengths)
    longest = torch.maximum(src_lengths, tgt_lengths).tolist()
    shortest = torch.minimum(src_lengths, tgt_lengths).tolist()
    rng = random.Random(seed * 1_000_003 + epoch)
    noise = [rng.random() for _ in range(n)] if shuffle else [0.0] * n
    order = sorted(range(n), key=lambda i: (longest[i], shortest[i], noise[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        new_width = max(width, longest[i])
        if current and new_width * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, new_width = [], longest[i]
        current.append(i)
        width = new_width
    if current:
        batches.append(current)
    if shuffle:
        rng.shuffle(batches)
    return batches


def chunks(indices: Iterable[int], size: int) -> list[list[int]]:
    """Consecutive groups of ``size`` indices (the last may be smaller)."""
    indices = list(indices)
    return [indices[i:i + size] for i in range(0, len(indices), size)]
