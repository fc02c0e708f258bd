"""Recipes: YAML files naming a model, data, task and trainer settings, with type-checked
``section.key=value`` overrides.

A recipe is found by name in ``formerkit/recipes/NAME.yaml`` or by file path. Its sections:
``description`` (one line), ``model`` (``name``, optional ``preset``, config fields of the
registered model), ``data`` (fields of the task's ``data_config``), ``task`` (``name`` and
fields of its ``task_config``), ``trainer`` (``TrainerConfig`` fields) and an optional
``imports`` list of Python modules to import first (they may register models and tasks).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import types
import typing
from pathlib import Path
from typing import Any

from formerkit.config import ConfigBase, suggest
from formerkit.train.config import TrainerConfig

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
SECTIONS = ("name", "description", "imports", "model", "data", "task", "trainer")
CONFIG_SECTIONS = ("model", "data", "task", "trainer")
MODEL_KEYS = ("name", "preset")


@dataclasses.dataclass
class Recipe:
    """A recipe with overrides applied and every section checked.

    Attributes:
        name: recipe name (file stem).
        raw: the merged sections as plain data (what ``recipe.yaml`` of a run holds).
        model: the ``model`` section dict (``name``, ``preset``, config fields).
        data: ``task.data_config`` instance.
        task_name: the registered task.
        task: ``task.task_config`` instance.
        trainer: ``TrainerConfig``.
    """

    name: str
    raw: dict[str, Any]
    model: dict[str, Any]
    data: ConfigBase
    task_name: str
    task: ConfigBase
    trainer: TrainerConfig

    def settings(self) -> dict[str, Any]:
        """What a checkpoint records as this recipe's settings: every section with its
        defaults filled in (the model config after its preset), so that two recipes which
        train the same way compare equal however they are written."""
        from formerkit.models.registry import build_config

        fields = {k: v for k, v in self.model.items() if k not in MODEL_KEYS}
        config = build_config(str(self.model["name"]), self.model.get("preset"), **fields)
        return {"imports": list(self.raw.get("imports") or []),
                "model": {"name": self.model["name"], **config.to_dict()},
                "data": self.data.to_dict(),
                "task": {"name": self.task_name, **self.task.to_dict()},
                "trainer": self.trainer.to_dict()}

    def setup(self):
        """Seed and call the task's ``setup``: the ``TaskSetup`` for this recipe."""
        import torch

        from formerkit.tasks.base import get_task

        torch.manual_seed(self.trainer.seed)
        return get_task(self.task_name).setup(dict(self.model), self.data, self.task,
                                              seed=self.trainer.seed)


def list_recipes() -> dict[str, str]:
    """``{name: description}`` of the recipes shipped in the package."""
    out = {}
    for file in sorted(RECIPES_DIR.glob("*.yaml")):
        try:
            out[file.stem] = str(_read_yaml(file).get("description", "")).strip()
        except ValueError as err:
            out[file.stem] = f"(unreadable: {err})"
    return out


def recipe_path(name_or_path: str | Path) -> Path:
    """The YAML file of a shipped recipe name or of a path."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_file() or "/" in text:
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {path} does not exist")
        return path
    file = RECIPES_DIR / f"{text}.yaml"
    if not file.is_file():
        names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
        raise ValueError(f"unknown recipe {text!r}{suggest(text, names)}; available: "
                         f"{', '.join(names) or 'none'} (or give a path to a YAML file)")
    return file


def _read_yaml(file: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{file} is not valid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{file} must hold a mapping of sections, got {type(data).__name__}")
    return data


def load_recipe(recipe: str | Path | dict[str, Any], overrides: list[str] | None = None,
                **section_overrides: Any) -> Recipe:
    """Read a recipe, apply overrides and check everything against the config dataclasses.

    Args:
        recipe: shipped recipe name, path to a YAML file, or the sections as a dict.
        overrides: ``["trainer.max_steps=200", "model.n_layers=4"]`` (values parsed as YAML).
        **section_overrides: Python values, as ``trainer={"lr": 1e-3}``,
            ``trainer__lr=1e-3`` or ``**{"trainer.lr": 1e-3}``.

    Returns:
        A checked ``Recipe``.

    Raises:
        ValueError: unknown recipe, section or key (with the closest valid key), a value of
            the wrong type, or a config that fails validation.
    """
    if isinstance(recipe, dict):
        name, raw = str(recipe.get("name", "custom")), copy.deepcopy(recipe)
    else:
        file = recipe_path(recipe)
        raw = _read_yaml(file)
        name = str(raw.get("name", file.stem))
    raw.pop("name", None)
    for key in raw:
        if key not in SECTIONS:
            raise ValueError(f"unknown recipe section {key!r}{suggest(key, list(SECTIONS))}; "
                             f"sections: {', '.join(SECTIONS)}")
    imports = raw.get("imports") or []
    if not isinstance(imports, list) or not all(isinstance(m, str) for m in imports):
        raise ValueError(f"recipe {name!r}: imports must be a list of module names, "
                         f"got {imports!r}")
    for module in imports:
        importlib.import_module(module)
    for section in ("model", "data", "task", "trainer"):
        raw[section] = dict(raw.get(section) or {})
    for item in overrides or []:
        key, value = _split_override(item)
        _set(raw, key, value, parse=True)
    for key, value in section_overrides.items():
        key = key.replace("__", ".")
        if "." not in key and isinstance(value, dict) and key in CONFIG_SECTIONS:
            for sub, sub_value in value.items():
                _set(raw, f"{key}.{sub}", sub_value, parse=False)
        else:
            _set(raw, key, value, parse=False)
    return _check(name, raw)


def load_run_recipe(run_dir: str | Path, *, trust_imports: bool = False) -> Recipe:
    """The recipe of an existing run directory (``RUN/recipe.yaml``).

    A run directory may come from anyone, and its recipe's ``imports`` would run code, so
    they are imported only with ``trust_imports=True`` (``--trust-imports``), in the spirit of
    transformers' ``trust_remote_code``.

    Raises:
        UntrustedImportsError: the recipe lists imports and ``trust_imports`` is False.
    """
    file = Path(run_dir) / "recipe.yaml"
    raw = _read_yaml(file)
    imports = raw.get("imports") or []
    if imports and not trust_imports:
        names = ", ".join(map(str, imports)) if isinstance(imports, list) else repr(imports)
        raise UntrustedImportsError(
            f"{file} imports Python modules ({names}), which would run their code; pass "
            "--trust-imports (trust_imports=True) if you trust this directory")
    return load_recipe(file)


class UntrustedImportsError(ValueError):
    """A run directory's recipe wants to import modules and the user did not allow it."""


def _split_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like section.key=value "
                         "(e.g. trainer.max_steps=200)")
    key, value = item.split("=", 1)
    return key.strip(), value


def _set(raw: dict[str, Any], key: str, value: Any, *, parse: bool) -> None:
    parts = key.split(".")
    if len(parts) < 2 or parts[0] not in CONFIG_SECTIONS:
        section = parts[0]
        hint = suggest(section, list(CONFIG_SECTIONS)) if len(parts) > 1 else \
            " (write section.key=value)"
        raise ValueError(f"override key {key!r}: unknown section {section!r}{hint}; "
                         f"sections: model, data, task, trainer")
    target = raw.setdefault(parts[0], {})
    for part in parts[1:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ValueError(f"override key {key!r}: {part!r} is not a mapping")
    target[parts[-1]] = _parse_value(value) if parse else value


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _check(name: str, raw: dict[str, Any]) -> Recipe:
    from formerkit.models.registry import build_config, get_model_entry
    from formerkit.tasks.base import get_task

    model = raw["model"]
    if "name" not in model:
        raise ValueError(f"recipe {name!r}: the model section needs a 'name' (a registered "
                         "model, e.g. gpt)")
    entry = get_model_entry(str(model["name"]))
    fields = {k: v for k, v in model.items() if k not in MODEL_KEYS}
    _check_types(entry.config_class, fields, "model", extra=MODEL_KEYS)
    build_config(entry.name, model.get("preset"), **fields)  # validates values

    task_section = dict(raw["task"])
    if "name" not in task_section:
        raise ValueError(f"recipe {name!r}: the task section needs a 'name' (a registered "
                         "task)")
    task = get_task(str(task_section.pop("name")))
    data = _build(task.data_config, raw["data"], "data")
    task_cfg = _build(task.task_config, task_section, "task", extra=("name",))
    trainer = _build(TrainerConfig, raw["trainer"], "trainer")
    raw["trainer"] = trainer.to_dict()
    return Recipe(name, raw, dict(model), data, task.name, task_cfg, trainer)


def _build(cls: type[ConfigBase], values: dict[str, Any], section: str,
           extra: tuple[str, ...] = ()) -> ConfigBase:
    values = _check_types(cls, values, section, extra=extra)
    try:
        return cls(**values)
    except TypeError as err:  # a required field without a value
        raise ValueError(f"{section} section: {err}") from None


def _check_types(cls: type, values: dict[str, Any], section: str,
                 extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Reject unknown keys (suggesting the closest) and values of the wrong type; ints are
    accepted for float fields and converted."""
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    names = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
    out = {}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"unknown key {section}.{key}"
                             f"{suggest(key, names + list(extra))} "
                             f"({cls.__name__} fields: {', '.join(names) or 'none'})")
        expected = hints.get(key)
        ok, converted = _conforms(value, expected)
        if not ok:
            raise ValueError(f"{section}.{key} must be {_type_name(expected)}, got {value!r}")
        out[key] = converted
    return out


def _conforms(value: Any, expected: Any) -> tuple[bool, Any]:
    if expected is None or expected is Any:
        return True, value
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(expected):
            ok, converted = _conforms(value, option)
            if ok:
                return True, converted
        return False, value
    if expected is type(None):
        return value is None, value
    if origin is typing.Literal:
        return value in typing.get_args(expected), value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        return True, origin(value)
    if origin is dict:
        return isinstance(value, dict), value
    if expected is bool:
        return isinstance(value, bool), value
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads `2e-3` (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if expected is str:  # `data.name=123` parses as a number: keep it as text
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)
        return isinstance(value, str), value
    if isinstance(expected, type):
        if dataclasses.is_dataclass(expected) and isinstance(value, dict):
            return True, value
        return isinstance(value, expected), value
    return True, value


def _type_name(expected: Any) -> str:
    if isinstance(expected, type):
        return {"int": "an integer", "float": "a number", "bool": "true or false",
                "str": "a string"}.get(expected.__name__, expected.__name__)
    return str(expected).replace("typing.", "")
