"""The tokenizer a GGUF file describes, rebuilt with the ``tokenizers`` library as transformers'
GGUF converter builds it: ``tokenizer.ggml.model`` ``gpt2`` (byte-level BPE from the tokens and
merges, split by the file's pre-tokenizer regex) or ``llama`` (SentencePiece-style BPE with byte
fallback, merges from the file or recovered from the token scores).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from formerkit.data.tokenizers import Tokenizer

if TYPE_CHECKING:
    from formerkit.interop.gguf import GGUFFile

TOKENIZER_MODELS = ("gpt2", "llama")
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types
_ROLE_KEYS = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id",
              "pad": "padding_token_id"}

# How ``tokenizer.ggml.pre`` splits text before byte-level BPE (the regexes of the original
# tokenizers, as llama.cpp and transformers list them); other values use GPT-2's split.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                 r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT4O_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                     "midm-2.0", "lfm2", "jina-v5-nano", "dbrx", "smaug-bpe"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"), _QWEN2_SPLIT),
    "tekken": _TEKKEN_SPLIT,
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _GPT4O_SPLIT),
}


def tokenizer_from_gguf(file: GGUFFile) -> Tokenizer | None:
    """The file's tokenizer, or ``None`` when it stores no tokens."""
    meta = file.metadata
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        return None
    kind = meta.get("tokenizer.ggml.model")
    if kind not in TOKENIZER_MODELS:
        raise ValueError(f"{file.path}: GGUF tokenizer model {kind!r} is not supported; "
                         f"supported: {', '.join(TOKENIZER_MODELS)}")
    merges = meta.get("tokenizer.ggml.merges")
    types = meta.get("tokenizer.ggml.token_type") or []
    if kind == "gpt2":
        if not merges:
            raise ValueError(f"{file.path}: a gpt2 (byte-level BPE) GGUF tokenizer needs "
                             "tokenizer.ggml.merges")
        backend = byte_level_backend(tokens, merges, meta.get("tokenizer.ggml.pre"))
    else:
        scores = meta.get("tokenizer.ggml.scores")
        if not merges and not scores:
            raise ValueError(f"{file.path}: a llama (SentencePiece) GGUF tokenizer needs "
                             "tokenizer.ggml.merges or tokenizer.ggml.scores")
        backend = sentencepiece_backend(tokens, merges, scores,
                                        meta.get("tokenizer.ggml.add_space_prefix", True))
    roles = {role: tokens[meta[f"tokenizer.ggml.{key}"]] for role, key in _ROLE_KEYS.items()
             if isinstance(meta.get(f"tokenizer.ggml.{key}"), int)
             and 0 <= meta[f"tokenizer.ggml.{key}"] < len(tokens)}
    _add_special_tokens(backend, tokens, types, roles, byte_level=kind == "gpt2")
    add_bos = meta.get("tokenizer.ggml.add_bos_token", kind == "llama")
    add_eos = meta.get("tokenizer.ggml.add_eos_token", False)
    if add_bos or add_eos:
        backend.post_processor = _template(backend, roles.get("bos") if add_bos else None,
                                           roles.get("eos") if add_eos else None)
    known = {role: token for role, token in roles.items()
             if backend.token_to_id(token) is not None}
    template = meta.get("tokenizer.chat_template")
    return Tokenizer(backend, known, template if isinstance(template, str) else None)


def byte_level_backend(tokens: list[str], merges: list[str], pre: str | None) -> Backend:
    """GPT-2 style byte-level BPE; tokens written outside the byte alphabet are respelled."""
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {token if set(token) <= alphabet else
             "".join(spelling[b] for b in token.encode("utf-8")): i
             for i, token in enumerate(tokens)}
    backend = Backend(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges],
                                 dropout=None, continuing_subword_prefix="",
                                 end_of_word_suffix="", fuse_unk=False))
    split = PRE_TOKENIZER_SPLITS.get(pre or "")
    if split is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return backend


def sentencepiece_backend(tokens: list[str], merges: list[str] | None,
                          scores: list[float] | None, add_space_prefix: bool = True) -> Backend:
    """SentencePiece BPE as Llama's tokenizer.json spells it: ``▁`` for spaces, byte fallback
    (``<0x41>``), merges given or recovered from the scores."""
    vocab = {token: i for i, token in enumerate(tokens)}
    pairs = [tuple(m.split(" ")) for m in merges] if merges else \
        merges_from_scores(vocab, dict(zip(tokens, scores or [])))
    backend = Backend(models.BPE(vocab=vocab, merges=pairs, fuse_unk=True, byte_fallback=True,
                                 dropout=None))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if add_space_prefix else "never", split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix:
        steps.append(decoders.Strip(content=" ", left=1))
    backend.decoder = decoders.Sequence(steps)
    return backend


def merges_from_scores(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """BPE merges a SentencePiece vocabulary implies: every split of a token into two tokens,
    best score first (transformers' ``generate_merges``, so ties fall the same way)."""
    merges = []
    for token, score in scores.items():
        local = [(token[:i], token[i:], score) for i in range(1, len(token))
                 if token[:i] in vocab and token[i:] in vocab]
        merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def _add_special_tokens(backend: Backend, tokens: list[str], types: list[int],
                        roles: dict[str, str], *, byte_level: bool) -> None:
    """Control tokens and role tokens stay whole and are special; user-defined tokens
    (``<think>``) stay whole too. In a byte-level vocabulary a control token spelled outside
    the byte alphabet is a llama.cpp mislabel, left out as transformers does."""
    alphabet = set(bytes_to_unicode().values()) if byte_level else None
    control = [t for t, kind in zip(tokens, types) if kind == _CONTROL
               and (alphabet is None or set(t) <= alphabet)]
    special = list(dict.fromkeys([*roles.values(), *control]))
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    vocab = backend.get_vocab()
    user = [t for t, kind in zip(tokens, types) if kind == _USER_DEFINED and t in vocab]
    if user:
        backend.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])


def _template(backend: Backend, bos: str | None, eos: str | None) -> Any:
    """``bos $A eos`` (and ``bos $B eos`` with type 1 for a pair), as transformers adds them."""
    def part(type_id: int) -> str:
        items = [f"{bos}:{type_id}"] if bos else []
        items.append(f"${'A' if type_id == 0 else 'B'}:{type_id}")
        return " ".join(items + ([f"{eos}:{type_id}"] if eos else []))

    specials = [(t, backend.token_to_id(t)) for t in dict.fromkeys(x for x in (bos, eos) if x)]
    return processors.TemplateProcessing(single=part(0), pair=f"{part(0)} {part(1)}",
                                         special_tokens=specials)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (Radford et al., 2019)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))
