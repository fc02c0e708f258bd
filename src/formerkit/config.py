"""Config dataclass base: dict round-trip and validation that names the bad field."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
import types
import typing
from typing import Any, TypeVar

C = TypeVar("C", bound="ConfigBase")


@dataclasses.dataclass
class ConfigBase:
    """Base for every config dataclass.

    Subclasses list their fields and override ``validate``; ``__post_init__`` calls it, so an
    invalid config can never be constructed.
    """

    def __post_init__(self) -> None:
        check_field_types(self)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value is out of range."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any]) -> C:
        """Build a config, rejecting unknown keys with a suggestion of the closest valid one."""
        names = cls.field_names()
        for key in values:
            if key not in names:
                raise ValueError(f"{cls.__name__} has no field {key!r}{suggest(key, names)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)


def suggest(key: str, choices: list[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""`` if none is close."""
    close = difflib.get_close_matches(key, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


_SCALARS = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "null"}


@functools.cache
def _scalar_field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """Field name -> the scalar types it allows, for fields typed only with int, float, bool,
    str and None (others, such as tuples or nested configs, are left to ``validate``)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: nothing to check by type
        return {}
    out = {}
    for field in dataclasses.fields(cls):
        hint = hints.get(field.name)
        options = typing.get_args(hint) if typing.get_origin(hint) in (
            typing.Union, types.UnionType) else (hint,)
        if options and all(option in _SCALARS for option in options):
            out[field.name] = tuple(options)
    return out


def _fits(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and \
            not (isinstance(value, float) and math.isnan(value))
    return isinstance(value, kind)


def check_field_types(config: Any) -> None:
    """Raise ``ValueError`` naming a field whose value has the wrong type (``n_layers=1.5``,
    ``d_model="64"``) or is NaN: such values otherwise fail later with a ``TypeError`` deep in
    model code, or pass every range check."""
    for name, kinds in _scalar_field_types(type(config)).items():
        value = getattr(config, name)
        if not any(_fits(value, kind) for kind in kinds):
            expected = " or ".join(_SCALARS[kind] for kind in kinds)
            raise ValueError(f"{type(config).__name__}.{name} must be {expected}, "
                             f"got {value!r}")


def check_positive(config: Any, *names: str) -> None:
    """Raise ``ValueError`` if any named field is not a positive number (NaN is not)."""
    for name in names:
        value = getattr(config, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{type(config).__name__}.{name} must be positive, got {value!r}")


def check_probability(config: Any, *names: str) -> None:
    """Raise ``ValueError`` if any named field (a dropout rate) is outside [0, 1)."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ValueError(f"{type(config).__name__}.{name} must be in [0, 1), got {value!r}")


def check_divisible(config: Any, name: str, divisor_name: str) -> None:
    """Raise ``ValueError`` unless ``config.name`` is divisible by ``config.divisor_name``."""
    value, divisor = getattr(config, name), getattr(config, divisor_name)
    if value % divisor != 0:
        raise ValueError(
            f"{type(config).__name__}.{name}={value} must be divisible by "
            f"{divisor_name}={divisor}"
        )


def check_choice(config: Any, name: str, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``config.name`` is one of ``choices``."""
    value = getattr(config, name)
    if value not in choices:
        raise ValueError(
            f"{type(config).__name__}.{name} must be one of {list(choices)}, got {value!r}"
        )
