"""PreTrainedModel mixin (save/load in formerkit or HuggingFace layout) and output dataclasses."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from formerkit.config import ConfigBase

M = TypeVar("M", bound="PreTrainedModel")

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
GENERATION_CONFIG_NAME = "generation_config.json"


@dataclasses.dataclass
class ModelOutput:
    """Fields named as in HuggingFace; unused ones stay ``None``."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None
    seq_relationship_logits: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    prediction: torch.Tensor | None = None
    past_key_values: Any = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    encoder_attentions: tuple[torch.Tensor, ...] | None = None

    # HuggingFace ModelOutput behaves as an ordered dict of its set (non-None) fields and as a
    # tuple of their values: out["loss"], out[0], out.to_tuple(), `"loss" in out`, dict(out).

    def keys(self) -> list[str]:
        """Names of the fields that are set, in declaration order."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list[Any]:
        return [getattr(self, name) for name in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(name, getattr(self, name)) for name in self.keys()]

    def to_tuple(self) -> tuple[Any, ...]:
        """The set fields' values in order (``out[0]`` is the first: ``loss`` with labels,
        else ``logits`` / ``last_hidden_state`` / ``prediction``)."""
        return tuple(self.values())

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None)
        return default if value is None else value

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        if not isinstance(key, str):
            raise TypeError(f"ModelOutput indices are field names, ints or slices, "
                            f"not {type(key).__name__}")
        if key not in self.keys():
            names = [f.name for f in dataclasses.fields(self)]
            state = "is not set (None)" if key in names else "is not a field"
            raise KeyError(f"{key!r} {state}; this output holds {self.keys()}")
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


class PreTrainedModel(nn.Module):
    """Base class of every formerkit model: config handling, save and load.

    Subclasses set ``config_class`` and take the config as their only ``__init__`` argument.
    ``registry_name`` is set by ``@register_model``. A model may carry a ``tokenizer`` (saved
    as ``tokenizer.json``) and a ``generation_config`` dict (saved as generation_config.json).
    """

    config_class: type[ConfigBase] = ConfigBase
    registry_name: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from formerkit.models.registry import register_class

        register_class(cls)

    def __init__(self, config: ConfigBase) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config
        self.tokenizer: Any = None
        self.generation_config: dict[str, Any] | None = None

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ---- conveniences known from HuggingFace ---------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the first parameter (or buffer); CPU for a model with neither."""
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the first floating-point parameter (or buffer)."""
        for tensor in (*self.parameters(), *self.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding: the first ``nn.Embedding`` with ``config.vocab_size`` rows
        (registration order puts it before position and segment embeddings)."""
        vocab = getattr(self.config, "vocab_size", None)
        for module in self.modules():
            if isinstance(module, nn.Embedding) and module.num_embeddings == vocab:
                return module
        raise ValueError(f"{type(self).__name__} has no token embedding (it takes no "
                         "input_ids)")

    def set_input_embeddings(self, embedding: nn.Embedding) -> None:
        """Put ``embedding`` everywhere the current token embedding is used (a shared
        encoder/decoder embedding stays shared); tied output layers are not changed."""
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"embedding must be an nn.Embedding, got {type(embedding).__name__}")
        old = self.get_input_embeddings()
        if embedding.embedding_dim != old.embedding_dim:
            raise ValueError(f"embedding has width {embedding.embedding_dim}, the model "
                             f"expects {old.embedding_dim}")
        _replace_module(self, old, embedding)

    def get_output_embeddings(self) -> nn.Module | None:
        """The output projection onto the vocabulary (``lm_head``, BERT's MLM decoder), or
        ``None`` for a model without one."""
        head = getattr(self, "lm_head", None)
        if isinstance(head, nn.Linear):
            return head
        try:
            weight = self.get_input_embeddings().weight
        except ValueError:
            return None
        return next((m for m in self.modules()
                     if isinstance(m, nn.Linear) and m.weight is weight), None)

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        """Grow or shrink the vocabulary to ``new_num_tokens`` (e.g. after adding tokens).

        Kept rows are copied; new rows start at the mean of the old embeddings (HF's
        ``mean_resizing`` without its random spread). An output layer tied to the embedding
        stays tied, its bias and ``final_logits_bias`` follow; an untied head over the same
        vocabulary is resized the same way. ``config.vocab_size`` is updated.

        Returns:
            The new token embedding.
        """
        if isinstance(new_num_tokens, bool) or not isinstance(new_num_tokens, int) or \
                new_num_tokens < 1:
            raise ValueError(f"new_num_tokens must be a positive integer, got "
                             f"{new_num_tokens!r}")
        old = self.get_input_embeddings()
        old_size = old.num_embeddings
        head = self.get_output_embeddings()
        tied = head is not None and head.weight is old.weight
        new = nn.Embedding(new_num_tokens, old.embedding_dim, padding_idx=old.padding_idx
                           if old.padding_idx is not None and old.padding_idx < new_num_tokens
                           else None, device=old.weight.device, dtype=old.weight.dtype)
        new.weight.data = _resized(old.weight.data, new_num_tokens)
        _replace_module(self, old, new)
        output_vocab = getattr(self.config, "target_vocab_size", old_size)
        if head is not None and (tied or head.out_features == old_size == output_vocab):
            new_head = nn.Linear(head.in_features, new_num_tokens, bias=head.bias is not None,
                                 device=head.weight.device, dtype=head.weight.dtype)
            if tied:
                new_head.weight = new.weight
            else:
                new_head.weight.data = _resized(head.weight.data, new_num_tokens)
            if head.bias is not None:
                new_head.bias.data = _resized(head.bias.data[:, None], new_num_tokens,
                                              fill=0.0)[:, 0]
            _replace_module(self, head, new_head)
            bias = getattr(self, "final_logits_bias", None)
            if isinstance(bias, torch.Tensor) and bias.shape[-1] == old_size:
                self.final_logits_bias = _resized(bias.T, new_num_tokens, fill=0.0).T
        self.config.vocab_size = new_num_tokens
        return new

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each Transformer layer's activations in the backward pass (less memory,
        ~30% more compute), as ``trainer.activation_checkpointing`` does."""
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        self._set_gradient_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    def _set_gradient_checkpointing(self, value: bool) -> None:
        stacks = [m for m in self.modules() if hasattr(m, "gradient_checkpointing")]
        if not stacks:
            raise ValueError(f"{type(self).__name__} has no layer stack that supports "
                             "gradient checkpointing")
        for stack in stacks:
            stack.gradient_checkpointing = value

    # ---- saving -------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, *, hf: bool = False) -> Path:
        """Write ``config.json``, ``model.safetensors`` and, where present, the generation
        config and tokenizer. With ``hf=True`` the directory is in HuggingFace layout."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if hf:
            from formerkit.interop.hf import save_hf

            save_hf(self, path)
        else:
            config = self.config.to_dict()
            config["formerkit"] = {"model": self.registry_name, "class": type(self).__name__,
                                   "format_version": FORMAT_VERSION}
            _write_json(path / CONFIG_NAME, config)
            save_state_dict(self.state_dict(), path / WEIGHTS_NAME)
        if self.generation_config:
            _write_json(path / GENERATION_CONFIG_NAME, self.generation_config)
        if self.tokenizer is not None:
            self.tokenizer.save(path)
        return path

    # ---- loading ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls: type[M], path: str | Path, **config_overrides: Any) -> M:
        """Load a formerkit directory, a HuggingFace directory of a supported type, or a
        llama.cpp ``.gguf`` file of the Llama family.

        ``config_overrides`` replace config fields that do not change weight shapes
        (e.g. ``dropout=0.0``).
        """
        path = Path(path)
        if path.suffix.lower() == ".gguf" and not path.is_dir():  # llama.cpp: all in one file
            from formerkit.interop.gguf import load_gguf

            return load_gguf(cls, path, config_overrides)
        raw = read_config(path)
        if "formerkit" not in raw:
            from formerkit.interop.hf import load_hf

            model = load_hf(cls, path, raw, config_overrides)
        else:
            saved_class = raw["formerkit"].get("class")
            if saved_class and saved_class != cls.__name__ and cls is not PreTrainedModel:
                _check_compatible_class(cls, saved_class, path)
            values = {k: v for k, v in raw.items() if k != "formerkit"}
            values.update(config_overrides)
            model = cls(cls.config_class.from_dict(values))
            load_state_dict_into(model, load_weights(path), source=path / WEIGHTS_NAME)
        saved = _read_json(path / GENERATION_CONFIG_NAME, default=None)
        if saved:
            saved = without_out_of_vocab_ids(
                {"vocab_size": getattr(model.config, "vocab_size", None), **saved},
                path / GENERATION_CONFIG_NAME)
            saved.pop("vocab_size")
        model.generation_config = saved or model.generation_config
        from formerkit.data.tokenizers import load_tokenizer_if_present

        model.tokenizer = load_tokenizer_if_present(path)
        model.eval()
        return model


def without_out_of_vocab_ids(values: dict[str, Any], source: Path) -> dict[str, Any]:
    """``values`` with bos/eos/pad ids outside ``values["vocab_size"]`` left out, with a
    warning: transformers accepts such configs (GPT-2's default 50256 with a small
    vocabulary), so formerkit loads them too, but generation must not default to a token the
    model cannot produce."""
    import warnings

    vocab = values.get("vocab_size")
    if not isinstance(vocab, int):
        return values
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = values.get(name)
        ids = value if isinstance(value, list) else [value]
        kept = [i for i in ids if i is None or isinstance(i, int) and 0 <= i < vocab]
        if len(kept) == len(ids):
            continue
        warnings.warn(f"{source}: {name}={value!r} is outside the vocabulary of {vocab}; it "
                      "is left out of the generation defaults", stacklevel=3)
        values[name] = (kept or None) if isinstance(value, list) else None
    return values


def _resized(weight: torch.Tensor, rows: int, *, fill: float | None = None) -> torch.Tensor:
    """``weight`` (V, D) cut or grown to ``rows``; new rows are ``fill`` or the mean row."""
    out = weight.new_empty(rows, weight.shape[1])
    keep = min(rows, weight.shape[0])
    out[:keep] = weight[:keep]
    if rows > keep:
        out[keep:] = fill if fill is not None else weight.float().mean(dim=0).to(weight.dtype)
    return out


def _replace_module(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Swap every reference to ``old`` inside ``model`` (shared modules stay shared)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if child is old:
                setattr(parent, name, new)


def _check_compatible_class(cls: type, saved_class: str, path: Path) -> None:
    # A head may load its family's base model weights, and the base model a head's: the state
    # dict loader reports what is missing. A different family is a clear error.
    from formerkit.models.registry import get_model_class

    family = getattr(cls, "registry_name", "")
    saved = get_model_class(saved_class)
    if saved is not None and getattr(saved, "config_class", None) is not cls.config_class:
        raise ValueError(f"{path / CONFIG_NAME} holds a {saved_class}, which cannot be "
                         f"loaded as {cls.__name__} ({family or 'other family'})")


def read_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: not a model directory")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file} is not valid JSON: {err}") from None


def save_state_dict(state_dict: dict[str, torch.Tensor], file: Path,
                    metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors; tied tensors are stored once per name (cloned)."""
    from safetensors.torch import save_file

    seen: dict[int, str] = {}
    tensors = {}
    for name, tensor in state_dict.items():
        key = tensor.data_ptr()
        tensors[name] = tensor.detach().clone().contiguous() if key in seen else \
            tensor.detach().contiguous()
        seen.setdefault(key, name)
    save_file(tensors, str(file), metadata=metadata or {"format": "pt"})


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read ``model.safetensors`` or ``pytorch_model.bin`` (``weights_only=True``) from a dir."""
    safetensors_file = path / WEIGHTS_NAME
    bin_file = path / "pytorch_model.bin"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(safetensors_file))
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"cannot read weights {safetensors_file}: {err} "
                             "(truncated or corrupt file?)") from None
    if bin_file.is_file():
        try:
            return torch.load(bin_file, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"cannot read weights {bin_file}: {err} "
                             "(truncated or corrupt file, or it holds pickled code?)") from None
    raise FileNotFoundError(f"no weights in {path}: expected {WEIGHTS_NAME} "
                            "or pytorch_model.bin")


def load_state_dict_into(model: nn.Module, state_dict: dict[str, torch.Tensor],
                         *, source: Path | str) -> None:
    """Strictly load weights, naming the tensor and file on any missing, extra or misshapen
    tensor. Non-persistent buffers are not expected in the file."""
    expected = model.state_dict()
    problems = []
    for name, tensor in expected.items():
        if name not in state_dict:
            problems.append(f"missing tensor {name!r}")
        elif tuple(state_dict[name].shape) != tuple(tensor.shape):
            problems.append(f"tensor {name!r} has shape {tuple(state_dict[name].shape)}, "
                            f"model expects {tuple(tensor.shape)}")
    problems += [f"unexpected tensor {name!r}" for name in state_dict if name not in expected]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                           if len(problems) > 5 else "")
        raise ValueError(f"weights in {source} do not fit {type(model).__name__}: {shown}")
    model.load_state_dict(state_dict, strict=True)


def _write_json(file: Path, data: Any) -> None:
    file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _read_json(file: Path, default: Any) -> Any:
    return json.loads(file.read_text()) if file.is_file() else default
