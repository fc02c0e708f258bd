"""Built-in tasks; importing this package registers them."""

from formerkit.tasks import (
    bert,  # noqa: F401,E402
    causal_lm,  # noqa: F401,E402
    forecast,  # noqa: F401,E402
    har,  # noqa: F401,E402
    seq2seq,  # noqa: F401,E402
)
from formerkit.tasks.base import Task, TaskSetup, get_task, list_tasks, register_task

__all__ = ["Task", "TaskSetup", "get_task", "list_tasks", "register_task"]
