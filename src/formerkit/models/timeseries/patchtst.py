"""PatchTST (Nie et al. 2023, "A Time Series is Worth 64 Words"): channel-independent
patches of each variate as tokens, a Transformer encoder shared by all variates, and a
flatten head per window."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from formerkit.config import check_positive, check_probability
from formerkit.models.registry import register_model
from formerkit.models.timeseries.layers import (
    Attentions,
    FlattenHead,
    ForecastConfigBase,
    Forecaster,
    patchify,
)
from formerkit.nn import Encoder


@dataclasses.dataclass
class PatchTSTConfig(ForecastConfigBase):
    """PatchTST settings; ``patch_len``/``stride`` cut the lookback (padded at the end by
    ``stride`` repeated steps, as in the paper) into P = (L - patch_len) // stride + 2 patches.
    ``head_dropout`` is applied to the flatten head's output."""

    d_model: int = 16
    n_heads: int = 4
    n_layers: int = 3
    d_ff: int = 128
    dropout: float = 0.3
    patch_len: int = 16
    stride: int = 8
    head_dropout: float = 0.0

    def validate(self) -> None:
        super().validate()
        check_positive(self, "patch_len", "stride")
        check_probability(self, "head_dropout")
        if self.patch_len > self.seq_len + self.stride:
            raise ValueError(f"PatchTSTConfig.patch_len={self.patch_len} must be at most "
                             f"seq_len + stride = {self.seq_len + self.stride}")

    @property
    def n_patches(self) -> int:
        return (self.seq_len + self.stride - self.patch_len) // self.stride + 1


@register_model("patchtst", config_class=PatchTSTConfig,
                presets={"paper": {}, "large": {"d_model": 128, "n_heads": 16, "d_ff": 256,
                                                "dropout": 0.2}},
                description="PatchTST: channel-independent patch tokens, flatten head")
class PatchTST(Forecaster):
    """PatchTST forecaster. Each variate is forecast from its own patches by the same
    encoder (channel independence), so the batch of the encoder is B * C."""

    config_class = PatchTSTConfig

    def __init__(self, config: PatchTSTConfig) -> None:
        super().__init__(config)
        self.patch_embedding = nn.Linear(config.patch_len, config.d_model)
        # Learned positions initialised as the paper's code (uniform in +-0.02).
        self.position = nn.Parameter(torch.empty(config.n_patches, config.d_model)
                                     .uniform_(-0.02, 0.02))
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = Encoder.build(
            config.n_layers, d_model=config.d_model, n_heads=config.n_heads,
            d_ff=config.d_ff, dropout=config.dropout, attn_dropout=0.0,
            activation_dropout=config.dropout,
            activation=config.activation, backend=config.backend)
        self.head = FlattenHead(config.d_model * config.n_patches, config.pred_len,
                                dropout=config.head_dropout)

    def forecast(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                 y_mark: torch.Tensor | None = None, output_attentions: bool = False
                 ) -> tuple[torch.Tensor, Attentions]:
        """Forecast each variate from its own patches; calendar features are not used
        (channel independence).

        Args:
            x: (B, L, C) lookback.
            output_attentions: also return the weights.

        Returns:
            (prediction (B, H, C), attentions). With ``output_attentions``, ``attentions`` is
            per encoder layer (B * C, heads, P, P) over the P = ``n_patches`` patches of one
            variate; row b * C + c is sample b, variate c (reshape to (B, C, heads, P, P)).
            Empty dict otherwise.
        """
        config = self.config
        batch, _, n_vars = x.shape
        patches = patchify(x.transpose(1, 2), config.patch_len, config.stride,
                           pad_end=config.stride)  # (B, C, P, patch_len)
        tokens = self.patch_embedding(patches) + self.position  # (B, C, P, D)
        tokens = tokens.reshape(batch * n_vars, config.n_patches, config.d_model)  # (BC, P, D)
        h, attentions = self.encoder(self.dropout(tokens), output_attentions=output_attentions)
        h = h.reshape(batch, n_vars, config.n_patches, config.d_model)  # (B, C, P, D)
        return self.head(h), {"attentions": attentions} if output_attentions else {}
