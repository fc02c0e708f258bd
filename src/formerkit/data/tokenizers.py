"""Tokenizers on HuggingFace ``tokenizers``: characters, GPT-2 byte-level BPE (Radford et al.,
2019), BERT WordPiece (Devlin et al., 2019) and a shared translation BPE (Sennrich et al., 2016).

Every tokenizer is a ``Tokenizer`` wrapping one ``tokenizers.Tokenizer`` (the Rust backend), so
it saves as a standard ``tokenizer.json`` that ``transformers.PreTrainedTokenizerFast`` also
reads. Which token plays which role (pad, bos, eos, ...) is written beside it in
``tokenizer_config.json``, as HuggingFace does.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as Backend

from formerkit.data.batch_encoding import CallableTokenizerMixin
from formerkit.data.chat import read_chat_template
from formerkit.data.tokenizer_files import (
    ROLES,
    add_bert_post_processor,
    bert_backend,
    gpt2_backend,
    read_json,
    read_roles,
)
from formerkit.data.wordpiece_trainer import count_words, learn_wordpiece_vocab

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# Role of a special token when no config names it; the order is the preference.
_ROLE_NAMES = {
    "pad": ("[PAD]", "<pad>", "<|pad|>"),
    "bos": ("<s>", "<|endoftext|>", "<bos>"),
    "eos": ("</s>", "<|endoftext|>", "<eos>"),
    "unk": ("[UNK]", "<unk>", "<|endoftext|>"),
    "mask": ("[MASK]", "<mask>"),
    "cls": ("[CLS]",),
    "sep": ("[SEP]",),
}
TRUNCATION = ("longest_first", "only_first", "only_second")


def _role_id(role: str) -> property:
    def get(self: Tokenizer) -> int | None:
        token = self.special_tokens[role]
        return None if token is None else self.backend.token_to_id(token)

    return property(get, doc=f"id of the {role} token, or None")


class Tokenizer(CallableTokenizerMixin):
    """A HuggingFace ``tokenizers.Tokenizer`` with named special tokens and tensor batches;
    callable as a transformers tokenizer (``tok(texts, padding=True, return_tensors="pt")``,
    ``batch_decode``; see ``formerkit.data.batch_encoding``).

    Args:
        backend: the ``tokenizers.Tokenizer`` that does the work.
        special_tokens: role (``pad``, ``bos``, ``eos``, ``unk``, ``mask``, ``cls``, ``sep``)
            -> token string or ``None``; roles left out are inferred from the usual names
            (``[PAD]``, ``<s>``, ``<|endoftext|>``, ...) where the vocabulary has them.

        chat_template: the checkpoint's Jinja chat template (see ``apply_chat_template``).

    Attributes:
        vocab_size: number of ids, added tokens included.
        pad_token_id, bos_token_id, eos_token_id, unk_token_id: the id of each role,
            ``None`` where the vocabulary has no such token.
        mask_token_id, cls_token_id, sep_token_id: the same.
    """

    def __init__(self, backend: Backend, special_tokens: dict[str, str | None] | None = None,
                 chat_template: str | None = None):
        self.backend = backend
        self.chat_template = chat_template
        given = dict(special_tokens or {})
        unknown = set(given) - set(ROLES)
        if unknown:
            raise ValueError(f"special_tokens has unknown roles {sorted(unknown)}; "
                             f"expected some of {ROLES}")
        self.special_tokens: dict[str, str | None] = {}
        for role in ROLES:
            if role in given:
                token = given[role]
                if token is not None and backend.token_to_id(token) is None:
                    raise ValueError(f"special_tokens[{role!r}]={token!r} is not in the "
                                     "vocabulary")
            else:
                token = next((t for t in _ROLE_NAMES[role] if backend.token_to_id(t) is not None),
                             None)
            self.special_tokens[role] = token

    # ---- vocabulary -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    pad_token_id = _role_id("pad")
    bos_token_id = _role_id("bos")
    eos_token_id = _role_id("eos")
    unk_token_id = _role_id("unk")
    mask_token_id = _role_id("mask")
    cls_token_id = _role_id("cls")
    sep_token_id = _role_id("sep")

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(int(i))

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    @property
    def is_char_level(self) -> bool:
        """Whether each character maps to one id (``train_char_tokenizer``)."""
        return isinstance(self.backend.model, models.WordLevel) and \
            isinstance(self.backend.pre_tokenizer, pre_tokenizers.Split) and \
            self.backend.normalizer is None

    # ---- encoding -------------------------------------------------------------------------
    def encode(self, text: str, pair: str | None = None, *,
               add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` (and ``pair``), with the post-processor's special tokens.

        Raises:
            ValueError: for a character-level tokenizer without ``<unk>``, naming the
                characters that are not in the vocabulary.
        """
        _check_text("text", text)
        if pair is not None:
            _check_text("pair", pair)
        try:
            with self._call_settings(None, False):
                return self.backend.encode(text, pair, add_special_tokens=add_special_tokens).ids
        except Exception as err:
            raise self._encode_error(text if pair is None else text + pair, err) from None

    @contextlib.contextmanager
    def _call_settings(self, max_length: int | None, truncation: str | bool) -> Iterator[None]:
        """The call's truncation and no padding, whatever ``tokenizer.json`` saved (a
        sentence-transformers file may pad every row to 128), restored afterwards so the
        setting never leaks into ``save()`` or later calls; as transformers' ``__call__``."""
        backend = self.backend
        truncation_before, padding_before = backend.truncation, backend.padding
        backend.no_padding()
        if truncation and max_length is not None:
            backend.enable_truncation(max_length, strategy=truncation)
        else:
            backend.no_truncation()
        try:
            yield
        finally:
            if truncation_before is None:
                backend.no_truncation()
            else:
                backend.enable_truncation(**truncation_before)
            if padding_before is not None:
                backend.enable_padding(**{k: v for k, v in padding_before.items()
                                          if k != "length" or v is not None})

    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                     max_length: int | None = None, truncation: str | bool = "longest_first",
                     padding: bool | str = True, return_tensors: bool = True,
                     add_special_tokens: bool = True) -> dict[str, Any]:
        """Encode a batch, right padded.

        Args:
            texts: B strings.
            pairs: optional B second segments (``token_type_ids`` 1 for them).
            max_length: truncate to this many tokens, special tokens included (when
                ``truncation`` is not False), and pad to it with ``padding="max_length"``.
            truncation: ``"longest_first"`` (drop from the longer segment one token at a
                time), ``"only_first"``, ``"only_second"``, or ``False``.
            padding: ``True``/``"longest"`` pads to the longest row, ``"max_length"`` to
                ``max_length``, ``False`` leaves rows ragged (needs ``return_tensors=False``).
                Pads with ``pad_token_id``, else ``eos_token_id``, else 0; ``attention_mask``
                is 0 there.
            return_tensors: return (B, T) ``torch.long`` tensors instead of lists.
            add_special_tokens: apply the post-processor (``[CLS] ... [SEP]``, ``... </s>``).

        Returns:
            ``input_ids``, ``attention_mask``, ``token_type_ids``, each (B, T).
        """
        texts = _check_batch("texts", texts)
        if pairs is not None:
            pairs = _check_batch("pairs", pairs)
            if len(pairs) != len(texts):
                raise ValueError(f"pairs has {len(pairs)} items but texts has {len(texts)}")
        if truncation not in (False, True, *TRUNCATION):
            raise ValueError(f"truncation must be one of {TRUNCATION} or False, "
                             f"got {truncation!r}")
        if truncation is True:
            truncation = "longest_first"
        if padding not in (True, False, "longest", "max_length"):
            raise ValueError(f"padding must be True, False, 'longest' or 'max_length', "
                             f"got {padding!r}")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        if max_length is not None and max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        if padding is False and return_tensors:
            raise ValueError("padding=False gives ragged rows: pass return_tensors=False")
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        try:
            with self._call_settings(max_length, truncation):
                encodings = self.backend.encode_batch(inputs,
                                                      add_special_tokens=add_special_tokens)
        except Exception as err:
            raise self._encode_error("".join(texts) + "".join(pairs or []), err) from None
        ids = [e.ids for e in encodings]
        types = [e.type_ids for e in encodings]
        masks = [[1] * len(row) for row in ids]
        if padding:
            width = max_length if padding == "max_length" else max(map(len, ids), default=0)
            width = max(width, max(map(len, ids), default=0))
            pad_id = next((i for i in (self.pad_token_id, self.eos_token_id) if i is not None), 0)
            ids = [row + [pad_id] * (width - len(row)) for row in ids]
            types = [row + [0] * (width - len(row)) for row in types]
            masks = [row + [0] * (width - len(row)) for row in masks]
        out: dict[str, Any] = {"input_ids": ids, "attention_mask": masks, "token_type_ids": types}
        if return_tensors:
            out = {k: torch.tensor(v, dtype=torch.long).reshape(len(v), -1)
                   for k, v in out.items()}
        return out

    def decode(self, ids: Iterable[int] | torch.Tensor, *, skip_special_tokens: bool = True) -> str:
        """Text of a 1-D sequence of ids."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode takes a 1-D sequence of ids, got shape "
                                 f"{tuple(ids.shape)}")
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside the vocabulary of {self.vocab_size}")
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def _encode_error(self, text: str, err: Exception) -> ValueError:
        unknown = sorted({c for c in text if self.backend.token_to_id(c) is None}) \
            if self.is_char_level else []
        if unknown:
            shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in unknown[:10])
            return ValueError(f"characters not in the tokenizer's vocabulary of "
                              f"{self.vocab_size}: {shown}; train the tokenizer on text that "
                              "has them, or pass unk_token= to train_char_tokenizer")
        return ValueError(f"cannot encode text: {err}")

    def apply_chat_template(self, messages: list[dict[str, Any]], *,
                            add_generation_prompt: bool = True, tokenize: bool = False,
                            **variables: Any) -> str | list[int]:
        """Render ``messages`` with the chat template, as ``transformers`` does: the text, or
        with ``tokenize=True`` its ids (no special tokens added: the template writes them).

        Raises:
            ValueError: when the tokenizer has no chat template, or the template fails.
        """
        from formerkit.data.chat import render_chat

        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template (tokenizer_config.json has "
                             "no chat_template and there is no chat_template.jinja)")
        tokens = {f"{role}_token": token for role, token in self.special_tokens.items()
                  if token is not None}
        text = render_chat(self.chat_template, messages,
                           add_generation_prompt=add_generation_prompt, **{**tokens, **variables})
        return self.encode(text, add_special_tokens=False) if tokenize else text

    # ---- saving ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``directory/tokenizer.json`` and the token roles in tokenizer_config.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / TOKENIZER_FILE))
        config = {"tokenizer_class": "PreTrainedTokenizerFast"}
        config.update({f"{role}_token": token for role, token in self.special_tokens.items()})
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Load ``directory/tokenizer.json`` (token roles from tokenizer_config.json)."""
        directory = Path(directory)
        file = directory / TOKENIZER_FILE
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found")
        try:
            backend = Backend.from_file(str(file))
        except Exception as err:
            raise ValueError(f"cannot read tokenizer {file}: {err}") from None
        return cls(backend, read_roles(directory, backend), read_chat_template(directory))

    def __repr__(self) -> str:
        roles = {r: t for r, t in self.special_tokens.items() if t is not None}
        return f"Tokenizer(vocab_size={self.vocab_size}, special_tokens={roles})"


# ---- training -----------------------------------------------------------------------------
def train_char_tokenizer(text: str, *, unk_token: str | None = None) -> Tokenizer:
    """One id per distinct character of ``text``, in sorted order (as nanoGPT's char model).

    Unknown characters raise a ``ValueError`` naming them, unless ``unk_token`` is given: then
    it takes the last id and unknown characters map to it.
    """
    _check_text("text", text)
    chars = sorted(set(text))
    if not chars:
        raise ValueError("text is empty: a character tokenizer needs at least one character")
    vocab = {c: i for i, c in enumerate(chars)}
    if unk_token is not None:
        if unk_token in vocab:
            raise ValueError(f"unk_token={unk_token!r} is a character of the text")
        vocab[unk_token] = len(vocab)
    backend = Backend(models.WordLevel(vocab, unk_token=unk_token))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")
    backend.decoder = decoders.Fuse()
    if unk_token is not None:
        backend.add_special_tokens([unk_token])
    return Tokenizer(backend, {"unk": unk_token})


def train_byte_bpe(texts: str | Iterable[str], vocab_size: int, *,
                   special_tokens: Sequence[str] = ("<|endoftext|>",)) -> Tokenizer:
    """GPT-2 style byte-level BPE: the 256 byte symbols, then merges up to ``vocab_size``.

    Any text encodes (no unknown tokens) and decodes back exactly. The first special token is
    the bos/eos token, as GPT-2's ``<|endoftext|>``.
    """
    _check_vocab_size(vocab_size, 256 + len(special_tokens))
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    backend.train_from_iterator(_as_iter(texts), trainer)
    first = special_tokens[0] if special_tokens else None
    return Tokenizer(backend, {"bos": first, "eos": first, "unk": first, "pad": None})


def train_wordpiece(texts: str | Iterable[str], vocab_size: int, *,
                    lowercase: bool = True, trainer: str = "formerkit") -> Tokenizer:
    """BERT WordPiece: BERT normalisation and pre-tokenisation, ``##`` continuations,
    ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4``, and ``[CLS] A [SEP] B [SEP]`` with
    ``token_type_ids`` 1 for the second segment.

    ``trainer="formerkit"`` (default) learns the vocabulary with
    ``formerkit.data.wordpiece_trainer``: the algorithm of ``tokenizers``' WordPieceTrainer with
    deterministic tie-breaking, so the same text always gives the same vocabulary and ids.
    ``trainer="tokenizers"`` runs HuggingFace's trainer itself, whose ties fall in hash-map
    order (huggingface/tokenizers#1794): runs can differ in a few rare tokens and in ids.
    """
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    _check_vocab_size(vocab_size, len(special) + 1)
    if trainer not in ("formerkit", "tokenizers"):
        raise ValueError(f"trainer must be 'formerkit' or 'tokenizers', got {trainer!r}")
    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if trainer == "formerkit":
        words = count_words(_as_iter(texts), normalizer, pre_tokenizer)
        if not words:
            raise ValueError("train_wordpiece got no text to learn a vocabulary from")
        vocab = learn_wordpiece_vocab(words, vocab_size, special, strict=False)
        backend = Backend(models.WordPiece({token: i for i, token in enumerate(vocab)},
                                           unk_token="[UNK]"))
        backend.add_special_tokens(special)
    else:
        backend = Backend(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.WordPiece(prefix="##")
    if trainer == "tokenizers":
        backend.train_from_iterator(_as_iter(texts), trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=special, show_progress=False))
    add_bert_post_processor(backend)
    return Tokenizer(backend)


def train_bpe(texts: str | Iterable[str], vocab_size: int, *,
              special_tokens: Sequence[str] = ("<pad>", "<s>", "</s>", "<unk>")) -> Tokenizer:
    """A shared source/target subword vocabulary for translation (SentencePiece-style ``▁``
    word boundaries). ``special_tokens`` are pad, bos, eos, unk in that order (ids 0..3); a
    post-processor appends eos to every sequence."""
    if len(special_tokens) != 4:
        raise ValueError(f"special_tokens must be (pad, bos, eos, unk), got {special_tokens!r}")
    _check_vocab_size(vocab_size, len(special_tokens) + 1)
    pad, bos, eos, unk = special_tokens
    backend = Backend(models.BPE(unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  show_progress=False)
    backend.train_from_iterator(_as_iter(texts), trainer)
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B:1 {eos}:1",
        special_tokens=[(eos, backend.token_to_id(eos))])
    return Tokenizer(backend, {"pad": pad, "bos": bos, "eos": eos, "unk": unk})


# ---- loading ------------------------------------------------------------------------------
def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load ``tokenizer.json``, else BERT ``vocab.txt``, else GPT-2 ``vocab.json`` +
    ``merges.txt`` from a directory (as ``transformers``' fast tokenizers build them)."""
    found = load_tokenizer_if_present(directory)
    if found is None:
        raise FileNotFoundError(f"no tokenizer in {directory}: expected {TOKENIZER_FILE}, "
                                "vocab.txt (BERT) or vocab.json + merges.txt (GPT-2)")
    return found


def load_tokenizer_if_present(directory: str | Path) -> Tokenizer | None:
    """Like ``load_tokenizer``, but ``None`` when the directory has no tokenizer files."""
    directory = Path(directory)
    if (directory / TOKENIZER_FILE).is_file():
        return Tokenizer.load(directory)
    config = read_json(directory / TOKENIZER_CONFIG_FILE)
    if (directory / "vocab.txt").is_file():
        backend = bert_backend(directory / "vocab.txt", config)
    elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        backend = gpt2_backend(directory / "vocab.json", directory / "merges.txt")
    else:
        return None
    return Tokenizer(backend, read_roles(directory, backend), read_chat_template(directory))


def _as_iter(texts: str | Iterable[str]) -> Iterable[str]:
    return [texts] if isinstance(texts, str) else texts


def _check_text(name: str, text: Any) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")


def _check_batch(name: str, texts: Any) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a list of str, got {type(texts).__name__}")
    for text in texts:
        _check_text(f"every item of {name}", text)
    return list(texts)


def _check_vocab_size(vocab_size: int, minimum: int) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < minimum:
        raise ValueError(f"vocab_size must be an int >= {minimum}, got {vocab_size!r}")
