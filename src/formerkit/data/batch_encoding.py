"""HuggingFace-style calls on a ``Tokenizer``: ``tok("text")``, ``tok(texts, padding=True,
return_tensors="pt")`` returning a ``BatchEncoding``, and ``batch_decode``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

PADDING_SIDES = ("right", "left")


class BatchEncoding(dict):
    """A dict of ``input_ids``, ``attention_mask`` (and ``token_type_ids`` for tokenizers with
    segments), readable as attributes (``enc.input_ids``) and movable with ``.to(device)``,
    so ``model(**tok(texts, return_tensors="pt"))`` works as with transformers."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no {name!r}; it holds {list(self)}") \
                from None

    def to(self, device: str | torch.device) -> BatchEncoding:
        """Move every tensor to ``device`` (in place, returns self)."""
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device)
        return self


class CallableTokenizerMixin:
    """``__call__`` and ``batch_decode`` on top of ``encode_batch`` and ``decode``.

    ``padding_side`` (``"right"``, or ``"left"`` for batched generation with decoder-only
    models) applies to ``__call__``, as ``tokenizer.padding_side`` does in transformers.
    """

    padding_side: str = "right"

    def __call__(self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None,
                 *, padding: bool | str = False, truncation: bool | str = False,
                 max_length: int | None = None, return_tensors: str | None = None,
                 add_special_tokens: bool = True, return_token_type_ids: bool | None = None,
                 return_attention_mask: bool = True) -> BatchEncoding:
        """Encode one text (lists of ids) or a batch (lists of lists), as transformers does.

        Args:
            text: a string or a list of strings.
            text_pair: second segments (``token_type_ids`` 1), same shape as ``text``.
            padding: ``False``, ``True``/``"longest"`` or ``"max_length"``.
            truncation: ``False``, ``True``/``"longest_first"``, ``"only_first"``,
                ``"only_second"`` (needs ``max_length``).
            max_length: token limit for truncation and ``padding="max_length"``.
            return_tensors: ``None`` (Python lists) or ``"pt"`` (``torch.long`` tensors; a
                single text gives a batch of one). ``"np"`` and ``"tf"`` are not supported.
            add_special_tokens: add ``[CLS] ... [SEP]`` / ``<s> ... </s>`` as trained.
            return_token_type_ids: default: only for tokenizers with a ``[SEP]`` role (BERT).
            return_attention_mask: include ``attention_mask``.

        Returns:
            A ``BatchEncoding``.
        """
        single = isinstance(text, str)
        if not single and not isinstance(text, (list, tuple)):
            raise TypeError(f"text must be a string or a list of strings, got "
                            f"{type(text).__name__}")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got "
                             f"{self.padding_side!r}")
        if single and text_pair is not None and not isinstance(text_pair, str):
            raise TypeError("text is one string, so text_pair must be one string too")
        texts = [text] if single else list(text)
        pairs = None if text_pair is None else [text_pair] if single else list(text_pair)
        if return_tensors == "pt" and padding is False and len(texts) > 1:
            lengths = {len(self.encode(t, p, add_special_tokens=add_special_tokens))
                       for t, p in zip(texts, pairs or [None] * len(texts))}
            if len(lengths) > 1 and not truncation:
                raise ValueError("texts of different lengths make ragged rows: pass "
                                 "padding=True to return tensors")
            padding = True
        out = self.encode_batch(texts, pairs, max_length=max_length,
                                truncation=truncation if truncation else False,
                                padding=padding, return_tensors=False,
                                add_special_tokens=add_special_tokens)
        if self.padding_side == "left" and padding:
            out = _to_left_padding(out, self._pad_id())
        if return_token_type_ids is None:
            return_token_type_ids = getattr(self, "sep_token_id", None) is not None
        if not return_token_type_ids:
            out.pop("token_type_ids")
        if not return_attention_mask:
            out.pop("attention_mask")
        if return_tensors == "pt":
            return BatchEncoding({k: torch.tensor(v, dtype=torch.long) for k, v in out.items()})
        return BatchEncoding({k: v[0] if single else v for k, v in out.items()})

    def batch_decode(self, sequences: torch.Tensor | Iterable[Iterable[int]], *,
                     skip_special_tokens: bool = True) -> list[str]:
        """Texts of a (B, T) tensor or a list of id lists (``decode`` of each row)."""
        if isinstance(sequences, torch.Tensor):
            if sequences.dim() != 2:
                raise ValueError(f"batch_decode takes (B, T) ids, got shape "
                                 f"{tuple(sequences.shape)}")
            sequences = sequences.tolist()
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in sequences]

    def _pad_id(self) -> int:
        return next((i for i in (self.pad_token_id, self.eos_token_id) if i is not None), 0)


def _to_left_padding(out: dict[str, list[list[int]]], pad_id: int) -> dict[str, list[list[int]]]:
    """Move each row's right padding to its left (the mask says where the tokens are)."""
    result: dict[str, list[list[int]]] = {k: [] for k in out}
    for row, mask in enumerate(out["attention_mask"]):
        n = sum(mask)
        pad = len(mask) - n
        for key, rows in out.items():
            fill = {"input_ids": pad_id, "attention_mask": 0}.get(key, 0)
            result[key].append([fill] * pad + rows[row][:n])
    return result
