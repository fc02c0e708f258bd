"""Reading HuggingFace tokenizer files: BERT ``vocab.txt``, GPT-2 ``vocab.json`` +
``merges.txt`` (Devlin et al., 2019; Radford et al., 2019) and the token roles in
``tokenizer_config.json`` / ``special_tokens_map.json``, built as ``transformers``' fast
tokenizers build them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

ROLES = ("pad", "bos", "eos", "unk", "mask", "cls", "sep")


def bert_backend(file: Path, config: dict[str, Any]) -> Backend:
    """A WordPiece backend from a BERT ``vocab.txt`` (one token per line, id = line number),
    with ``do_lower_case``, ``strip_accents`` and ``tokenize_chinese_chars`` from ``config``
    (the directory's tokenizer_config.json; lower-casing by default, as ``transformers``)."""
    vocab: dict[str, int] = {}
    with open(file, encoding="utf-8") as handle:
        for line in handle:
            vocab.setdefault(line.rstrip("\n"), len(vocab))
    backend = Backend(models.WordPiece(vocab, unk_token=_content(config.get("unk_token"))
                                       or "[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"), lowercase=config.get("do_lower_case", True))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    add_bert_post_processor(backend)
    return backend


def gpt2_backend(vocab_file: Path, merges_file: Path) -> Backend:
    """A byte-level BPE backend from GPT-2's ``vocab.json`` and ``merges.txt``."""
    try:
        bpe = models.BPE.from_file(str(vocab_file), str(merges_file))
    except Exception as err:
        raise ValueError(f"cannot read GPT-2 tokenizer {vocab_file} / {merges_file}: "
                         f"{err}") from None
    backend = Backend(bpe)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    if backend.token_to_id("<|endoftext|>") is not None:
        backend.add_special_tokens(["<|endoftext|>"])
    return backend


def add_bert_post_processor(backend: Backend) -> None:
    """Mark BERT's special tokens and add ``[CLS] A [SEP] B [SEP]`` (segment B: type 1)."""
    specials = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
                if backend.token_to_id(t) is not None]
    backend.add_special_tokens(specials)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise ValueError("a BERT vocabulary needs [CLS] and [SEP] tokens")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])


def read_roles(directory: Path, backend: Backend) -> dict[str, str | None]:
    """Role -> token named in special_tokens_map.json / tokenizer_config.json (the latter
    wins; a token missing from the vocabulary reads as ``None``). Roles absent from both are
    left out, for ``Tokenizer`` to infer from the token names."""
    roles: dict[str, str | None] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        config = read_json(directory / name)
        for role in ROLES:
            if f"{role}_token" in config:
                token = _content(config[f"{role}_token"])
                roles[role] = token if token is None or backend.token_to_id(token) is not None \
                    else None
    return roles


def _content(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def read_json(file: Path) -> dict[str, Any]:
    """A JSON file's object, ``{}`` when the file does not exist."""
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from None
