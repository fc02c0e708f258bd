"""BERT fine-tuning heads (Devlin et al. 2019, sec. 4): sequence classification / regression,
token classification, extractive question answering and multiple choice.

Losses follow HuggingFace exactly: labels of -100 are ignored, the classification problem type
is chosen from ``num_labels`` and the label dtype, and answer positions outside the sequence
are clamped to an ignored index.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from formerkit.models.base import ModelOutput
from formerkit.models.bert import BertConfig, BertModel, BertPreTrainedModel
from formerkit.models.heads import classification_loss


def _classifier_dropout(config: BertConfig) -> nn.Dropout:
    p = config.dropout if config.classifier_dropout is None else config.classifier_dropout
    return nn.Dropout(p)


class BertForSequenceClassification(BertPreTrainedModel):
    """Pooled output -> dropout -> linear (num_labels). Regression when ``num_labels == 1``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self._init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Inputs as ``BertModel``; ``labels`` (B,) class ids, (B,) floats for regression or
        (B, num_labels) floats for multi-label. Returns ``logits`` (B, num_labels), ``loss``."""
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                        output_attentions=output_attentions)
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = classification_loss(self.config, logits, labels) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits, attentions=out.attentions)


class BertForTokenClassification(BertPreTrainedModel):
    """Per-token labels (NER, POS): hidden states -> dropout -> linear (num_labels)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self._init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Returns ``logits`` (B, T, num_labels); ``labels`` (B, T) with -100 ignored."""
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                        output_attentions=output_attentions)
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.config.num_labels), labels.view(-1),
                                   ignore_index=-100)
        return ModelOutput(loss=loss, logits=logits, attentions=out.attentions)


class BertForQuestionAnswering(BertPreTrainedModel):
    """Extractive QA: a linear layer gives start and end logits for every token."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.d_model, 2)
        self._init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None,
                start_positions: torch.Tensor | None = None,
                end_positions: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Returns ``start_logits`` and ``end_logits`` (B, T). With ``start_positions`` and
        ``end_positions`` (B,) the loss is the mean of the two cross-entropies; positions
        outside [0, T) are clamped to T and ignored, as in HF."""
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                        output_attentions=output_attentions)
        logits = self.qa_outputs(out.last_hidden_state)  # (B, T, 2)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.shape[1]
            start = start_positions.reshape(-1).clamp(0, ignored)
            end = end_positions.reshape(-1).clamp(0, ignored)
            loss = (F.cross_entropy(start_logits, start, ignore_index=ignored)
                    + F.cross_entropy(end_logits, end, ignore_index=ignored)) / 2
        return ModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                           attentions=out.attentions)


class BertForMultipleChoice(BertPreTrainedModel):
    """Scores each (context, choice) pair from its pooled output; softmax across choices."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.d_model, 1)
        self._init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Inputs (B, C, T) for C choices; ``labels`` (B,) the right choice.

        Returns:
            ``logits`` (B, C); ``attentions`` per layer (B * C, H, T, T) as in HF.
        """
        if input_ids.dim() != 3:
            raise ValueError("input_ids must have shape (B, choices, T), got "
                             f"{tuple(input_ids.shape)}")
        batch, choices, length = input_ids.shape

        def flat(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.reshape(-1, t.shape[-1])  # (B * C, T)

        out = self.bert(flat(input_ids), flat(attention_mask), flat(token_type_ids),
                        flat(position_ids), output_attentions=output_attentions)
        logits = self.classifier(self.dropout(out.pooler_output)).view(batch, choices)  # (B, C)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits, attentions=out.attentions)
