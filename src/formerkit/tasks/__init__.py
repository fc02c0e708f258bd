"""Built-in tasks; importing this package registers them."""

from formerkit.tasks import (  # noqa: F401  (register)
    bert,
    causal_lm,
    forecast,
    har,
    har_mae,
    image_classification,
    seq2seq,
)
from formerkit.tasks.base import Task, TaskSetup, get_task, list_tasks, register_task

__all__ = ["Task", "TaskSetup", "get_task", "list_tasks", "register_task"]
