"""Built-in tasks; importing this package registers them."""

from formerkit.tasks import bert, causal_lm, forecast, har, seq2seq  # noqa: F401  (register)
from formerkit.tasks.base import Task, TaskSetup, get_task, list_tasks, register_task

__all__ = ["Task", "TaskSetup", "get_task", "list_tasks", "register_task"]
