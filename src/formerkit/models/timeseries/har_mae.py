"""Masked-autoencoder pre-training of the activity model's encoder on unlabelled windows (the
MAE objective of He et al. 2022 carried over to inertial signals).

A window's steps are grouped into spans of ``span`` consecutive steps, and a random
``mask_ratio`` of the spans is removed: masking single steps at 50 Hz would let the model
interpolate its neighbours. The encoder, the very modules ``HARTransformer`` uses, sees only
the visible steps with their positions; a light decoder puts a learned mask token in every
removed step, adds its own positions and predicts the normalised signal of every step. The
loss is the mean squared error over the removed steps, in the units of the stored input
normalisation (so every channel counts alike).

``load_pretrained_backbone`` starts an activity classifier from such a model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from formerkit.config import check_positive
from formerkit.models.base import PreTrainedModel, load_state_dict_into
from formerkit.models.registry import register_model
from formerkit.models.timeseries.har import HARBackbone, HARConfig, HARTransformer
from formerkit.models.vit import MAEOutput
from formerkit.nn import Encoder, LearnedPositionalEmbedding, init_weights, random_masking
from formerkit.nn.patch import check_mask_ratio, unshuffle


@dataclasses.dataclass
class HARMAEConfig(HARConfig):
    """``HARConfig`` (the encoder's sizes) plus the pre-training's own settings.

    Attributes:
        mask_ratio: share of spans removed, in (0, 1).
        span: consecutive steps masked together; windows must be a multiple of it.
        decoder_d_model, decoder_n_heads, decoder_n_layers, decoder_d_ff: the light
            decoder's sizes (dropped after pre-training).
    """

    mask_ratio: float = 0.5
    span: int = 8
    decoder_d_model: int = 32
    decoder_n_heads: int = 2
    decoder_n_layers: int = 1
    decoder_d_ff: int = 64

    def validate(self) -> None:
        super().validate()
        check_positive(self, "span", "decoder_d_model", "decoder_n_heads", "decoder_n_layers",
                       "decoder_d_ff")
        check_mask_ratio(self.mask_ratio)
        if self.decoder_d_model % self.decoder_n_heads:
            raise ValueError(f"HARMAEConfig.decoder_d_model={self.decoder_d_model} must be "
                             f"divisible by decoder_n_heads={self.decoder_n_heads}")
        if self.max_seq_len % self.span:
            raise ValueError(f"HARMAEConfig.max_seq_len={self.max_seq_len} must be a multiple "
                             f"of span={self.span}")


@register_model("har-mae", config_class=HARMAEConfig,
                description="masked-autoencoder pre-training of the activity model's encoder",
                presets={"tiny": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32,
                                  "decoder_d_model": 16, "decoder_d_ff": 32},
                         "small": {}})
class HARMAEForPreTraining(HARBackbone):
    """The activity model's encoder on the visible spans, a light decoder, and the MSE of the
    normalised signal over the removed steps."""

    config_class = HARMAEConfig

    def __init__(self, config: HARMAEConfig) -> None:
        super().__init__(config)
        width = config.decoder_d_model
        self.decoder_embed = nn.Linear(config.d_model, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.decoder_position = LearnedPositionalEmbedding(config.max_seq_len, width)
        self.decoder = Encoder.build(
            config.decoder_n_layers, final_norm=True, d_model=width,
            n_heads=config.decoder_n_heads, d_ff=config.decoder_d_ff, dropout=0.0,
            activation=config.activation, norm_first=True,
            layer_norm_eps=config.layer_norm_eps)
        self.reconstruct = nn.Linear(width, config.n_channels)
        self.apply(lambda module: init_weights(module, scheme="trunc_normal", std=0.02))
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, inputs: torch.Tensor, noise: torch.Tensor | None = None,
                mask_ratio: float | None = None, output_attentions: bool = False
                ) -> MAEOutput:
        """Mask spans, encode the rest, reconstruct every step.

        Args:
            inputs: (B, T, C) raw signals, T a multiple of ``span`` and <= max_seq_len.
            noise: (B, T / span) values deciding which spans stay visible (lowest first);
                uniform random by default.
            mask_ratio: override ``config.mask_ratio`` for this call.
            output_attentions: the encoder's per-layer weights over the visible steps.

        Returns:
            ``MAEOutput`` with ``loss``, ``logits`` (B, T, C) the reconstructed normalised
            signal, ``mask`` (B, T) 1 = removed step, ``ids_restore`` (B, T / span) and
            ``attentions``.
        """
        self.check_inputs(inputs)
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        check_mask_ratio(ratio)
        batch, length, _ = inputs.shape
        span, width = self.config.span, self.config.d_model
        if length % span:
            raise ValueError(f"window of {length} steps is not a multiple of span={span}")
        n_spans = length // span
        if int(n_spans * (1 - ratio)) < 1:
            raise ValueError(f"mask_ratio={ratio} leaves none of the {n_spans} spans visible")
        target = self.normalize(inputs.float())  # (B, T, C)
        spans = self.embed_steps(target).reshape(batch, n_spans, span * width)
        kept, span_mask, ids_restore = random_masking(spans, ratio, noise)
        visible = self.dropout(kept.reshape(batch, -1, width))  # (B, keep * span, D)
        latent, attentions = self.encoder(visible, output_attentions=output_attentions)
        x = self.decoder_embed(latent).reshape(batch, kept.shape[1], -1)  # (B, keep, span*Dd)
        x = unshuffle(x, self.mask_token.repeat(1, 1, span), ids_restore)
        x = x.reshape(batch, length, -1) + self.decoder_position.weight[:length]
        x, _ = self.decoder(x)
        logits = self.reconstruct(x)  # (B, T, C)
        mask = span_mask.repeat_interleave(span, dim=1)  # (B, T)
        per_step = (logits - target).pow(2).mean(dim=-1)  # (B, T)
        loss = (per_step * mask).sum() / mask.sum()
        return MAEOutput(loss=loss, logits=logits, mask=mask, ids_restore=ids_restore,
                         attentions=attentions)


def backbone_config(config: HARConfig, **changes: object) -> HARConfig:
    """The ``HARConfig`` part of a (pre-training) config, with ``changes`` applied."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(HARConfig)}
    return HARConfig(**{**fields, **changes})


def load_pretrained_backbone(model: HARTransformer,
                             source: str | Path | PreTrainedModel) -> None:
    """Initialise ``model``'s normalisation, step embedding, positions and encoder from a
    pre-trained ``har-mae`` (or ``har``) model or its directory; the classifier keeps its
    fresh initialisation.

    Raises:
        ValueError: the source is not an activity model, or a tensor's shape differs.
    """
    from formerkit.models.auto import from_pretrained

    where = source if isinstance(source, (str, Path)) else "the source model"
    if isinstance(source, (str, Path)):
        source = from_pretrained(source)
    if not isinstance(source, HARBackbone):
        raise ValueError(f"{where} holds a {type(source).__name__}, not an activity model "
                         "(har or har-mae)")
    own = model.state_dict()
    state = {name: tensor for name, tensor in source.state_dict().items()
             if name.split(".")[0] in ("normalize", "embed", "position", "encoder")}
    state.update({name: tensor for name, tensor in own.items()
                  if name.startswith("classifier.")})
    with torch.no_grad():
        load_state_dict_into(model, state, source=where)
