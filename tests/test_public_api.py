"""The public contract of DESIGN.md: every exported name resolves to the promised object."""

import torch

import formerkit

CONTRACT_MODELS = [
    "GPTModel", "GPTForCausalLM", "GPTForSequenceClassification", "BertModel",
    "BertForPreTraining", "BertForMaskedLM", "BertForNextSentencePrediction",
    "BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering",
    "BertForMultipleChoice", "TransformerModel", "TransformerForSeq2Seq", "HARTransformer",
    "TransformerForecaster", "ITransformer", "PatchTST", "Crossformer", "LlamaModel",
    "LlamaForCausalLM", "LlamaForSequenceClassification", "ViTModel",
    "ViTForImageClassification", "ViTMAEForPreTraining",
]


def test_every_export_resolves():
    for name in formerkit.__all__:
        assert getattr(formerkit, name) is not None, name


def test_contract_models_are_modules_with_configs():
    for name in CONTRACT_MODELS:
        cls = getattr(formerkit, name)
        assert issubclass(cls, torch.nn.Module), name
        assert hasattr(cls.config_class, "from_dict"), name
    assert callable(formerkit.train) and callable(formerkit.from_pretrained)
