"""Optional dependencies and the pip extra that installs each one.

A run checks what it will need when it is set up (``require``), so a missing package is one
clear line before any training, not an ``ImportError`` at the first evaluation.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# module -> pip extra of formerkit that installs it
EXTRAS = {
    "sacrebleu": "bleu",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "tensorboard": "tensorboard",
    "sklearn": "vision",
}


class MissingDependencyError(ModuleNotFoundError):
    """An optional package a feature needs is not installed; the message names the extra."""


def missing_message(module: str, purpose: str) -> str:
    """``"sacrebleu is not installed; BLEU scoring needs it: pip install formerkit[bleu]"``."""
    extra = EXTRAS.get(module)
    fix = f"pip install 'formerkit[{extra}]'" if extra else f"pip install {module}"
    return f"{module} is not installed; {purpose} needs it: {fix}"


def is_available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str) -> ModuleType:
    """Import and return ``module``, or raise ``MissingDependencyError`` naming the extra.

    Args:
        module: top-level module name (``"sacrebleu"``).
        purpose: what needs it, for the message (``"BLEU scoring"``).
    """
    if not is_available(module):
        raise MissingDependencyError(missing_message(module, purpose), name=module)
    return importlib.import_module(module)
