"""BERT pre-training data (Devlin et al. 2019, sec. 3.1 and appendix A.1): the masked-LM
collator (15% of tokens; 80% [MASK], 10% random, 10% unchanged; optional whole-word masking)
and next-sentence pairs built as in Google's ``create_pretraining_data.py``.

Corpus format, as in the original: one sentence per line, blank lines between documents.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch


class MLMCollator:
    """Pads examples into a batch and masks tokens for the masked-LM objective.

    Each token that is neither special nor padding is selected with probability
    ``mlm_probability``; a selected token becomes ``[MASK]`` with probability ``mask_prob``, a
    random non-special token with probability ``random_prob`` and stays unchanged otherwise.
    ``labels`` hold the original id at selected positions and -100 elsewhere. With
    ``whole_word=True`` the selection is made per word (a word is a token plus the WordPiece
    continuations ``##...`` that follow it) and applies to all of its tokens.

    Args:
        vocab_size: V.
        mask_token_id, pad_token_id: ids of ``[MASK]`` and ``[PAD]``.
        special_token_ids: ids never selected and never drawn as random replacements.
        mlm_probability, mask_prob, random_prob: the three rates (0.15, 0.8, 0.1 in BERT).
        whole_word: select whole words.
        continuation_ids: ids of word-continuation tokens (needed for ``whole_word``).
        generator: torch generator for reproducible masking.
    """

    def __init__(self, *, vocab_size: int, mask_token_id: int, pad_token_id: int,
                 special_token_ids: Sequence[int] = (), mlm_probability: float = 0.15,
                 mask_prob: float = 0.8, random_prob: float = 0.1, whole_word: bool = False,
                 continuation_ids: Sequence[int] | None = None,
                 generator: torch.Generator | None = None) -> None:
        for name, value in (("mlm_probability", mlm_probability), ("mask_prob", mask_prob),
                            ("random_prob", random_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if mask_prob + random_prob > 1.0:
            raise ValueError(f"mask_prob + random_prob must be <= 1, got {mask_prob} + "
                             f"{random_prob}")
        if whole_word and continuation_ids is None:
            raise ValueError("whole_word=True needs continuation_ids (the '##' tokens)")
        self.vocab_size, self.mask_token_id, self.pad_token_id = (vocab_size, mask_token_id,
                                                                  pad_token_id)
        self.mlm_probability, self.mask_prob, self.random_prob = (mlm_probability, mask_prob,
                                                                  random_prob)
        self.whole_word, self.generator = whole_word, generator
        special = set(special_token_ids) | {mask_token_id, pad_token_id}
        self.is_special = torch.zeros(vocab_size, dtype=torch.bool)
        self.is_special[list(special)] = True
        self.replacements = (~self.is_special).nonzero().squeeze(1)  # ids a random draw may take
        self.is_continuation = torch.zeros(vocab_size, dtype=torch.bool)
        if continuation_ids:
            self.is_continuation[list(continuation_ids)] = True

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> MLMCollator:
        """Ids of ``[MASK]``, ``[PAD]``, every special token and ``##`` continuations from a
        ``formerkit.data.tokenizers.Tokenizer``."""
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs [MASK] and [PAD] tokens for masked LM")
        vocab = tokenizer.get_vocab()
        special = [i for i in (tokenizer.pad_token_id, tokenizer.unk_token_id,
                               tokenizer.cls_token_id, tokenizer.sep_token_id,
                               tokenizer.mask_token_id, tokenizer.bos_token_id,
                               tokenizer.eos_token_id) if i is not None]
        special += [i for token, i in vocab.items() if token.startswith("[") and
                    token.endswith("]") and token[1:-1].isupper()]
        continuation = [i for token, i in vocab.items() if token.startswith("##")]
        return cls(vocab_size=tokenizer.vocab_size, mask_token_id=tokenizer.mask_token_id,
                   pad_token_id=tokenizer.pad_token_id, special_token_ids=special,
                   continuation_ids=continuation, **kwargs)

    def _rand(self, shape: torch.Size) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator)

    def mask_tokens(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask a (B, T) batch. Returns (masked input_ids, labels), both (B, T)."""
        candidates = ~self.is_special[input_ids]  # (B, T)
        draws = self._rand(input_ids.shape)
        if self.whole_word:
            # A word starts at a candidate that is not a continuation, or that follows a
            # non-candidate; every token uses the draw of its word's first token.
            previous = torch.nn.functional.pad(candidates[:, :-1], (1, 0), value=False)
            starts = candidates & (~self.is_continuation[input_ids] | ~previous)
            index = torch.arange(input_ids.shape[1]).expand_as(input_ids)
            start_of_word = torch.where(starts, index, torch.zeros_like(index)).cummax(1).values
            draws = draws.gather(1, start_of_word)
        selected = candidates & (draws < self.mlm_probability)
        labels = input_ids.masked_fill(~selected, -100)
        action = self._rand(input_ids.shape)
        to_mask = selected & (action < self.mask_prob)
        to_random = selected & (action >= self.mask_prob) & (
            action < self.mask_prob + self.random_prob)
        pick = torch.randint(len(self.replacements), input_ids.shape, generator=self.generator)
        masked = input_ids.masked_fill(to_mask, self.mask_token_id)
        masked = torch.where(to_random, self.replacements[pick], masked)
        return masked, labels

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad ``input_ids`` (and ``token_type_ids``) to the longest example, add
        ``attention_mask``, mask, and stack any ``next_sentence_label``."""
        batch = pad_examples(examples, self.pad_token_id)
        batch["input_ids"], batch["labels"] = self.mask_tokens(batch["input_ids"])
        return batch


def pad_examples(examples: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad variable-length fields to the longest example: ``input_ids`` with
    ``pad_token_id``, ``labels`` with -100, others (``token_type_ids``) with 0; add
    ``attention_mask``; stack scalar fields (``next_sentence_label``, ``labels`` of sentence
    tasks, answer positions) as (B,)."""
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    length = max(len(e["input_ids"]) for e in examples)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        mask[row, :len(example["input_ids"])] = 1
    batch = {"input_ids": None, "attention_mask": mask}
    for key, first in examples[0].items():
        if isinstance(first, (list, tuple)):
            fill = pad_token_id if key == "input_ids" else -100 if key == "labels" else 0
            tensor = torch.full((len(examples), length), fill, dtype=torch.long)
            for row, example in enumerate(examples):
                tensor[row, :len(example[key])] = torch.as_tensor(example[key])
            batch[key] = tensor
        else:
            batch[key] = torch.as_tensor([e[key] for e in examples])
    batch.setdefault("token_type_ids", torch.zeros_like(mask))
    return batch


def read_documents(text: str) -> list[list[str]]:
    """Split a corpus into documents (blank-line separated) of sentences (one per line)."""
    documents, current = [], []
    for line in text.splitlines():
        line = line.strip()
        if line:
            current.append(line)
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    return documents


def build_nsp_examples(documents: Sequence[Sequence[Sequence[int]]], *, max_length: int,
                       cls_token_id: int, sep_token_id: int, short_seq_prob: float = 0.1,
                       seed: int = 0) -> list[dict[str, Any]]:
    """Sentence-pair examples for next-sentence prediction, as BERT's
    ``create_instances_from_document``.

    Consecutive sentences of a document are gathered until they reach a target length
    (``max_length - 3``, or a random shorter one with probability ``short_seq_prob``) and split
    at a random sentence boundary into segment A and B. With probability 0.5 B is replaced by
    sentences from a random other document and the unused sentences are put back. The pair is
    truncated to fit, one token at a time from the longer segment, randomly from its front or
    back. Unlike the original, which always draws a random B for a single-sentence chunk (about
    55% random pairs overall), a single sentence takes its successor as the true B, and a lone
    last sentence of a document is dropped, so exactly half the pairs are random in
    expectation.

    Args:
        documents: documents of sentences of token ids (no special tokens).
        max_length: length of ``[CLS] A [SEP] B [SEP]`` at most.

    Returns:
        dicts with ``input_ids``, ``token_type_ids`` (0 for [CLS] A [SEP], 1 for B [SEP]) and
        ``next_sentence_label`` (0 = B follows A, 1 = B is random).
    """
    if max_length < 5:
        raise ValueError(f"max_length must be at least 5, got {max_length}")
    documents = [doc for doc in documents if any(len(s) for s in doc)]
    if len(documents) < 2:
        raise ValueError(f"next-sentence pairs need at least 2 documents, got {len(documents)}")
    rng = random.Random(seed)
    budget = max_length - 3
    examples = []
    for doc_index, document in enumerate(documents):
        target = rng.randint(2, budget) if rng.random() < short_seq_prob else budget
        chunk: list[Sequence[int]] = []
        chunk_length, i = 0, 0
        while i < len(document):
            chunk.append(document[i])
            chunk_length += len(document[i])
            if i == len(document) - 1 or chunk_length >= target:
                is_random = int(rng.random() < 0.5)
                if len(chunk) == 1 and not is_random:
                    if i == len(document) - 1:  # a lone last sentence has no next one
                        break
                    i += 1  # take the next sentence as B
                    chunk.append(document[i])
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
                if is_random:
                    other = rng.randrange(len(documents) - 1)
                    other += other >= doc_index  # any document but this one
                    random_doc = documents[other]
                    tokens_b: list[int] = []
                    for sentence in random_doc[rng.randrange(len(random_doc)):]:
                        tokens_b.extend(sentence)
                        if len(tokens_b) >= target - len(tokens_a):
                            break
                    i -= len(chunk) - a_end  # the unused sentences start the next chunk
                else:
                    tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
                _truncate_pair(tokens_a, tokens_b, budget, rng)
                if tokens_a and tokens_b:
                    examples.append({
                        "input_ids": [cls_token_id, *tokens_a, sep_token_id, *tokens_b,
                                      sep_token_id],
                        "token_type_ids": [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1),
                        "next_sentence_label": is_random,
                    })
                chunk, chunk_length = [], 0
            i += 1
    return examples


def _truncate_pair(a: list[int], b: list[int], budget: int, rng: random.Random) -> None:
    while len(a) + len(b) > budget:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()
