"""Model families. Importing this package registers every family with the registry."""

from formerkit.models.base import ModelOutput, PreTrainedModel
from formerkit.models.registry import create_model, list_models, register_model

# Each family module registers itself on import (one line per family).

__all__ = ["ModelOutput", "PreTrainedModel", "create_model", "list_models", "register_model"]
