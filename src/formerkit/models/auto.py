"""``formerkit.from_pretrained(path)``: load any saved model, choosing its class from config."""

from __future__ import annotations

from pathlib import Path

from formerkit.models.base import CONFIG_NAME, PreTrainedModel, read_config
from formerkit.models.registry import get_model_class


def model_class_for(path: str | Path) -> type[PreTrainedModel]:
    """The class a formerkit or HuggingFace model directory (or a GGUF file) holds."""
    path = Path(path)
    if path.suffix.lower() == ".gguf" and not path.is_dir():  # llama.cpp: a Llama-family LM
        return get_model_class("LlamaForCausalLM")
    raw = read_config(path)
    if "formerkit" in raw:
        name = raw["formerkit"].get("class", "")
    else:
        from formerkit.interop.hf import hf_class_name

        name = hf_class_name(raw, path)
    cls = get_model_class(name)
    if cls is None:
        raise ValueError(f"{path / CONFIG_NAME} names model class {name!r}, "
                         "which this version of formerkit does not have")
    return cls


def from_pretrained(path: str | Path, **config_overrides) -> PreTrainedModel:
    """Load a model directory (formerkit or HuggingFace) or a GGUF file as the class it was
    saved from."""
    return model_class_for(path).from_pretrained(path, **config_overrides)
