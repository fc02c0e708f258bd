"""Model families. Importing this package registers every family with the registry."""

from formerkit.models.base import ModelOutput, PreTrainedModel

# Each family module registers itself on import (one line per family).
from formerkit.models.bert import *  # noqa: F401,F403,E402
from formerkit.models.gpt import GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel  # noqa: F401,E501
from formerkit.models.registry import create_model, list_models, register_model
from formerkit.models.timeseries import *  # noqa: F401,F403,E402  (forecasters)
from formerkit.models.timeseries.har import HARConfig, HARTransformer  # noqa: F401
from formerkit.models.transformer import TransformerConfig, TransformerForSeq2Seq, TransformerModel  # noqa: F401,E501

__all__ = ["ModelOutput", "PreTrainedModel", "create_model", "list_models", "register_model"]
