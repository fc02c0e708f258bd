"""Model families. Importing this package registers every family with the registry."""

from formerkit.models.base import ModelOutput, PreTrainedModel
from formerkit.models.bert import (
    BertConfig,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from formerkit.models.cnn import ImageCNN, ImageCNNConfig
from formerkit.models.gpt import GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel
from formerkit.models.llama import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaModel,
)
from formerkit.models.registry import create_model, list_models, register_model
from formerkit.models.timeseries import (
    Crossformer,
    CrossformerConfig,
    ForecasterConfig,
    ITransformer,
    ITransformerConfig,
    PatchTST,
    PatchTSTConfig,
    TransformerForecaster,
)
from formerkit.models.timeseries.har import HARConfig, HARTransformer
from formerkit.models.timeseries.har_mae import HARMAEConfig, HARMAEForPreTraining
from formerkit.models.transformer import (
    TransformerConfig,
    TransformerForSeq2Seq,
    TransformerModel,
)
from formerkit.models.vit import ViTConfig, ViTForImageClassification, ViTModel
from formerkit.models.vit_mae import ViTMAEForPreTraining

__all__ = [
    "BertConfig", "BertForMaskedLM", "BertForMultipleChoice", "BertForNextSentencePrediction",
    "BertForPreTraining", "BertForQuestionAnswering", "BertForSequenceClassification",
    "BertForTokenClassification", "BertModel", "Crossformer", "CrossformerConfig",
    "ForecasterConfig", "GPTConfig", "GPTForCausalLM", "GPTForSequenceClassification",
    "GPTModel", "HARConfig", "HARMAEConfig", "HARMAEForPreTraining", "HARTransformer",
    "ITransformer", "ITransformerConfig",
    "LlamaConfig", "LlamaForCausalLM", "LlamaForSequenceClassification", "LlamaModel",
    "ImageCNN", "ImageCNNConfig", "ModelOutput", "PatchTST", "PatchTSTConfig", "PreTrainedModel",
    "TransformerConfig",
    "TransformerForSeq2Seq", "TransformerForecaster", "TransformerModel", "ViTConfig",
    "ViTForImageClassification", "ViTMAEForPreTraining", "ViTModel", "create_model",
    "list_models", "register_model",
]
