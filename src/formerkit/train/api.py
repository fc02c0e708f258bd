"""``formerkit.train(recipe_or_dict, output_dir=..., **overrides)``: a recipe run from Python,
the same as ``formerkit train`` on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from formerkit.train.recipe import Recipe, load_recipe


def run_recipe(recipe: Recipe, output_dir: str | Path | None = None, *, restart: bool = False,
               resume_with_changes: bool = False) -> dict[str, float]:
    """Build the recipe's task and train it; returns the final metrics.

    ``restart`` and ``resume_with_changes`` are the ``Trainer``'s: start afresh in a directory
    that holds an earlier run (its files are moved aside), or resume it with other settings.
    """
    from formerkit.train.loggers import require_reporters
    from formerkit.train.trainer import Trainer

    output_dir = Path(output_dir) if output_dir is not None else Path("runs") / recipe.name
    require_reporters(recipe.trainer.report_to)  # before the data is loaded
    settings = recipe.settings()  # before setup: a task may fill in fields of its own
    setup = recipe.setup()
    raw = {"name": recipe.name, **recipe.raw}
    trainer = Trainer.from_setup(setup, recipe.trainer, output_dir, recipe=raw,
                                 settings=settings, restart=restart,
                                 resume_with_changes=resume_with_changes)
    return trainer.fit()


def train(recipe: str | Path | dict[str, Any] = "gpt-shakespeare-char",
          output_dir: str | Path | None = None, *, overrides: list[str] | None = None,
          restart: bool = False, resume_with_changes: bool = False,
          **section_overrides: Any) -> dict[str, float]:
    """Train a recipe and return its final metrics (``val_*``, ``test_*``).

    Args:
        recipe: a shipped recipe name, a YAML path, or the sections as a dict
            (``{"model": {...}, "data": {...}, "task": {...}, "trainer": {...}}``).
        output_dir: run directory (default ``runs/RECIPE``); an existing run resumes.
        overrides: command-line style ``["trainer.max_steps=200"]``.
        restart: start afresh although ``output_dir`` holds an earlier run (needed when none
            of its checkpoints verifies); its files are moved to ``output_dir/previous/``.
        resume_with_changes: resume although these settings differ from those the
            checkpoint was trained with (otherwise an error lists the differences).
        **section_overrides: ``trainer={"max_steps": 200}``, ``trainer__lr=1e-3`` or
            ``**{"model.n_layers": 2}``.

    Example:
        >>> import formerkit
        >>> metrics = formerkit.train("gpt-shakespeare-char", output_dir="runs/demo",
        ...                           trainer={"max_steps": 100})
    """
    return run_recipe(load_recipe(recipe, overrides, **section_overrides), output_dir,
                      restart=restart, resume_with_changes=resume_with_changes)
