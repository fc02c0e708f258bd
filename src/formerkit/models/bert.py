"""BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding"): embeddings, post-norm encoder, pooler and the pre-training heads.

The fine-tuning heads (sequence / token classification, question answering, multiple choice)
live in ``formerkit.models.bert_heads`` and are re-exported here.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from formerkit.config import (
    ConfigBase,
    check_choice,
    check_divisible,
    check_positive,
    check_probability,
)
from formerkit.models.base import ModelOutput, PreTrainedModel, load_state_dict_into
from formerkit.models.registry import register_model
from formerkit.nn import (
    ACTIVATIONS,
    Encoder,
    LearnedPositionalEmbedding,
    get_activation,
    init_weights,
    make_attention_mask,
    positions,
)
from formerkit.nn.linear import apply_linear
from formerkit.nn.losses import token_cross_entropy

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


@dataclasses.dataclass
class BertConfig(ConfigBase):
    """BERT hyperparameters (defaults: BERT-base, uncased vocabulary).

    Attributes:
        vocab_size, d_model, n_heads, n_layers, d_ff: sizes.
        dropout: hidden dropout (embeddings, residual branches); ``attn_dropout`` on attention
            weights; ``classifier_dropout`` before classification heads (default ``dropout``).
        max_seq_len: number of learned positions.
        activation: feed-forward and MLM-transform activation (``gelu`` = exact erf).
        type_vocab_size: number of segments (token_type_ids).
        num_labels: classes of the classification heads (1 = regression).
        problem_type: ``regression``, ``single_label_classification`` or
            ``multi_label_classification``; ``None`` chooses as HuggingFace does.
        init_std: standard deviation of the normal weight init.
    """

    vocab_size: int = 30522
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 12
    d_ff: int = 3072
    dropout: float = 0.1
    attn_dropout: float = 0.1
    max_seq_len: int = 512
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    type_vocab_size: int = 2
    pad_token_id: int = 0
    num_labels: int = 2
    problem_type: str | None = None
    classifier_dropout: float | None = None
    init_std: float = 0.02

    def validate(self) -> None:
        check_positive(self, "vocab_size", "d_model", "n_heads", "n_layers", "d_ff",
                       "max_seq_len", "type_vocab_size", "num_labels", "layer_norm_eps",
                       "init_std")
        check_divisible(self, "d_model", "n_heads")
        check_probability(self, "dropout", "attn_dropout")
        if self.classifier_dropout is not None:
            check_probability(self, "classifier_dropout")
        check_choice(self, "activation", tuple(ACTIVATIONS))
        if self.problem_type is not None:
            check_choice(self, "problem_type", PROBLEM_TYPES)
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"BertConfig.pad_token_id={self.pad_token_id} must be in "
                             f"[0, vocab_size={self.vocab_size})")


# Google's BERT miniatures (Turc et al. 2019) and the paper's base/large sizes.
PRESETS = {
    "tiny": dict(d_model=128, n_heads=2, n_layers=2, d_ff=512),
    "mini": dict(d_model=256, n_heads=4, n_layers=4, d_ff=1024),
    "small": dict(d_model=512, n_heads=8, n_layers=4, d_ff=2048),
    "medium": dict(d_model=512, n_heads=8, n_layers=8, d_ff=2048),
    "base": dict(d_model=768, n_heads=12, n_layers=12, d_ff=3072),
    "large": dict(d_model=1024, n_heads=16, n_layers=24, d_ff=4096),
}


class BertEmbeddings(nn.Module):
    """token + position + segment embeddings, summed, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(config.vocab_size, config.d_model,
                                  padding_idx=config.pad_token_id)
        self.position = LearnedPositionalEmbedding(config.max_seq_len, config.d_model)
        self.segment = nn.Embedding(config.type_vocab_size, config.d_model)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, token_type_ids, position_ids (B, T) -> (B, T, D)."""
        if position_ids is None:
            position_ids = positions(input_ids.shape[1], device=input_ids.device)  # (1, T)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.token(input_ids) + self.segment(token_type_ids) + self.position(position_ids)
        return self.dropout(self.norm(x))


class BertPreTrainedModel(PreTrainedModel):
    """Shared init for every BERT class: normal(0, init_std) weights, zero biases."""

    config_class = BertConfig
    registry_name = "bert"

    def _init_weights(self) -> None:
        self.apply(partial(init_weights, scheme="normal", std=self.config.init_std))


@register_model("bert", config_class=BertConfig, presets=PRESETS,
                description="BERT encoder (Devlin et al. 2019) with MLM + NSP pre-training")
class BertModel(BertPreTrainedModel):
    """The BERT encoder: embeddings, post-norm ``Encoder`` and a tanh pooler over token 0.

    Args:
        config: a ``BertConfig``.
        add_pooling_layer: build the pooler (heads that do not use it leave it out, as HF).
    """

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = Encoder.build(
            config.n_layers, d_model=config.d_model, n_heads=config.n_heads, d_ff=config.d_ff,
            dropout=config.dropout, attn_dropout=config.attn_dropout,
            activation=config.activation, norm_first=False,
            layer_norm_eps=config.layer_norm_eps)
        self.pooler = nn.Linear(config.d_model, config.d_model) if add_pooling_layer else None
        self._init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> ModelOutput:
        """Encode a batch.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, T), 1 = token, 0 = padding.
            token_type_ids: (B, T) segment ids (default all 0).
            position_ids: (B|1, T) positions (default 0..T-1).
            output_attentions: return per-layer (B, H, T, T) weights (math backend).

        Returns:
            ``ModelOutput`` with ``last_hidden_state`` (B, T, D), ``pooler_output`` (B, D) when
            the pooler exists, and ``attentions``.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (B, T), got {tuple(input_ids.shape)}")
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        mask = make_attention_mask(attention_mask, query_len=input_ids.shape[1])
        x, attentions = self.encoder(x, mask=mask, output_attentions=output_attentions)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return ModelOutput(last_hidden_state=x, pooler_output=pooled, attentions=attentions)


class BertLMHead(nn.Module):
    """MLM head: dense -> activation -> LayerNorm -> decoder tied to the token embeddings."""

    def __init__(self, config: BertConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.activation = get_activation(config.activation)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.d_model, config.vocab_size)
        self.decoder.weight = embedding.weight  # tied, as in the paper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, V) logits."""
        hidden = self.norm(self.activation(apply_linear(self.dense, x)))
        return apply_linear(self.decoder, hidden)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the vocabulary at positions whose label is not -100."""
    return token_cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def nsp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, 2) is-next logits against labels (0 = is next, 1 = random)."""
    return F.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1))


class BertForPreTraining(BertPreTrainedModel):
    """BERT with both pre-training heads: masked LM over tokens and next-sentence prediction
    over the pooled output. The loss is the sum of the losses whose labels are given."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config)
        self.mlm = BertLMHead(config, self.bert.embeddings.token)
        self.nsp = nn.Linear(config.d_model, 2)
        self._init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                next_sentence_label: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Inputs as ``BertModel``; ``labels`` (B, T) MLM targets (-100 ignored),
        ``next_sentence_label`` (B,) 0 = B follows A, 1 = B is random.

        Returns:
            ``prediction_logits`` (B, T, V), ``seq_relationship_logits`` (B, 2), ``loss``.
        """
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                        output_attentions=output_attentions)
        prediction = self.mlm(out.last_hidden_state)
        relationship = self.nsp(out.pooler_output)
        losses = []
        if labels is not None:
            losses.append(mlm_loss(prediction, labels))
        if next_sentence_label is not None:
            losses.append(nsp_loss(relationship, next_sentence_label))
        return ModelOutput(loss=sum(losses) if losses else None, prediction_logits=prediction,
                           seq_relationship_logits=relationship, attentions=out.attentions)


class BertForMaskedLM(BertPreTrainedModel):
    """BERT with the masked-LM head (no pooler)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.mlm = BertLMHead(config, self.bert.embeddings.token)
        self._init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Returns ``logits`` (B, T, V) and, with ``labels`` (B, T), the MLM ``loss``."""
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                        output_attentions=output_attentions)
        logits = self.mlm(out.last_hidden_state)
        loss = mlm_loss(logits, labels) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits, attentions=out.attentions)


class BertForNextSentencePrediction(BertPreTrainedModel):
    """BERT with the next-sentence head on the pooled output."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config)
        self.nsp = nn.Linear(config.d_model, 2)
        self._init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_attentions: bool = False,
                next_sentence_label: torch.Tensor | None = None) -> ModelOutput:
        """Returns ``logits`` (B, 2); ``labels`` (or ``next_sentence_label``) (B,) give the loss."""
        labels = next_sentence_label if labels is None else labels
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                        output_attentions=output_attentions)
        logits = self.nsp(out.pooler_output)
        loss = nsp_loss(logits, labels) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits, attentions=out.attentions)


def load_pretrained_encoder(model: BertPreTrainedModel,
                            source: str | Path | PreTrainedModel) -> None:
    """Initialise ``model``'s encoder from a BERT of any head (a loaded model, or a formerkit
    or HuggingFace directory), as fine-tuning starts from pre-training. The pooler is copied
    when both have one; the target's heads keep their fresh initialisation.

    Raises:
        ValueError: naming the tensor when the saved encoder's shapes differ from ``model``'s.
    """
    from formerkit.models.auto import from_pretrained

    path = source if isinstance(source, (str, Path)) else "the source model"
    if isinstance(source, (str, Path)):
        source = from_pretrained(source)
    source_bert = source if isinstance(source, BertModel) else getattr(source, "bert", None)
    if source_bert is None:
        raise ValueError(f"{path} does not hold a BERT model (got {type(source).__name__})")
    target = model if isinstance(model, BertModel) else model.bert
    state = {k: v for k, v in source_bert.state_dict().items() if not k.startswith("pooler.")}
    for name, tensor in target.state_dict().items():
        if name.startswith("pooler."):
            state[name] = source_bert.state_dict().get(name, tensor)
    load_state_dict_into(target, state, source=path)


from formerkit.models.bert_heads import (  # noqa: E402  (heads build on the classes above)
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)

__all__ = [
    "BertConfig", "BertEmbeddings", "BertForMaskedLM", "BertForMultipleChoice",
    "BertForNextSentencePrediction", "BertForPreTraining", "BertForQuestionAnswering",
    "BertForSequenceClassification", "BertForTokenClassification", "BertLMHead", "BertModel",
    "load_pretrained_encoder",
]
