"""HuggingFace <-> formerkit checkpoints: the converter registry and the shared load/save path.

Each family registers an ``HFConverter`` (``interop/hf_gpt2.py``, ``hf_bert.py``,
``hf_marian.py``) that maps HF config keys and tensor names to formerkit's vocabulary. HF
names (``n_embd``, ``hidden_size``) appear only in these interop modules.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from formerkit.models.base import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointFormat,
    build_from_weights,
    save_state_dict,
    weights_file,
    without_out_of_vocab_ids,
)

if TYPE_CHECKING:
    from formerkit.config import ConfigBase
    from formerkit.models.base import PreTrainedModel

StateDict = dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class HFConverter:
    """How one HF ``model_type`` maps onto a formerkit family.

    Attributes:
        model_type: HF ``config.model_type`` (``"gpt2"``, ``"bert"``, ``"marian"``).
        architectures: HF architecture name -> formerkit class name, both ways.
        config_from_hf: HF config dict -> formerkit config field dict.
        config_to_hf: (formerkit config, formerkit class name) -> HF config dict.
        state_dict_from_hf: (HF state dict, formerkit config, formerkit class name) -> formerkit.
        state_dict_to_hf: (formerkit state dict, config, formerkit class name) -> HF.
    """

    model_type: str
    architectures: dict[str, str]
    config_from_hf: Callable[[dict[str, Any]], dict[str, Any]]
    config_to_hf: Callable[[Any, str], dict[str, Any]]
    state_dict_from_hf: Callable[[StateDict, Any, str], StateDict]
    state_dict_to_hf: Callable[[StateDict, Any, str], StateDict]


_CONVERTERS: dict[str, HFConverter] = {}


def register_converter(converter: HFConverter) -> HFConverter:
    _CONVERTERS[converter.model_type] = converter
    return converter


def get_converter(model_type: str, source: Path | None = None) -> HFConverter:
    import formerkit.interop.families  # noqa: F401  (registers converters)

    if model_type not in _CONVERTERS:
        where = f" in {source}" if source else ""
        raise ValueError(f"unsupported HuggingFace model_type {model_type!r}{where}; "
                         f"formerkit loads: {', '.join(sorted(_CONVERTERS))}")
    return _CONVERTERS[model_type]


def hf_class_name(raw_config: dict[str, Any], path: Path) -> str:
    """The formerkit class a HuggingFace directory's ``architectures[0]`` maps to."""
    converter = get_converter(raw_config.get("model_type", "<none>"), path / CONFIG_NAME)
    archs = raw_config.get("architectures") or []
    if not archs:
        return next(iter(converter.architectures.values()))
    if archs[0] not in converter.architectures:
        raise ValueError(f"{path / CONFIG_NAME}: architecture {archs[0]!r} is not supported; "
                         f"supported: {', '.join(converter.architectures)}")
    return converter.architectures[archs[0]]


def load_hf(cls: type[PreTrainedModel], path: Path, raw_config: dict[str, Any],
            overrides: dict[str, Any]) -> PreTrainedModel:
    """Build ``cls`` from a HuggingFace directory (config.json + weights)."""
    converter = get_converter(raw_config.get("model_type", "<none>"), path / CONFIG_NAME)
    if cls.__name__ not in converter.architectures.values():
        raise ValueError(f"{path} holds a HuggingFace {raw_config.get('model_type')!r} "
                         f"checkpoint, which cannot be loaded as {cls.__name__}")
    try:
        values = without_out_of_vocab_ids(converter.config_from_hf(raw_config),
                                          path / CONFIG_NAME)
        values.update(overrides)
        config: ConfigBase = cls.config_class.from_dict(values)
    except (TypeError, ValueError) as err:  # e.g. "n_layer": 1.5, "layer_norm_epsilon": NaN
        raise ValueError(f"{path / CONFIG_NAME}: {' '.join(str(err).split())}") from None
    return build_from_weights(
        cls, config, weights_file(path),
        convert=lambda state: converter.state_dict_from_hf(state, config, cls.__name__))


def save_hf(model: PreTrainedModel, path: Path) -> None:
    """Write ``model`` as a HuggingFace directory that ``transformers`` loads unchanged."""
    converter = _converter_for_class(type(model).__name__,
                                     getattr(model.config, "architecture", None))
    hf_config = converter.config_to_hf(model.config, type(model).__name__)
    (path / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    state = converter.state_dict_to_hf(model.state_dict(), model.config, type(model).__name__)
    save_state_dict(state, path / WEIGHTS_NAME)


def _converter_for_class(class_name: str, model_type: str | None = None) -> HFConverter:
    """The converter that saves ``class_name``; ``model_type`` picks among several (the Llama
    family saves as ``llama``, ``qwen2`` or ``mistral``)."""
    import formerkit.interop.families  # noqa: F401

    preferred = _CONVERTERS.get(model_type or "")
    if preferred is not None and class_name in preferred.architectures.values():
        return preferred
    for converter in _CONVERTERS.values():
        if class_name in converter.architectures.values():
            return converter
    raise ValueError(f"{class_name} has no HuggingFace equivalent to save as")


def hf_architecture(converter: HFConverter, class_name: str) -> str:
    """The HF architecture name for a formerkit class (inverse of ``architectures``)."""
    for hf_name, ours in converter.architectures.items():
        if ours == class_name:
            return hf_name
    raise ValueError(f"{class_name} has no HuggingFace architecture in {converter.model_type}")


FORMAT = CheckpointFormat(
    name="huggingface",
    claims=lambda path, raw_config: raw_config is not None and "formerkit" not in raw_config,
    class_name=lambda path, raw_config: hf_class_name(raw_config, path),
    load=load_hf,
    save=save_hf,
)
