"""A small convolutional image classifier (LeCun et al. 1998 style): the baseline the Vision
Transformer recipes are measured against, trained by the same task and trainer.

conv 3x3 -> ReLU -> conv 3x3 -> ReLU -> 2x2 max-pool -> flatten -> linear -> ReLU -> dropout ->
linear to the classes. Its arguments and outputs are those of ``ViTForImageClassification``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from formerkit.config import ConfigBase, check_positive, check_probability
from formerkit.models.base import ModelOutput, PreTrainedModel
from formerkit.models.heads import classification_loss
from formerkit.models.registry import register_model
from formerkit.nn.patch import check_image


@dataclasses.dataclass
class ImageCNNConfig(ConfigBase):
    """Attributes:
        image_size, n_channels: square input images (image_size even, for the pooling).
        channels: widths of the two convolutions.
        d_model: width of the hidden linear layer.
        dropout: before the classifier.
        num_labels: classes.
    """

    image_size: int = 8
    n_channels: int = 1
    channels: int = 32
    d_model: int = 128
    dropout: float = 0.1
    num_labels: int = 10

    def validate(self) -> None:
        check_positive(self, "image_size", "n_channels", "channels", "d_model", "num_labels")
        check_probability(self, "dropout")
        if self.image_size % 2:
            raise ValueError(f"ImageCNNConfig.image_size={self.image_size} must be even "
                             "(2x2 pooling)")


@register_model("cnn", config_class=ImageCNNConfig,
                presets={"digits": {}, "tiny": dict(channels=4, d_model=16)},
                description="small convolutional image classifier (baseline for ViT)")
class ImageCNN(PreTrainedModel):
    """Two 3x3 convolutions, a 2x2 max-pool and a two-layer classifier."""

    config_class = ImageCNNConfig

    def __init__(self, config: ImageCNNConfig) -> None:
        super().__init__(config)
        width = config.channels
        self.conv1 = nn.Conv2d(config.n_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * (config.image_size // 2) ** 2, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None
                ) -> ModelOutput:
        """pixel_values (B, C, H, W) at ``image_size`` -> ``logits`` (B, num_labels), and
        ``loss`` (cross-entropy) with ``labels`` (B,)."""
        size = self.config.image_size
        check_image(pixel_values, 1, self.config.n_channels)
        if tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(f"image size {pixel_values.shape[-2]}x{pixel_values.shape[-1]} "
                             f"differs from the model's {size}x{size}")
        x = F.relu(self.conv1(pixel_values.to(self.dtype)))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 2w, H/2, W/2)
        hidden = self.dropout(F.relu(self.fc(x.flatten(1))))
        logits = self.classifier(hidden)
        loss = classification_loss(self.config, logits, labels) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits)
