"""Model registry: ``register_model`` / ``create_model(name, **overrides)`` / ``list_models``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from formerkit.config import ConfigBase, suggest


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    model_class: type[nn.Module]
    config_class: type[ConfigBase]
    presets: dict[str, dict[str, Any]]
    description: str


_MODELS: dict[str, ModelEntry] = {}
_CLASSES: dict[str, type[nn.Module]] = {}  # class name -> class, every PreTrainedModel


def register_class(cls: type[nn.Module]) -> None:
    """Make ``cls`` findable by its name, as saved in a checkpoint's ``config.json``. Every
    ``PreTrainedModel`` subclass registers itself when it is defined (a plugin's too)."""
    _CLASSES[cls.__name__] = cls


def get_model_class(name: str) -> type[nn.Module] | None:
    """The model class named ``name`` (formerkit's, or one a plugin defined), or ``None``."""
    _import_families()
    return _CLASSES.get(name)


def register_model(
    name: str,
    *,
    config_class: type[ConfigBase],
    presets: dict[str, dict[str, Any]] | None = None,
    description: str = "",
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make ``create_model(name)`` build this class from ``config_class``.

    Args:
        name: registry name, e.g. ``"gpt"``.
        config_class: the config dataclass the model's ``__init__`` takes.
        presets: named field overrides, e.g. ``{"small": {"n_layers": 4}}``.
        description: one line shown by ``list_models(verbose=True)``.
    """

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _MODELS and _MODELS[name].model_class is not cls:
            raise ValueError(f"model name {name!r} is already registered")
        _MODELS[name] = ModelEntry(name, cls, config_class, dict(presets or {}), description)
        cls.registry_name = name
        return cls

    return decorator


def get_model_entry(name: str) -> ModelEntry:
    _import_families()
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}{suggest(name, list(_MODELS))}; "
                         f"available: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def build_config(name: str, preset: str | None = None, **overrides: Any) -> ConfigBase:
    """The config ``create_model`` would use: class defaults, then preset, then overrides."""
    entry = get_model_entry(name)
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in entry.presets:
            raise ValueError(f"model {name!r} has no preset {preset!r}"
                             f"{suggest(preset, list(entry.presets))}; "
                             f"available: {', '.join(entry.presets) or 'none'}")
        values.update(entry.presets[preset])
    values.update(overrides)
    return entry.config_class.from_dict(values)


def create_model(name: str, preset: str | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model, e.g. ``create_model("gpt", preset="small", n_layers=2)``.

    Raises:
        ValueError: the model cannot fit in this machine's memory (checked before building,
            see ``sizing.py``) or its allocation failed.
    """
    from formerkit.models.sizing import check_fits_in_memory, describe

    entry = get_model_entry(name)
    config = build_config(name, preset, **overrides)
    check_fits_in_memory(config)
    try:
        return entry.model_class(config)
    except (MemoryError, RuntimeError) as err:  # torch.OutOfMemoryError is a RuntimeError
        text = " ".join(str(err).split())
        if not isinstance(err, MemoryError) and "alloc" not in text.lower() and \
                "out of memory" not in text.lower():
            raise
        raise ValueError(f"not enough memory to build {name} {describe(config)}: "
                         f"{text[:200] or type(err).__name__}") from None


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _import_families()
    return sorted(_MODELS)


def list_presets(name: str) -> list[str]:
    return list(get_model_entry(name).presets)


def _import_families() -> None:
    # Importing the model package runs every family's @register_model.
    import formerkit.models  # noqa: F401
