"""Sentence embeddings from sentence-transformers directories (Reimers & Gurevych 2019): an
encoder (any formerkit model that returns ``last_hidden_state``, such as BERT) followed by the
directory's pooling (``1_Pooling/config.json``: mean over the attention mask, the CLS token,
max, or mean scaled by sqrt(length)) and, when ``modules.json`` lists ``Normalize``, unit
length. ``SentenceEncoder.encode`` computes what sentence-transformers computes from the same
files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")
_POOLING_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                 "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens":
                 "mean_sqrt_len"}
_KNOWN_MODULES = ("sentence_transformers.models.Transformer",
                  "sentence_transformers.models.Pooling", "sentence_transformers.models.Normalize")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Sentence vectors (B, D) of token states (B, T, D) over ``attention_mask`` (B, T)."""
    if mode not in POOLING_MODES:
        raise ValueError(f"pooling mode must be one of {POOLING_MODES}, got {mode!r}")
    if mode == "cls":
        return hidden[:, 0]
    keep = attention_mask.to(hidden.dtype)[..., None]  # (B, T, 1)
    if mode == "max":
        return hidden.masked_fill(keep == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    total = (hidden * keep).sum(dim=1)
    count = keep.sum(dim=1).clamp(min=1e-9)  # (B, 1)
    return total / (count if mode == "mean" else count.sqrt())


class SentenceEncoder(nn.Module):
    """An encoder with a pooling step: ``encode(texts)`` -> (N, D) sentence vectors.

    Args:
        encoder: a model whose output has ``last_hidden_state`` (B, T, D); it carries the
            tokenizer (``encoder.tokenizer``).
        pooling: one of ``POOLING_MODES``.
        normalize: scale every vector to unit length.
        max_length: tokens per text (longer texts are truncated, as sentence-transformers'
            ``max_seq_length``).
    """

    def __init__(self, encoder: nn.Module, *, pooling: str = "mean", normalize: bool = False,
                 max_length: int | None = None) -> None:
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        if getattr(encoder, "tokenizer", None) is None:
            raise ValueError("the encoder has no tokenizer to encode texts with")
        self.encoder, self.pooling, self.normalize = encoder, pooling, normalize
        self.max_length = max_length or encoder.config.max_seq_len

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids and mask -> (B, D) sentence vectors."""
        out = self.encoder(input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids)
        vectors = pool(out.last_hidden_state, attention_mask, self.pooling)
        return nn.functional.normalize(vectors, p=2, dim=1) if self.normalize else vectors

    @torch.no_grad()
    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """float32 (N, D) vectors of ``texts``, computed ``batch_size`` at a time, each batch
        padded to its longest text."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a list of strings")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        tokenizer = self.encoder.tokenizer
        chunks = []
        try:
            for start in range(0, len(texts), batch_size):
                batch = tokenizer.encode_batch(texts[start:start + batch_size],
                                               max_length=self.max_length)
                batch = {k: v.to(device) for k, v in batch.items()}
                chunks.append(self(batch["input_ids"], batch["attention_mask"],
                                   batch["token_type_ids"]).float().cpu())
        finally:
            self.train(was_training)
        width = self.encoder.config.d_model
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, width), np.float32)


def is_sentence_transformers_dir(path: str | Path) -> bool:
    return (Path(path) / "modules.json").is_file()


def load_sentence_encoder(path: str | Path, **config_overrides: Any) -> SentenceEncoder:
    """A sentence-transformers directory (``modules.json``, ``1_Pooling/config.json``) or a
    plain model directory (then mean pooling, no normalisation) as a ``SentenceEncoder``.

    Raises:
        ValueError: naming a module type or pooling configuration formerkit does not support.
    """
    from formerkit.models.auto import from_pretrained

    path = Path(path)
    pooling, normalize, max_length, model_dir = "mean", False, None, path
    if is_sentence_transformers_dir(path):
        modules = _read_json(path / "modules.json")
        if not isinstance(modules, list):
            raise ValueError(f"{path / 'modules.json'} must hold a list of modules")
        for module in modules:
            kind = module.get("type", "")
            if kind not in _KNOWN_MODULES:
                raise ValueError(f"{path / 'modules.json'}: module type {kind!r} is not "
                                 f"supported; supported: {', '.join(_KNOWN_MODULES)}")
            if kind.endswith("Transformer"):
                model_dir = path / module.get("path", "")
            elif kind.endswith("Pooling"):
                pooling = _pooling_mode(path / module["path"] / "config.json")
            else:
                normalize = True
        settings = path / "sentence_bert_config.json"
        if settings.is_file():
            max_length = _read_json(settings).get("max_seq_length")
    encoder = from_pretrained(model_dir, **config_overrides)
    if not _has_token_states(encoder):
        raise ValueError(f"{model_dir} holds a {type(encoder).__name__}, which has no token "
                         "states to pool; save the encoder (e.g. BertModel)")
    if max_length is not None:
        max_length = min(max_length, encoder.config.max_seq_len)
    return SentenceEncoder(encoder, pooling=pooling, normalize=normalize, max_length=max_length)


@torch.no_grad()
def _has_token_states(model: nn.Module) -> bool:
    ids = torch.zeros(1, 2, dtype=torch.long, device=next(model.parameters()).device)
    try:
        out = model(ids, attention_mask=torch.ones_like(ids))
    except TypeError:
        return False
    return getattr(out, "last_hidden_state", None) is not None


def _pooling_mode(file: Path) -> str:
    config = _read_json(file)
    chosen = [mode for key, mode in _POOLING_KEYS.items() if config.get(key)]
    others = sorted(k for k, v in config.items() if k.startswith("pooling_mode_") and v
                    and k not in _POOLING_KEYS)
    if others or len(chosen) != 1:
        raise ValueError(f"{file}: pooling {others or chosen or 'none'} is not supported; "
                         f"exactly one of {', '.join(_POOLING_KEYS)} must be true")
    if config.get("include_prompt") is False:
        raise ValueError(f"{file}: include_prompt=false is not supported")
    return chosen[0]


def _read_json(file: Path) -> Any:
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from None


def write_embeddings(vectors: np.ndarray, output: str | Path) -> Path:
    """Save (N, D) vectors as ``.npy`` (or ``.txt``, one vector per line)."""
    output = Path(output)
    if output.suffix == ".txt":
        np.savetxt(output, vectors, fmt="%.8g")
    elif output.suffix == ".npy":
        np.save(output, vectors)
    else:
        raise ValueError(f"embeddings output must end in .npy or .txt, got {output.name!r}")
    return output

