"""Crossformer (Zhang & Yan, ICLR 2023, "Crossformer: Transformer Utilizing Cross-Dimension
Dependency for Multivariate Time Series Forecasting"): dimension-segment-wise (DSW)
embedding, two-stage attention (cross-time, then cross-dimension through router tokens) and a
hierarchical encoder-decoder whose encoder merges adjacent segments scale by scale.

With ``output_attentions=True`` every two-stage attention contributes three weight tensors, in
the order of ``TWO_STAGE`` (see ``Crossformer.forecast`` for the shapes), and
``Crossformer.split_stages`` regroups such a flat tuple by stage."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from formerkit.config import check_positive
from formerkit.models.registry import register_model
from formerkit.models.timeseries.layers import (
    Attentions,
    ForecastConfigBase,
    Forecaster,
    patchify,
)
from formerkit.nn import EncoderLayer, FeedForward, MultiHeadAttention

# The weights one two-stage attention returns, in order: cross-time self-attention among the
# segments of a variate, routers reading the variates, variates reading the routers.
TWO_STAGE = ("time", "sender", "receiver")


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

    def forward(self, x: torch.Tensor, *, need_weights: bool = False
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """For each segment, attention across the C variates through the routers.

        Args:
            x: (B, S, C, D).
            need_weights: also return the attention weights (``math`` backend).

        Returns:
            (x (B, S, C, D), weights): weights are ``None`` or (sender (B * S, heads, R, C),
            receiver (B * S, heads, C, R)), row b * S + s for sample b, segment s.
        """
        batch, n_segments, n_vars, d_model = x.shape
        send = x.reshape(batch * n_segments, n_vars, d_model)  # (B S, C, D)
        routers = self.router.unsqueeze(0).expand(batch, -1, -1, -1)
        routers = routers.reshape(batch * n_segments, -1, d_model)  # (B S, R, D)
        buffer, sender_w = self.sender(routers, send, need_weights=need_weights)  # (B S, R, D)
        received, receiver_w = self.receiver(send, buffer,
                                             need_weights=need_weights)  # (B S, C, D)
        h = self.norm1(send + self.dropout(received))
        h = self.norm2(h + self.dropout(self.ff(h)))
        weights = (sender_w, receiver_w) if need_weights else None
        return h.reshape(batch, n_segments, n_vars, d_model), weights


class TwoStageAttention(nn.Module):
    """Cross-time attention among the S segments of each variate (a post-norm encoder layer),
    then cross-dimension attention among the C variates of each segment via routers."""

    def __init__(self, n_segments: int, config: CrossformerConfig) -> None:
        super().__init__()
        self.time = EncoderLayer.build(config.d_model, config.n_heads, config.d_ff,
                                       dropout=config.dropout, activation=config.activation,
                                       backend=config.backend)
        self.dimension = RouterAttention(n_segments, config.n_routers, config.d_model,
                                         config.n_heads, config.d_ff, config.dropout,
                                         config.activation, config.backend)

    def forward(self, x: torch.Tensor, *, need_weights: bool = False
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Cross-time then cross-dimension attention.

        Args:
            x: (B, C, S, D).
            need_weights: also return the attention weights (``math`` backend).

        Returns:
            (x (B, C, S, D), weights): weights are ``None`` or, in ``TWO_STAGE`` order,
            (time (B * C, heads, S, S), sender (B * S, heads, R, C), receiver
            (B * S, heads, C, R)).
        """
        batch, n_vars, n_segments, d_model = x.shape
        h, time_w = self.time(x.reshape(batch * n_vars, n_segments, d_model),
                              need_weights=need_weights)  # (B C, S, D)
        h = h.reshape(batch, n_vars, n_segments, d_model).transpose(1, 2)  # (B, S, C, D)
        h, router_ws = self.dimension(h, need_weights=need_weights)
        weights = (time_w, *router_ws) if need_weights else None
        return h.transpose(1, 2), weights  # (B, C, S, D)


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

    def forward(self, x: torch.Tensor, memory: torch.Tensor, *, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None,
                           torch.Tensor | None]:
        """Decode one scale.

        Args:
            x: (B, C, S_out, D) decoder segments. memory: (B, C, S_in, D) one encoder scale.
            need_weights: also return the attention weights (``math`` backend).

        Returns:
            (x (B, C, S_out, D), segment values (B, C, S_out, patch_len), two-stage weights
            as ``TwoStageAttention`` or ``None``, cross weights (B * C, heads, S_out, S_in) or
            ``None``).
        """
        batch, n_vars, n_segments, d_model = x.shape
        x, self_ws = self.self_attn(x, need_weights=need_weights)
        h = x.reshape(batch * n_vars, n_segments, d_model)  # (B C, S_out, D)
        memory = memory.reshape(batch * n_vars, memory.shape[2], d_model)  # (B C, S_in, D)
        attended, cross_w = self.cross_attn(h, memory, need_weights=need_weights)
        h = self.norm1(h + self.dropout(attended))
        h = self.norm2(h + self.ff(h))
        h = h.reshape(batch, n_vars, n_segments, d_model)  # (B, C, S_out, D)
        return h, self.predict(h), self_ws, cross_w


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

    @staticmethod
    def split_stages(weights: tuple[torch.Tensor, ...]) -> dict[str, tuple[torch.Tensor, ...]]:
        """Regroup a flat tuple of two-stage weights (``encoder_attentions`` or
        ``attentions``) as ``{"time": per-layer, "sender": per-layer, "receiver":
        per-layer}``."""
        if len(weights) % len(TWO_STAGE):
            raise ValueError(f"weights must hold {len(TWO_STAGE)} tensors per layer "
                             f"{TWO_STAGE}, got {len(weights)}")
        return {stage: tuple(weights[i::len(TWO_STAGE)]) for i, stage in enumerate(TWO_STAGE)}

    def forecast(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                 y_mark: torch.Tensor | None = None, output_attentions: bool = False
                 ) -> tuple[torch.Tensor, Attentions]:
        """Forecast from the (variate x segment) grid; calendar features are not used.

        Args:
            x: (B, L, C) lookback.
            output_attentions: also return the weights.

        Returns:
            (prediction (B, H, C), attentions). With ``output_attentions``, S_l is the
            number of segments at encoder scale l (S_0 = ``in_segments``, then
            ceil(S_{l-1} / win_size)), S_out = ``out_segments`` and R = ``n_routers``:

            - ``encoder_attentions``: three tensors per encoder scale l, flat, in
                ``TWO_STAGE`` order: time (B * C, heads, S_l, S_l) among the segments of one
                variate (row b * C + c), sender (B * S_l, heads, R, C) routers reading the
                variates of one segment (row b * S_l + s), receiver (B * S_l, heads, C, R)
                variates reading the routers.
            - ``attentions``: the same three per decoder layer (n_layers + 1 layers) with
                S_out segments.
            - ``cross_attentions``: per decoder layer j, (B * C, heads, S_out, S_j) from the
                decoder segments to encoder scale j (j = 0: the embedded input segments).

            Empty dict otherwise.
        """
        batch, _, n_vars = x.shape
        segments = patchify(x.transpose(1, 2), self.config.patch_len, self.config.patch_len,
                            pad_front=self.pad_front)  # (B, C, S, seg)
        h = self.pre_norm(self.segment_embedding(segments) + self.encoder_position)
        h = self.dropout(h)  # (B, C, S, D)
        scales = [h]
        encoder_ws, decoder_ws, cross_ws = [], [], []
        for merge, block in zip(self.merges, self.encoder):
            h, weights = block(merge(h), need_weights=output_attentions)
            scales.append(h)
            encoder_ws.extend(weights or ())
        y = self.decoder_position.unsqueeze(0).expand(batch, -1, -1, -1)  # (B, C, S_out, D)
        prediction = 0
        for layer, memory in zip(self.decoder, scales):
            y, values, weights, cross_w = layer(y, memory, need_weights=output_attentions)
            prediction = prediction + values  # (B, C, S_out, seg)
            decoder_ws.extend(weights or ())
            cross_ws.append(cross_w)
        prediction = prediction.reshape(batch, n_vars, -1)  # (B, C, S_out seg)
        prediction = prediction[:, :, : self.config.pred_len].transpose(1, 2)  # (B, H, C)
        if not output_attentions:
            return prediction, {}
        return prediction, {"encoder_attentions": tuple(encoder_ws),
                            "attentions": tuple(decoder_ws), "cross_attentions": tuple(cross_ws)}
