"""iTransformer (Liu et al. 2024, "iTransformer: Inverted Transformers Are Effective for Time
Series Forecasting"): each variate's whole lookback window is one token, attention runs across
variates, and a linear layer maps each token to the horizon."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from formerkit.models.registry import register_model
from formerkit.models.timeseries.layers import Attentions, ForecastConfigBase, Forecaster
from formerkit.nn import Encoder


@dataclasses.dataclass
class ITransformerConfig(ForecastConfigBase):
    """iTransformer settings (the paper's ETTh1 run: d_model = d_ff = 256, 2 layers). Calendar
    features (``n_marks > 0``) become extra tokens, one per feature, as in the paper's code."""

    d_model: int = 256
    n_heads: int = 8
    n_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.1


@register_model("itransformer", config_class=ITransformerConfig,
                presets={"paper": {}, "small": {"d_model": 128, "d_ff": 128}},
                description="iTransformer: variates as tokens, encoder only, linear head")
class ITransformer(Forecaster):
    """Inverted Transformer forecaster: tokens are variates (and calendar features)."""

    config_class = ITransformerConfig

    def __init__(self, config: ITransformerConfig) -> None:
        super().__init__(config)
        self.embedding = nn.Linear(config.seq_len, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = Encoder.build(config.n_layers, final_norm=True, d_model=config.d_model,
                                     n_heads=config.n_heads, d_ff=config.d_ff,
                                     dropout=config.dropout, activation_dropout=config.dropout,
                                     activation=config.activation, backend=config.backend)
        self.projection = nn.Linear(config.d_model, config.pred_len)

    def forecast(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                 y_mark: torch.Tensor | None = None, output_attentions: bool = False
                 ) -> tuple[torch.Tensor, Attentions]:
        """Embed each variate's lookback as a token and attend across the tokens.

        Args:
            x: (B, L, C) lookback. x_mark: (B, L, F) calendar features (extra tokens).
            output_attentions: also return the weights.

        Returns:
            (prediction (B, H, C), attentions). With ``output_attentions``, ``attentions`` is
            per encoder layer (B, heads, N, N) over the N = C (+ F with calendar features)
            variate tokens: row i is how variate i reads the others; the calendar tokens, if
            any, come after the C variates. Empty dict otherwise.
        """
        series = x.transpose(1, 2)  # (B, C, L)
        if x_mark is not None:
            series = torch.cat([series, x_mark.transpose(1, 2)], dim=1)  # (B, C + F, L)
        tokens = self.dropout(self.embedding(series))  # (B, N, D)
        h, attentions = self.encoder(tokens, output_attentions=output_attentions)
        prediction = self.projection(h)[:, : x.shape[2]].transpose(1, 2)  # (B, H, C)
        return prediction, {"attentions": attentions} if output_attentions else {}
