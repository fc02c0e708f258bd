"""Training: ``Trainer``, ``TrainerConfig``, recipes, and ``formerkit.train(...)``.

``formerkit.train`` is this package and also a function: calling the module runs
``formerkit.train.api.train`` (so ``formerkit.train(recipe, ...)`` works whichever was
imported first).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from formerkit.train.config import TrainerConfig

__all__ = ["Trainer", "TrainerConfig", "TrainingError", "load_recipe", "list_recipes", "train"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``formerkit recipes`` and ``--help`` never import the training loop.
    if name == "Trainer":
        from formerkit.train.trainer import Trainer

        return Trainer
    if name == "TrainingError":
        from formerkit.train.errors import TrainingError

        return TrainingError
    if name in ("load_recipe", "list_recipes"):
        from formerkit.train import recipe

        return getattr(recipe, name)
    if name == "train":
        from formerkit.train.api import train

        return train
    raise AttributeError(f"module 'formerkit.train' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        from formerkit.train.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
