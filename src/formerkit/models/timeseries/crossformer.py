"""Crossformer (Zhang & Yan, ICLR 2023, "Crossformer: Transformer Utilizing Cross-Dimension
Dependency for Multivariate Time Series Forecasting"): dimension-segment-wise (DSW)
embedding, two-stage attention (cross-time, then cross-dimension through router tokens) and a
hierarchical encoder-decoder whose encoder merges adjacent segments scale by scale."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from formerkit.config import check_positive
from formerkit.models.registry import register_model
from formerkit.models.timeseries.layers import ForecastConfigBase, Forecaster, patchify
from formerkit.nn import EncoderLayer, FeedForward, MultiHeadAttention


@dataclasses.dataclass
class CrossformerConfig(ForecastConfigBase):
    """Crossformer settings: segments of ``patch_len`` steps (the paper's seg_len),
    ``win_size`` segments merged per encoder scale, ``n_routers`` router tokens per segment
    (the paper's c). The encoder has ``n_layers`` scales, the decoder ``n_layers + 1`` layers.
    """

    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128
    dropout: float = 0.2
    patch_len: int = 12
    win_size: int = 2
    n_routers: int = 10

    def validate(self) -> None:
        super().validate()
        check_positive(self, "patch_len", "win_size", "n_routers")


class RouterAttention(nn.Module):
    """Cross-dimension stage: ``n_routers`` learned tokens gather from all C variates of a
    segment (sender), then every variate reads the routers back (receiver), so the cost is
    O(C) rather than O(C^2); residual, LayerNorm and feed-forward as in a post-norm layer."""

    def __init__(self, n_segments: int, n_routers: int, d_model: int, n_heads: int, d_ff: int,
                 dropout: float, activation: str, backend: str = "sdpa") -> None:
        super().__init__()
        self.router = nn.Parameter(torch.randn(n_segments, n_routers, d_model))
        self.sender = MultiHeadAttention(d_model, n_heads, dropout=dropout, cross=True,
                                         backend=backend)
        self.receiver = MultiHeadAttention(d_model, n_heads, dropout=dropout, cross=True,
                                           backend=backend)
        self.ff = FeedForward(d_model, d_ff, activation=activation)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, S, C, D): for each segment, attention across the C variates -> same shape."""
        batch, n_segments, n_vars, d_model = x.shape
        send = x.reshape(batch * n_segments, n_vars, d_model)  # (B S, C, D)
        routers = self.router.unsqueeze(0).expand(batch, -1, -1, -1)
        routers = routers.reshape(batch * n_segments, -1, d_model)  # (B S, R, D)
        buffer, _ = self.sender(routers, send)  # (B S, R, D)
        received, _ = self.receiver(send, buffer)  # (B S, C, D)
        h = self.norm1(send + self.dropout(received))
        h = self.norm2(h + self.dropout(self.ff(h)))
        return h.reshape(batch, n_segments, n_vars, d_model)


class TwoStageAttention(nn.Module):
    """Cross-time attention among the S segments of each variate (a post-norm encoder layer),
    then cross-dimension attention among the C variates of each segment via routers."""

    def __init__(self, n_segments: int, config: CrossformerConfig) -> None:
        super().__init__()
        self.time = EncoderLayer(config.d_model, config.n_heads, config.d_ff,
                                 dropout=config.dropout, activation=config.activation,
                                 backend=config.backend)
        self.dimension = RouterAttention(n_segments, config.n_routers, config.d_model,
                                         config.n_heads, config.d_ff, config.dropout,
                                         config.activation, config.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, S, D) -> (B, C, S, D)."""
        batch, n_vars, n_segments, d_model = x.shape
        h, _ = self.time(x.reshape(batch * n_vars, n_segments, d_model))  # (B C, S, D)
        h = h.reshape(batch, n_vars, n_segments, d_model).transpose(1, 2)  # (B, S, C, D)
        return self.dimension(h).transpose(1, 2)  # (B, C, S, D)


class SegmentMerging(nn.Module):
    """Concatenate each ``win_size`` adjacent segments (repeating the last ones to fill the
    final window), LayerNorm, and project back to D: S segments -> ceil(S / win_size)."""

    def __init__(self, d_model: int, win_size: int) -> None:
        super().__init__()
        self.win_size = win_size
        self.norm = nn.LayerNorm(win_size * d_model)
        self.linear = nn.Linear(win_size * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, S, D) -> (B, C, ceil(S / win_size), D)."""
        pad = -x.shape[2] % self.win_size
        if pad:
            x = torch.cat([x, x[:, :, -pad:]], dim=2)
        merged = torch.cat([x[:, :, i::self.win_size] for i in range(self.win_size)], dim=-1)
        return self.linear(self.norm(merged))  # (B, C, S / win, D)


class CrossformerDecoderLayer(nn.Module):
    """Two-stage self-attention over the decoder segments, cross-attention to one encoder
    scale, and a linear layer predicting each segment's ``patch_len`` values."""

    def __init__(self, n_segments: int, config: CrossformerConfig) -> None:
        super().__init__()
        self.self_attn = TwoStageAttention(n_segments, config)
        self.cross_attn = MultiHeadAttention(config.d_model, config.n_heads,
                                             dropout=config.dropout, cross=True,
                                             backend=config.backend)
        self.ff = FeedForward(config.d_model, config.d_model, activation=config.activation)
        self.norm1 = nn.LayerNorm(config.d_model)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.predict = nn.Linear(config.d_model, config.patch_len)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, S_out, D), memory (B, C, S_in, D) -> (x, segment values (B, C, S_out, P))."""
        batch, n_vars, n_segments, d_model = x.shape
        x = self.self_attn(x)
        h = x.reshape(batch * n_vars, n_segments, d_model)  # (B C, S_out, D)
        memory = memory.reshape(batch * n_vars, memory.shape[2], d_model)  # (B C, S_in, D)
        attended, _ = self.cross_attn(h, memory)
        h = self.norm1(h + self.dropout(attended))
        h = self.norm2(h + self.ff(h))
        h = h.reshape(batch, n_vars, n_segments, d_model)  # (B, C, S_out, D)
        return h, self.predict(h)


@register_model("crossformer", config_class=CrossformerConfig,
                presets={"paper": {"d_model": 256, "n_heads": 4, "d_ff": 512, "n_layers": 3}},
                description="Crossformer: DSW embedding, two-stage attention, "
                            "hierarchical encoder-decoder")
class Crossformer(Forecaster):
    """Crossformer forecaster over a (variate x segment) grid of tokens."""

    config_class = CrossformerConfig

    def __init__(self, config: CrossformerConfig) -> None:
        super().__init__(config)
        seg, win, d_model = config.patch_len, config.win_size, config.d_model
        self.in_segments = math.ceil(config.seq_len / seg)
        self.out_segments = math.ceil(config.pred_len / seg)
        self.pad_front = self.in_segments * seg - config.seq_len
        # DSW embedding: each variate's segment -> one D-dim token, plus a learned position
        # per (variate, segment).
        self.segment_embedding = nn.Linear(seg, d_model)
        self.encoder_position = nn.Parameter(
            torch.randn(config.n_vars, self.in_segments, d_model))
        self.pre_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.merges = nn.ModuleList()
        self.encoder = nn.ModuleList()
        n_segments = self.in_segments
        for scale in range(config.n_layers):
            if scale > 0:  # the first scale works on the embedded segments as they are
                n_segments = math.ceil(n_segments / win)
            self.merges.append(SegmentMerging(d_model, win) if scale > 0 and win > 1
                               else nn.Identity())
            self.encoder.append(TwoStageAttention(n_segments, config))
        self.decoder_position = nn.Parameter(
            torch.randn(config.n_vars, self.out_segments, d_model))
        self.decoder = nn.ModuleList(CrossformerDecoderLayer(self.out_segments, config)
                                     for _ in range(config.n_layers + 1))

    def forecast(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                 y_mark: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, C) -> (B, H, C); calendar features are not used."""
        batch, _, n_vars = x.shape
        segments = patchify(x.transpose(1, 2), self.config.patch_len, self.config.patch_len,
                            pad_front=self.pad_front)  # (B, C, S, seg)
        h = self.pre_norm(self.segment_embedding(segments) + self.encoder_position)
        h = self.dropout(h)  # (B, C, S, D)
        scales = [h]
        for merge, block in zip(self.merges, self.encoder):
            h = block(merge(h))
            scales.append(h)
        y = self.decoder_position.unsqueeze(0).expand(batch, -1, -1, -1)  # (B, C, S_out, D)
        prediction = 0
        for layer, memory in zip(self.decoder, scales):
            y, values = layer(y, memory)
            prediction = prediction + values  # (B, C, S_out, seg)
        prediction = prediction.reshape(batch, n_vars, -1)  # (B, C, S_out seg)
        return prediction[:, :, : self.config.pred_len].transpose(1, 2)  # (B, H, C)
