"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words") and its masked
autoencoder pre-training (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners").

Patches of the image become tokens behind a [CLS] token with learned positions (fixed 2-D
sin-cos in MAE), and run through a pre-norm encoder with a final LayerNorm. MAE encodes only a
random quarter of the patches; a light decoder puts mask tokens in the removed places, restores
the order and predicts every patch's pixels, and the loss is the MSE on the removed patches.
The weights and outputs match HuggingFace's ``ViTModel``, ``ViTForImageClassification`` and
``ViTMAEForPreTraining`` (``formerkit.interop.hf_vit``); MAE lives in
``formerkit.models.vit_mae`` and is re-exported here.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import torch
from torch import nn

from formerkit.config import (
    ConfigBase,
    check_choice,
    check_divisible,
    check_positive,
    check_probability,
)
from formerkit.models.base import ModelOutput, PreTrainedModel, load_state_dict_into
from formerkit.models.bert import PROBLEM_TYPES
from formerkit.models.heads import classification_loss
from formerkit.models.registry import register_model
from formerkit.nn import (
    ACTIVATIONS,
    Encoder,
    PatchEmbedding2d,
    init_weights,
    prepend_token,
    resize_grid_positions,
)
from formerkit.nn.patch import check_image


@dataclasses.dataclass
class ViTConfig(ConfigBase):
    """ViT and ViT-MAE hyperparameters (defaults: ViT-Base/16 at 224 pixels, MAE's decoder).

    Attributes:
        image_size, patch_size: square image side and patch side in pixels (image_size must
            be a multiple of patch_size).
        n_channels: image channels C.
        d_model, n_heads, n_layers, d_ff: encoder sizes.
        dropout: on embeddings and sublayer outputs; ``attn_dropout`` on attention weights.
        activation: feed-forward activation (``gelu`` = exact erf).
        qkv_bias: biases of the query/key/value projections.
        num_labels: classes of ``ViTForImageClassification`` (1 = regression);
            ``problem_type`` as ``BertConfig``.
        mask_ratio: share of patches MAE removes, in (0, 1).
        decoder_d_model, decoder_n_layers, decoder_n_heads, decoder_d_ff: MAE decoder sizes.
        norm_pix_loss: MAE's targets are each patch's pixels normalised by its mean and
            variance.
        init_std: std of the truncated-normal initialisation.
    """

    image_size: int = 224
    patch_size: int = 16
    n_channels: int = 3
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 12
    d_ff: int = 3072
    dropout: float = 0.0
    attn_dropout: float = 0.0
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    num_labels: int = 2
    problem_type: str | None = None
    mask_ratio: float = 0.75
    decoder_d_model: int = 512
    decoder_n_layers: int = 8
    decoder_n_heads: int = 16
    decoder_d_ff: int = 2048
    norm_pix_loss: bool = False
    init_std: float = 0.02

    def validate(self) -> None:
        check_positive(self, "image_size", "patch_size", "n_channels", "d_model", "n_heads",
                       "n_layers", "d_ff", "num_labels", "decoder_d_model", "decoder_n_layers",
                       "decoder_n_heads", "decoder_d_ff", "layer_norm_eps", "init_std")
        check_divisible(self, "d_model", "n_heads")
        check_divisible(self, "decoder_d_model", "decoder_n_heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"ViTConfig.image_size={self.image_size} is not divisible by "
                             f"patch_size={self.patch_size}")
        check_probability(self, "dropout", "attn_dropout")
        check_choice(self, "activation", tuple(ACTIVATIONS))
        if self.problem_type is not None:
            check_choice(self, "problem_type", PROBLEM_TYPES)
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"ViTConfig.mask_ratio must be in (0, 1), got {self.mask_ratio}")

    @property
    def grid(self) -> int:
        """Patches per image side."""
        return self.image_size // self.patch_size


# Sizes of the paper (Table 1) and a tiny and a digits (8x8 grey) setting; MAE's decoder
# keeps its paper defaults (512 wide, 8 layers) unless a preset says otherwise.
PRESETS = {
    "tiny": dict(image_size=32, patch_size=8, d_model=64, n_heads=4, n_layers=2, d_ff=128,
                 decoder_d_model=32, decoder_n_layers=1, decoder_n_heads=4, decoder_d_ff=64),
    "digits": dict(image_size=8, patch_size=2, n_channels=1, num_labels=10, d_model=64,
                   n_heads=4, n_layers=4, d_ff=128, layer_norm_eps=1e-6, decoder_d_model=32,
                   decoder_n_layers=2, decoder_n_heads=4, decoder_d_ff=64),
    "base": dict(),
    "large": dict(d_model=1024, n_heads=16, n_layers=24, d_ff=4096),
    "huge": dict(patch_size=14, d_model=1280, n_heads=16, n_layers=32, d_ff=5120),
}


def vit_encoder(config: ViTConfig, *, decoder: bool = False) -> Encoder:
    """The pre-norm stack with a final LayerNorm (MAE's decoder with its own sizes)."""
    c = config
    sizes = dict(d_model=c.decoder_d_model, n_heads=c.decoder_n_heads, d_ff=c.decoder_d_ff) \
        if decoder else dict(d_model=c.d_model, n_heads=c.n_heads, d_ff=c.d_ff)
    n_layers = c.decoder_n_layers if decoder else c.n_layers
    return Encoder.build(n_layers, final_norm=True, **sizes, dropout=c.dropout,
                         attn_dropout=c.attn_dropout, activation=c.activation, norm_first=True,
                         layer_norm_eps=c.layer_norm_eps, qkv_bias=c.qkv_bias, out_bias=True)


class ViTEmbeddings(nn.Module):
    """Patch embeddings, the [CLS] token and positions (1 + P, D) for the training size."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.patch_embedding = PatchEmbedding2d(config.patch_size, config.n_channels,
                                                config.d_model)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.d_model))
        self.position = nn.Parameter(torch.zeros(1, 1 + config.grid ** 2, config.d_model))
        self.image_size = config.image_size

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> ([CLS] (1, 1, D), patch tokens (B, P, D)), each with its position.

        Raises:
            ValueError: the image is not of the training size and ``interpolate_pos_encoding``
                is off, or its channels or size do not fit the patches.
        """
        height, width = pixel_values.shape[-2:]
        patches = self.patch_embedding(pixel_values)  # (B, P, D)
        grid = (height // self.patch_size, width // self.patch_size)
        if interpolate_pos_encoding:
            patch_positions = resize_grid_positions(self.position[:, 1:], grid)
        elif (height, width) != (self.image_size, self.image_size):
            raise ValueError(f"image size {height}x{width} differs from the model's "
                             f"{self.image_size}x{self.image_size}; pass "
                             "interpolate_pos_encoding=True to resize the positions")
        else:
            patch_positions = self.position[:, 1:]
        return self.cls_token + self.position[:, :1], patches + patch_positions


class ViTPreTrainedModel(PreTrainedModel):
    """Shared init: truncated normal(0, init_std) for linear, convolution, [CLS] and positions;
    zero biases, unit LayerNorms."""

    config_class = ViTConfig
    config: ViTConfig
    registry_name = "vit"

    def _init_vit_weights(self) -> None:
        std = self.config.init_std
        trunc = partial(nn.init.trunc_normal_, mean=0.0, std=std, a=-2 * std, b=2 * std)
        for module in self.modules():
            init_weights(module, scheme="trunc_normal", std=std)
            if isinstance(module, nn.Conv2d):
                trunc(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, ViTEmbeddings):
                trunc(module.cls_token)
                trunc(module.position)

    def check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        check_image(pixel_values, self.config.patch_size, self.config.n_channels)


class ViTModel(ViTPreTrainedModel):
    """The ViT encoder: embeddings, pre-norm ``Encoder`` with final LayerNorm, and a tanh
    pooler over [CLS] (HF's ``ViTModel`` default).

    Args:
        config: a ``ViTConfig``.
        add_pooling_layer: build the pooler (the classifier does not use it, as HF).
    """

    def __init__(self, config: ViTConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = ViTEmbeddings(config)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = vit_encoder(config)
        self.pooler = nn.Linear(config.d_model, config.d_model) if add_pooling_layer else None
        self._init_vit_weights()

    def encode(self, tokens: torch.Tensor, output_attentions: bool = False
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """(B, T, D) embedded tokens -> (normed hidden states (B, T, D), attentions)."""
        return self.encoder(self.dropout(tokens), output_attentions=output_attentions)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False,
                output_attentions: bool = False) -> ModelOutput:
        """Encode a batch of images.

        Args:
            pixel_values: (B, C, H, W) float images (as the image processor normalised them).
            interpolate_pos_encoding: resize the positions for an image of another size.
            output_attentions: return per-layer (B, H, 1 + P, 1 + P) weights.

        Returns:
            ``ModelOutput`` with ``last_hidden_state`` (B, 1 + P, D), ``pooler_output`` (B, D)
            when the pooler exists, and ``attentions``.
        """
        cls, patches = self.embeddings(pixel_values.to(self.dtype), interpolate_pos_encoding)
        x, attentions = self.encode(prepend_token(cls, patches), output_attentions)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return ModelOutput(last_hidden_state=x, pooler_output=pooled, attentions=attentions)


@register_model("vit", config_class=ViTConfig, presets=PRESETS,
                description="Vision Transformer (Dosovitskiy et al. 2021) classifying images "
                            "from the [CLS] token")
class ViTForImageClassification(ViTPreTrainedModel):
    """ViT with a linear classifier on the final [CLS] state."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__(config)
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self._init_vit_weights()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None,
                interpolate_pos_encoding: bool = False,
                output_attentions: bool = False) -> ModelOutput:
        """Inputs as ``ViTModel``; ``labels`` (B,) class ids (float for regression or
        multi-label, see ``problem_type``).

        Returns:
            ``logits`` (B, num_labels), ``loss`` with labels, ``attentions``.
        """
        out = self.vit(pixel_values, interpolate_pos_encoding, output_attentions)
        logits = self.classifier(out.last_hidden_state[:, 0])
        loss = classification_loss(self.config, logits, labels) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits, attentions=out.attentions)


def load_pretrained_encoder(model: ViTPreTrainedModel,
                            source: str | Path | PreTrainedModel) -> None:
    """Initialise ``model``'s ViT encoder (embeddings, layers, final norm) from a ViT or MAE
    (a loaded model, or a formerkit or HuggingFace directory), as fine-tuning after MAE
    pre-training does. Positions are copied as values and stay trainable in a classifier;
    the pooler and heads keep their fresh initialisation.

    Raises:
        ValueError: the source holds no ViT encoder, or a tensor's shape differs.
    """
    from formerkit.models.auto import from_pretrained

    where = source if isinstance(source, (str, Path)) else "the source model"
    if isinstance(source, (str, Path)):
        source = from_pretrained(source)
    encoder = source if isinstance(source, ViTModel) else getattr(source, "vit", None)
    if not isinstance(encoder, ViTModel):
        raise ValueError(f"{where} does not hold a ViT encoder (got {type(source).__name__})")
    target = model if isinstance(model, ViTModel) else model.vit
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
    state.update({k: v for k, v in target.state_dict().items() if k.startswith("pooler.")})
    with torch.no_grad():
        load_state_dict_into(target, state, source=where)


from formerkit.models.vit_mae import (  # noqa: E402  (MAE builds on the classes above)
    MAEDecoder,
    MAEOutput,
    ViTMAEForPreTraining,
)

__all__ = ["MAEDecoder", "MAEOutput", "ViTConfig", "ViTEmbeddings", "ViTForImageClassification",
           "ViTMAEForPreTraining", "ViTModel", "load_pretrained_encoder"]
