"""Language-modelling data: a token stream cut into context windows (as in GPT, Radford et al.
2018/2019, and nanoGPT's character-level Shakespeare), and its evaluation over a whole split.

The text is tokenised once into a compact 1-D tensor (``uint16`` when the vocabulary fits);
training samples are windows cut from it by indexing, never per-token Python work.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from formerkit.data.registry import dataset_file
from formerkit.data.tokenizers import Tokenizer

Batch = dict[str, torch.Tensor]


def read_text(name: str | None = None, path: str | Path | None = None, *,
              download: bool = False) -> str:
    """The text of a named dataset (``tinyshakespeare`` -> ``input.txt``) or of a file."""
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"text file {file} not found (data.path)")
    elif name:
        file = dataset_file(name, "input.txt", download=download)
    else:
        raise ValueError("give a dataset name (data.dataset) or a text file (data.path)")
    text = file.read_text(encoding="utf-8")
    if not text:
        raise ValueError(f"text file {file} is empty")
    return text


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """First ``1 - val_fraction`` of the characters for training, the rest for validation."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    cut = int(len(text) * (1.0 - val_fraction))
    return text[:cut], text[cut:]


def encode_stream(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    """Token ids of ``text`` as one 1-D tensor, ``uint16`` if the vocabulary fits, else int32.

    A character-level tokenizer is applied by a code-point lookup table (the same ids as
    ``tokenizer.encode``, ~50x faster on a megabyte of text).
    """
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int32
    ids = _encode_chars(tokenizer, text) if tokenizer.is_char_level else None
    if ids is None:
        ids = np.asarray(tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)
    return torch.from_numpy(ids.astype(dtype))


def _encode_chars(tokenizer: Tokenizer, text: str) -> np.ndarray | None:
    vocab = {t: i for t, i in tokenizer.get_vocab().items() if len(t) == 1}
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    if points.size == 0:
        return np.zeros(0, dtype=np.int64)
    table = np.full(int(points.max()) + 1, -1, dtype=np.int64)
    for char, i in vocab.items():
        if ord(char) < table.size:
            table[ord(char)] = i
    ids = table[points]
    # Unknown characters: let the tokenizer map them to <unk> or raise its clear error.
    return None if (ids < 0).any() else ids


class LMWindows(torch.utils.data.Dataset):
    """Every window of ``context`` tokens of a stream, with the next tokens as targets.

    Item ``i`` is ``{"input_ids": tokens[i : i + T], "targets": tokens[i + 1 : i + T + 1]}``
    (both (T,) ``long``), so each window scores T next-token predictions. ``targets`` are
    already shifted: use ``lm_loss``, not the model's own (HF-style, unshifted) ``labels``.

    Args:
        tokens: (N,) token ids (any integer dtype; kept as given, e.g. ``uint16``).
        context: window length T, at most the model's ``max_seq_len``.
    """

    def __init__(self, tokens: torch.Tensor, context: int) -> None:
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
        if context < 1 or tokens.numel() < context + 1:
            raise ValueError(f"context={context} needs at least {context + 1} tokens, "
                             f"got {tokens.numel()}")
        self.tokens = tokens
        self.context = context

    def __len__(self) -> int:
        return self.tokens.numel() - self.context

    def __getitem__(self, i: int) -> Batch:
        window = self.tokens[i:i + self.context + 1].long()
        return {"input_ids": window[:-1], "targets": window[1:]}

    def __getitems__(self, indices: list[int]) -> list[Batch]:
        # One gather for the whole batch instead of one slice per item.
        starts = torch.as_tensor(indices, dtype=torch.long)
        offsets = torch.arange(self.context + 1)
        windows = self.tokens[starts[:, None] + offsets].long()  # (B, T + 1)
        return [{"input_ids": w[:-1], "targets": w[1:]} for w in windows]


def lm_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean next-token cross-entropy of a batch of ``LMWindows`` items (nats per token)."""
    logits = model(input_ids=batch["input_ids"]).logits  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten())


@torch.no_grad()
def evaluate_lm(model: nn.Module, tokens: torch.Tensor, context: int, *,
                batch_size: int = 32) -> dict[str, float]:
    """Mean cross-entropy over a whole token stream, in non-overlapping windows of ``context``.

    Every token after the first is predicted exactly once, from the tokens before it in its
    window (the last window may be shorter), so the figure covers the whole split.

    Args:
        model: returns ``.logits`` (B, T, V) for ``input_ids`` (B, T).
        tokens: (N,) token ids of the split.
        context: window length, at most the model's ``max_seq_len``.
        batch_size: windows per forward pass.

    Returns:
        ``{"loss": nats per token, "perplexity": exp(loss)}`` over the N - 1 predictions.
    """
    n = tokens.numel() - 1
    if n < 1:
        raise ValueError(f"cannot evaluate a stream of {tokens.numel()} tokens: need at least 2")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, full = 0.0, n // context
    ids = tokens[: full * context + 1].long()
    try:
        for start in range(0, full, batch_size):
            stop = min(start + batch_size, full)
            chunk = ids[start * context: stop * context + 1].to(device)
            x = chunk[:-1].view(stop - start, context)  # (B, T)
            y = chunk[1:].view(stop - start, context)  # (B, T)
            total += _summed_ce(model, x, y)
        if n > full * context:  # the shorter last window
            tail = tokens[full * context:].long().to(device)
            total += _summed_ce(model, tail[None, :-1], tail[None, 1:])
    finally:
        model.train(was_training)
    loss = total / n
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def _summed_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    logits = model(input_ids=x).logits  # (B, T, V)
    return float(F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum"))
