"""Tiny seeded models and tokenizers for the explorer tests (Python and browser)."""

from __future__ import annotations

import functools
import inspect

import numpy as np
import torch

from formerkit.data.tokenizers import train_wordpiece
from formerkit.models.registry import get_model_entry, list_models

CORPUS = ["the cat sat on the mat", "the dog ran in the park", "a bird sang on a tree",
          "the cat ran to the dog", "a dog sat in the sun"]
TINY_TEXT = dict(d_model=32, n_heads=4, n_layers=2, n_encoder_layers=2, n_decoder_layers=2,
                 d_ff=48, max_seq_len=24, dropout=0.0, pad_token_id=0)


@functools.lru_cache(maxsize=1)
def tokenizer():
    """One WordPiece vocabulary for every tiny text model (trained once per session)."""
    return train_wordpiece(CORPUS, vocab_size=60)


def text_models() -> list[str]:
    """Every registered model with a vocabulary and attention weights (so the Llama family
    joins when it lands; test-only toy models without ``output_attentions`` do not)."""
    return [name for name in list_models()
            if "vocab_size" in get_model_entry(name).config_class.field_names()
            and "output_attentions" in
            inspect.signature(get_model_entry(name).model_class.forward).parameters]


def tiny_text_model(name: str, cls=None, **overrides):
    """A seeded tiny model of registry ``name`` (or its head ``cls``) with a WordPiece
    tokenizer attached."""
    tok = tokenizer()
    entry = get_model_entry(name)
    fields = entry.config_class.field_names()
    values = {**TINY_TEXT, "vocab_size": tok.vocab_size, "tgt_vocab_size": tok.vocab_size,
              "decoder_start_token_id": tok.cls_token_id, "bos_token_id": tok.cls_token_id,
              "eos_token_id": tok.sep_token_id, **overrides}
    torch.manual_seed(0)
    config = entry.config_class.from_dict({k: v for k, v in values.items() if k in fields})
    model = (cls or entry.model_class)(config).eval()
    model.tokenizer = tok
    return model


def tiny_series_model(name: str, **overrides):
    entry = get_model_entry(name)
    fields = entry.config_class.field_names()
    values = {**dict(seq_len=32, pred_len=8, n_vars=3, d_model=16, n_heads=2, n_layers=2,
                     d_ff=32, dropout=0.0, patch_len=8, stride=4, label_len=8, n_channels=3,
                     n_classes=4, max_seq_len=40, class_names=["walk", "sit", "stand", "lie"]),
              **overrides}
    torch.manual_seed(0)
    config = entry.config_class.from_dict({k: v for k, v in values.items() if k in fields})
    return entry.model_class(config).eval()


def series(steps: int = 32, channels: int = 3) -> np.ndarray:
    t = np.arange(steps, dtype=np.float32)[:, None]
    return (np.sin(t / 3 + np.arange(channels)) * 2 + 5).astype(np.float32)
