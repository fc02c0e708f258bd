"""``formerkit.from_pretrained(path)``: load any saved model, choosing its class from config."""

from __future__ import annotations

from pathlib import Path

from formerkit.models.base import (
    CONFIG_NAME,
    PreTrainedModel,
    checkpoint_format_for,
    foreign_format,
    read_config,
)
from formerkit.models.registry import get_model_class


def model_class_for(path: str | Path) -> type[PreTrainedModel]:
    """The class a formerkit or HuggingFace model directory (or a GGUF file) holds."""
    path = Path(path)
    single_file = None if path.is_dir() else checkpoint_format_for(path, None)
    if single_file is not None:  # e.g. a llama.cpp GGUF file
        name = single_file.class_name(path, None)
    else:
        raw = read_config(path)
        if "formerkit" in raw:
            name = raw["formerkit"].get("class", "")
        else:
            name = foreign_format(path, raw).class_name(path, raw)
    cls = get_model_class(name)
    if cls is None:
        raise ValueError(f"{path / CONFIG_NAME} names model class {name!r}, "
                         "which this version of formerkit does not have")
    return cls


def from_pretrained(path: str | Path, **config_overrides) -> PreTrainedModel:
    """Load a model directory (formerkit or HuggingFace) or a GGUF file as the class it was
    saved from."""
    return model_class_for(path).from_pretrained(path, **config_overrides)
