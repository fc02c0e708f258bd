"""Masked autoencoder pre-training of a ViT (He et al. 2022, "Masked Autoencoders Are
Scalable Vision Learners"): fixed 2-D sin-cos positions, the encoder on a random
``1 - mask_ratio`` of the patches, a light decoder that fills the removed places with a mask
token and predicts every patch's pixels, and the MSE over the removed patches. Matches
HuggingFace's ``ViTMAEForPreTraining``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from formerkit.models.base import ModelOutput
from formerkit.models.registry import register_model
from formerkit.models.vit import PRESETS, ViTConfig, ViTModel, ViTPreTrainedModel, vit_encoder
from formerkit.nn import (
    image_from_patches,
    image_patches,
    init_weights,
    prepend_token,
    random_masking,
    sincos_2d_table,
    unshuffle,
)
from formerkit.nn.patch import check_mask_ratio


@dataclasses.dataclass
class MAEOutput(ModelOutput):
    """``ModelOutput`` plus MAE's ``mask`` (B, P), 1 = removed, and ``ids_restore`` (B, P)."""

    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None


class MAEDecoder(nn.Module):
    """Encoder width -> decoder width, mask tokens in the removed places, positions, a small
    pre-norm stack and a linear prediction of each patch's p * p * C pixels."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.embed = nn.Linear(config.d_model, config.decoder_d_model)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_d_model))
        table = sincos_2d_table(config.grid, config.decoder_d_model)
        self.position = nn.Parameter(_with_cls_row(table), requires_grad=False)
        self.encoder = vit_encoder(config, decoder=True)
        self.pred = nn.Linear(config.decoder_d_model,
                              config.patch_size ** 2 * config.n_channels)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor,
                interpolate_pos_encoding: bool = False,
                output_attentions: bool = False
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """latent (B, 1 + P_keep, D) encoder states -> (pixels (B, P, p * p * C), weights)."""
        x = self.embed(latent)  # (B, 1 + keep, Dd)
        x = torch.cat([x[:, :1], unshuffle(x[:, 1:], self.mask_token, ids_restore)], dim=1)
        position = self.position
        if interpolate_pos_encoding and x.shape[1] != position.shape[1]:
            # As HuggingFace: the flattened patch positions are resized as a 1-D sequence
            # (bicubic along P), not on the 2-D grid the encoder uses.
            patches = position[:, 1:].transpose(1, 2)[:, :, None]  # (1, Dd, 1, P0)
            patches = F.interpolate(patches, size=(1, x.shape[1] - 1), mode="bicubic",
                                    align_corners=False)
            position = torch.cat([position[:, :1], patches[:, :, 0].transpose(1, 2)], dim=1)
        x, attentions = self.encoder(x + position, output_attentions=output_attentions)
        return self.pred(x)[:, 1:], attentions  # (B, P, p * p * C) without [CLS]


def _with_cls_row(table: torch.Tensor) -> torch.Tensor:
    """(P, D) patch positions -> (1, 1 + P, D) with a zero row for [CLS] (MAE)."""
    return torch.cat([table.new_zeros(1, table.shape[1]), table])[None]


@register_model("vit-mae", config_class=ViTConfig, presets=PRESETS,
                description="masked autoencoder pre-training of a ViT (He et al. 2022)")
class ViTMAEForPreTraining(ViTPreTrainedModel):
    """MAE: the ViT encoder on a random subset of patches (fixed sin-cos positions), the
    ``MAEDecoder`` and the pixel MSE over the removed patches."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__(config)
        if config.d_model % 4 or config.decoder_d_model % 4:
            raise ValueError(f"ViTMAEForPreTraining needs d_model={config.d_model} and "
                             f"decoder_d_model={config.decoder_d_model} divisible by 4 "
                             "(2-D sin-cos positions)")
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.decoder = MAEDecoder(config)
        self._init_mae_weights()

    def _init_mae_weights(self) -> None:
        # MAE's code: xavier-uniform linears (the patch projection as one (D, C*p*p) matrix),
        # normal(0.02) [CLS] and mask token, fixed sin-cos positions.
        for module in self.modules():
            init_weights(module, scheme="xavier")
        embeddings = self.vit.embeddings
        nn.init.xavier_uniform_(embeddings.patch_embedding.projection.weight.view(
            self.config.d_model, -1))
        nn.init.zeros_(embeddings.patch_embedding.projection.bias)
        nn.init.normal_(embeddings.cls_token, std=self.config.init_std)
        nn.init.normal_(self.decoder.mask_token, std=self.config.init_std)
        table = _with_cls_row(sincos_2d_table(self.config.grid, self.config.d_model))
        embeddings.position = nn.Parameter(table, requires_grad=False)

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, P, p * p * C), the reconstruction targets' layout."""
        self.check_pixel_values(pixel_values)
        return image_patches(pixel_values, self.config.patch_size)

    def unpatchify(self, patches: torch.Tensor,
                   image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, P, p * p * C) -> (B, C, H, W); ``image_size`` defaults to the config's."""
        size = image_size or (self.config.image_size, self.config.image_size)
        return image_from_patches(patches, self.config.patch_size, self.config.n_channels, size)

    def forward(self, pixel_values: torch.Tensor, noise: torch.Tensor | None = None,
                interpolate_pos_encoding: bool = False, output_attentions: bool = False,
                mask_ratio: float | None = None) -> MAEOutput:
        """Mask, encode, reconstruct.

        Args:
            pixel_values: (B, C, H, W) images.
            noise: (B, P) values deciding which patches are kept (lowest first); uniform
                random by default.
            interpolate_pos_encoding: images of another size than the config's.
            output_attentions: the encoder's per-layer weights over [CLS] + kept patches.
            mask_ratio: override ``config.mask_ratio`` for this call.

        Returns:
            ``MAEOutput`` with ``loss`` (MSE on removed patches), ``logits`` (B, P, p * p * C)
            predicted pixels, ``mask`` (B, P) 1 = removed, ``ids_restore`` (B, P),
            ``attentions``.
        """
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        check_mask_ratio(ratio)
        pixel_values = pixel_values.to(self.dtype)
        cls, patches = self.vit.embeddings(pixel_values, interpolate_pos_encoding)
        kept, mask, ids_restore = random_masking(patches, ratio, noise)
        latent, attentions = self.vit.encode(prepend_token(cls, kept), output_attentions)
        logits, _ = self.decoder(latent, ids_restore, interpolate_pos_encoding)
        target = image_patches(pixel_values, self.config.patch_size)  # (B, P, p * p * C)
        if self.config.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = (logits - target).pow(2).mean(dim=-1)  # (B, P)
        loss = (per_patch * mask).sum() / mask.sum()
        return MAEOutput(loss=loss, logits=logits, mask=mask, ids_restore=ids_restore,
                         attentions=attentions)
