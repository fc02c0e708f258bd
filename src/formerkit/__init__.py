"""formerkit: the Transformer family on PyTorch, from one set of blocks.

Public names are imported lazily, so ``import formerkit`` (and the CLI) starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
"""The installed formerkit version (also in ``pyproject.toml``)."""

_EXPORTS = {
    # registry and loading
    "create_model": "formerkit.models.registry",
    "list_models": "formerkit.models.registry",
    "register_model": "formerkit.models.registry",
    "from_pretrained": "formerkit.models.auto",
    # GPT
    "GPTConfig": "formerkit.models.gpt",
    "GPTModel": "formerkit.models.gpt",
    "GPTForCausalLM": "formerkit.models.gpt",
    "GPTForSequenceClassification": "formerkit.models.gpt",
    # Llama family (Llama, Qwen2, Mistral)
    "LlamaConfig": "formerkit.models.llama",
    "LlamaModel": "formerkit.models.llama",
    "LlamaForCausalLM": "formerkit.models.llama",
    "LlamaForSequenceClassification": "formerkit.models.llama",
    # BERT
    "BertConfig": "formerkit.models.bert",
    "BertModel": "formerkit.models.bert",
    "BertForPreTraining": "formerkit.models.bert",
    "BertForMaskedLM": "formerkit.models.bert",
    "BertForNextSentencePrediction": "formerkit.models.bert",
    "BertForSequenceClassification": "formerkit.models.bert",
    "BertForTokenClassification": "formerkit.models.bert",
    "BertForQuestionAnswering": "formerkit.models.bert",
    "BertForMultipleChoice": "formerkit.models.bert",
    # encoder-decoder
    "TransformerConfig": "formerkit.models.transformer",
    "TransformerModel": "formerkit.models.transformer",
    "TransformerForSeq2Seq": "formerkit.models.transformer",
    # Vision Transformer and masked autoencoder
    "ViTConfig": "formerkit.models.vit",
    "ViTModel": "formerkit.models.vit",
    "ViTForImageClassification": "formerkit.models.vit",
    "ViTMAEForPreTraining": "formerkit.models.vit_mae",
    # time series
    "HARConfig": "formerkit.models.timeseries.har",
    "HARTransformer": "formerkit.models.timeseries.har",
    "ForecasterConfig": "formerkit.models.timeseries.forecasting",
    "TransformerForecaster": "formerkit.models.timeseries.forecasting",
    "ITransformerConfig": "formerkit.models.timeseries.itransformer",
    "ITransformer": "formerkit.models.timeseries.itransformer",
    "PatchTSTConfig": "formerkit.models.timeseries.patchtst",
    "PatchTST": "formerkit.models.timeseries.patchtst",
    "CrossformerConfig": "formerkit.models.timeseries.crossformer",
    "Crossformer": "formerkit.models.timeseries.crossformer",
    # sentence embeddings
    "SentenceEncoder": "formerkit.embeddings",
    "load_sentence_encoder": "formerkit.embeddings",
    # training
    "train": "formerkit.train.api",
    "Trainer": "formerkit.train.trainer",
    "TrainerConfig": "formerkit.train.config",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'formerkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
