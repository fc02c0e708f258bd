"""Vanilla Transformer forecaster (Vaswani et al. 2017, used for forecasting as in Informer,
Zhou et al. 2021): time-step tokens, an encoder over the lookback and a decoder that reads the
last ``label_len`` known steps followed by ``pred_len`` zero placeholders and emits the whole
horizon in one pass."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from formerkit.config import check_positive
from formerkit.models.registry import register_model
from formerkit.models.timeseries.layers import (
    Attentions,
    ForecastConfigBase,
    Forecaster,
    TokenEmbedding,
)
from formerkit.nn import Decoder, Encoder


@dataclasses.dataclass
class ForecasterConfig(ForecastConfigBase):
    """Encoder-decoder settings: ``n_layers`` encoder layers, ``n_decoder_layers`` decoder
    layers, and ``label_len`` known steps that start the decoder input (at most seq_len)."""

    n_decoder_layers: int = 1
    label_len: int = 48

    def validate(self) -> None:
        super().validate()
        check_positive(self, "n_decoder_layers", "label_len")
        if self.label_len > self.seq_len:
            raise ValueError(f"ForecasterConfig.label_len={self.label_len} must be at most "
                             f"seq_len={self.seq_len}")


@register_model("transformer-forecaster", config_class=ForecasterConfig,
                presets={"paper": {"d_model": 512, "n_heads": 8, "d_ff": 2048}},
                description="vanilla encoder-decoder Transformer over time-step tokens")
class TransformerForecaster(Forecaster):
    """Encoder-decoder forecaster with one token per time step (all C values of the step)."""

    config_class = ForecasterConfig

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__(config)
        max_len = max(config.seq_len, config.label_len + config.pred_len)
        kwargs = dict(d_model=config.d_model, n_heads=config.n_heads, d_ff=config.d_ff,
                      dropout=config.dropout, activation_dropout=config.dropout,
                      activation=config.activation, backend=config.backend)
        self.encoder_embedding = TokenEmbedding(config.n_vars, config.d_model,
                                                n_marks=config.n_marks, dropout=config.dropout,
                                                max_len=max_len)
        self.decoder_embedding = TokenEmbedding(config.n_vars, config.d_model,
                                                n_marks=config.n_marks, dropout=config.dropout,
                                                max_len=max_len)
        self.encoder = Encoder.build(config.n_layers, final_norm=True, **kwargs)
        self.decoder = Decoder.build(config.n_decoder_layers, final_norm=True, **kwargs)
        self.projection = nn.Linear(config.d_model, config.n_vars)

    def forecast(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                 y_mark: torch.Tensor | None = None, output_attentions: bool = False
                 ) -> tuple[torch.Tensor, Attentions]:
        """Encode the lookback, decode the known ``label_len`` steps plus placeholders.

        Args:
            x: (B, L, C) lookback. x_mark: (B, L, F), y_mark: (B, H, F) calendar features.
            output_attentions: also return the weights, as the seq2seq ``Transformer`` does.

        Returns:
            (prediction (B, H, C), attentions). With ``output_attentions`` the attentions are
            ``encoder_attentions``: per encoder layer (B, heads, L, L) over the lookback
            steps; ``attentions``: per decoder layer the causal self-attention (B, heads, T, T)
            with T = label_len + pred_len; ``cross_attentions``: per decoder layer
            (B, heads, T, L) from decoder steps to lookback steps. Empty dict otherwise.
        """
        label_len, pred_len = self.config.label_len, self.config.pred_len
        memory, encoder_ws = self.encoder(self.encoder_embedding(x, x_mark),
                                          output_attentions=output_attentions)  # (B, L, D)
        placeholder = x.new_zeros(x.shape[0], pred_len, x.shape[2])
        decoder_input = torch.cat([x[:, -label_len:], placeholder], dim=1)  # (B, T, C)
        decoder_mark = None
        if x_mark is not None and y_mark is not None:
            decoder_mark = torch.cat([x_mark[:, -label_len:], y_mark], dim=1)  # (B, T, F)
        h, self_ws, cross_ws = self.decoder(self.decoder_embedding(decoder_input, decoder_mark),
                                            memory, is_causal=True,
                                            output_attentions=output_attentions)
        prediction = self.projection(h[:, -pred_len:])  # (B, H, C)
        if not output_attentions:
            return prediction, {}
        return prediction, {"encoder_attentions": encoder_ws, "attentions": self_ws,
                            "cross_attentions": cross_ws}
