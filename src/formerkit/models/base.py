"""PreTrainedModel mixin (save/load in formerkit or HuggingFace layout) and output dataclasses."""

from __future__ import annotations

import dataclasses
import json
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

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


class PreTrainedModel(nn.Module):
    """Base class of every formerkit model: config handling, save and load.

    Subclasses set ``config_class`` and take the config as their only ``__init__`` argument.
    ``registry_name`` is set by ``@register_model``. A model may carry a ``tokenizer`` (saved
    as ``tokenizer.json``) and a ``generation_config`` dict (saved as generation_config.json).
    """

    config_class: type[ConfigBase] = ConfigBase
    registry_name: str = ""

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
        model.generation_config = _read_json(path / GENERATION_CONFIG_NAME, default=None) \
            or model.generation_config
        from formerkit.data.tokenizers import load_tokenizer_if_present

        model.tokenizer = load_tokenizer_if_present(path)
        model.eval()
        return model


def _check_compatible_class(cls: type, saved_class: str, path: Path) -> None:
    # A head may load its family's base model weights, and the base model a head's: the state
    # dict loader reports what is missing. A different family is a clear error.
    family = getattr(cls, "registry_name", "")
    import formerkit.models as models

    saved = getattr(models, saved_class, None)
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
