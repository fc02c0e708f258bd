"""Data for BERT fine-tuning (Devlin et al. 2019, sec. 4): sentence classification (GLUE
SST-2 TSV files), token classification (CoNLL-style files) and extractive question answering
(SQuAD-style JSON lines), encoded with a WordPiece ``formerkit.data.tokenizers.Tokenizer``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from formerkit.data.registry import dataset_file


def read_sentence_labels(path: str | Path) -> list[tuple[str, int]]:
    """Read a GLUE-style TSV file with a ``sentence<TAB>label`` header (SST-2 ``train.tsv`` /
    ``dev.tsv``); the trailing space GLUE leaves on sentences is stripped.

    Raises:
        ValueError: naming the file and line when a row is malformed.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise ValueError(f"{path} is empty")
    header = lines[0].split("\t")
    if "sentence" not in header or "label" not in header:
        raise ValueError(f"{path}: expected a header with 'sentence' and 'label' columns, "
                         f"got {header}")
    s_col, l_col = header.index("sentence"), header.index("label")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ValueError(f"{path}:{number}: expected {len(header)} tab-separated fields, "
                             f"got {len(fields)}")
        try:
            label = int(fields[l_col])
        except ValueError:
            raise ValueError(f"{path}:{number}: label {fields[l_col]!r} is not an integer") \
                from None
        rows.append((fields[s_col].strip(), label))
    return rows


def read_sst2(split: str, *, download: bool = False) -> list[tuple[str, int]]:
    """SST-2 ``train`` or ``validation`` (GLUE's ``dev.tsv``) from the data registry."""
    files = {"train": "train.tsv", "validation": "dev.tsv", "val": "dev.tsv", "dev": "dev.tsv"}
    if split not in files:
        raise ValueError(f"SST-2 split must be one of {list(files)}, got {split!r} (GLUE's "
                         "test split has no labels)")
    return read_sentence_labels(dataset_file("sst2", files[split], download=download))


def read_conll(path: str | Path) -> list[tuple[list[str], list[str]]]:
    """Read ``word TAG`` lines (whitespace separated, tag last), blank lines between sentences.
    Returns (words, tags) per sentence."""
    sentences, words, tags = [], [], []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields or line.startswith("-DOCSTART-"):
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        if len(fields) < 2:
            raise ValueError(f"{path}:{number}: expected 'word TAG', got {line!r}")
        words.append(fields[0])
        tags.append(fields[-1])
    if words:
        sentences.append((words, tags))
    return sentences


def encode_token_labels(tokenizer: Any, words: list[str], tags: list[int],
                        max_length: int) -> dict[str, list[int]]:
    """WordPiece-encode pre-split words; each word's first piece gets its tag id and the
    other pieces (and special tokens) -100, as in the BERT paper's NER setup. Truncated to
    ``max_length`` tokens, keeping the final ``[SEP]``."""
    encoding = tokenizer.backend.encode(words, is_pretokenized=True)
    ids, labels, previous = [], [], None
    for token_id, word in zip(encoding.ids, encoding.word_ids):
        ids.append(token_id)
        labels.append(tags[word] if word is not None and word != previous else -100)
        previous = word
    if len(ids) > max_length:
        ids = ids[:max_length - 1] + ids[-1:]
        labels = labels[:max_length - 1] + [-100]
    return {"input_ids": ids, "labels": labels}


def read_qa_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """SQuAD-style JSON lines: ``question``, ``context``, ``answer`` (text) and optionally
    ``answer_start`` (character offset in the context; default: its first occurrence)."""
    examples = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        missing = [k for k in ("question", "context", "answer") if k not in item]
        if missing:
            raise ValueError(f"{path}:{number}: missing field {missing[0]!r}")
        start = item.get("answer_start", item["context"].find(item["answer"]))
        if start < 0 or item["context"][start:start + len(item["answer"])] != item["answer"]:
            raise ValueError(f"{path}:{number}: answer {item['answer']!r} is not in the "
                             "context at answer_start")
        examples.append({**item, "answer_start": start})
    return examples


def encode_qa(tokenizer: Any, question: str, context: str, answer_start: int, answer: str,
              max_length: int) -> dict[str, Any] | None:
    """Encode ``[CLS] question [SEP] context [SEP]`` and find the answer's token span from the
    character offsets. The context is truncated to fit; returns ``None`` when that cuts the
    answer off (such examples are skipped, as the BERT paper's single-window setup would)."""
    encoding = tokenizer.backend.encode(question, context)
    answer_end = answer_start + len(answer)
    start = end = None
    for i, (seq, (lo, hi)) in enumerate(zip(encoding.sequence_ids, encoding.offsets)):
        if seq != 1:
            continue
        if start is None and hi > answer_start:
            start = i
        if lo < answer_end:
            end = i
    ids, types = encoding.ids, encoding.type_ids
    if len(ids) > max_length:
        ids = ids[:max_length - 1] + ids[-1:]  # cut the context, keep the final [SEP]
        types = types[:max_length - 1] + types[-1:]
    if start is None or end is None or end >= len(ids) - 1:
        return None
    return {"input_ids": ids, "token_type_ids": types, "start_positions": start,
            "end_positions": end}
