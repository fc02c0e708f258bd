"""Pieces shared by the forecasters: the common config, RevIN-style instance normalisation
(Kim et al. 2022), patching, embeddings and heads, and the ``Forecaster`` base class that
normalises, checks shapes and computes the MSE loss once for every model."""

from __future__ import annotations

import dataclasses

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
from formerkit.models.base import ModelOutput, PreTrainedModel
from formerkit.nn import ACTIVATIONS, BACKENDS, sinusoidal_table
from formerkit.nn.patch import patchify  # noqa: F401  (re-exported: the forecasters patch series)


@dataclasses.dataclass
class ForecastConfigBase(ConfigBase):
    """Fields every forecaster shares.

    Attributes:
        seq_len: lookback L. pred_len: horizon H. n_vars: variates C.
        n_marks: calendar features per step given as ``x_mark`` (0: none are used).
        d_model, n_heads, n_layers, d_ff, dropout, activation: the Transformer.
        revin: normalise each series by its own lookback mean/std and undo it on the output.
        revin_affine: learn a per-variate scale and shift inside RevIN.
        backend: attention backend, ``"sdpa"`` or ``"math"`` (faster for the short token
            sequences of patch and variate tokens on CPU).
    """

    seq_len: int = 96
    pred_len: int = 96
    n_vars: int = 7
    n_marks: int = 0
    d_model: int = 128
    n_heads: int = 8
    n_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.1
    activation: str = "gelu"
    revin: bool = True
    revin_affine: bool = False
    backend: str = "sdpa"

    def validate(self) -> None:
        check_positive(self, "seq_len", "pred_len", "n_vars", "d_model", "n_heads",
                       "n_layers", "d_ff")
        if isinstance(self.n_marks, bool) or not isinstance(self.n_marks, int) \
                or self.n_marks < 0:
            raise ValueError(f"{type(self).__name__}.n_marks must be an int >= 0, "
                             f"got {self.n_marks!r}")
        check_divisible(self, "d_model", "n_heads")
        check_probability(self, "dropout")
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_choice(self, "backend", BACKENDS)


class RevIN(nn.Module):
    """Reversible instance normalisation: each series of each sample is standardised by the
    mean and std of its own lookback window, and the forecast is mapped back with the same
    statistics (optionally with a learned per-variate affine map in between).

    Args:
        n_vars: number of variates C.
        affine: learn ``weight``/``bias`` of shape (C,).
        eps: added to the variance.
    """

    def __init__(self, n_vars: int, *, affine: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(n_vars))
            self.bias = nn.Parameter(torch.zeros(n_vars))

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """x (B, L, C) -> (normalised x (B, L, C), statistics for ``denormalize``)."""
        mean = x.mean(dim=1, keepdim=True).detach()  # (B, 1, C)
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        x = (x - mean) / std
        if self.affine:
            x = x * self.weight + self.bias
        return x, (mean, std)

    def denormalize(self, y: torch.Tensor, stats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """y (B, H, C) in normalised units -> original units of the sample's lookback."""
        mean, std = stats
        if self.affine:
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * std + mean


class TokenEmbedding(nn.Module):
    """Time-step tokens (Informer/Autoformer ``DataEmbedding``): a width-3 circular
    convolution over the C values, plus fixed sinusoidal positions, plus a linear map of the
    calendar features when ``n_marks > 0``.

    Args:
        n_vars: C. d_model: D. n_marks: calendar features F. dropout: on the sum.
        max_len: longest sequence (for the position table).
    """

    def __init__(self, n_vars: int, d_model: int, *, n_marks: int = 0, dropout: float = 0.0,
                 max_len: int = 5000) -> None:
        super().__init__()
        self.value = nn.Conv1d(n_vars, d_model, kernel_size=3, padding=1,
                               padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.value.weight, mode="fan_in", nonlinearity="leaky_relu")
        self.register_buffer("position", sinusoidal_table(max_len, d_model), persistent=False)
        self.marks = nn.Linear(n_marks, d_model, bias=False) if n_marks else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C), x_mark (B, T, F) -> (B, T, D)."""
        h = self.value(x.transpose(1, 2)).transpose(1, 2)  # (B, T, D)
        h = h + self.position[: x.shape[1]].to(h.dtype)
        if self.marks is not None and x_mark is not None:
            h = h + self.marks(x_mark)
        return self.dropout(h)


class FlattenHead(nn.Module):
    """Per-variate head: flatten the variate's P tokens of width D, project to H steps.

    Input (B, C, P, D) -> output (B, H, C)."""

    def __init__(self, n_inputs: int, pred_len: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(n_inputs, pred_len)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = self.linear(h.flatten(start_dim=2))  # (B, C, H)
        return self.dropout(y).transpose(1, 2)  # (B, H, C)


Attentions = dict[str, tuple[torch.Tensor, ...]]


class Forecaster(PreTrainedModel):
    """Base class of the forecasters: ``forward(x, x_mark=None, target=None)``.

    Subclasses implement ``forecast(x, x_mark, y_mark, output_attentions=False) ->
    (prediction (B, H, C), attentions)`` on (RevIN-normalised) inputs, where ``attentions``
    maps ``ModelOutput`` field names (``attentions``, ``cross_attentions``,
    ``encoder_attentions``) to per-layer weights and is empty unless ``output_attentions``;
    this class checks shapes, applies RevIN around it and adds the MSE loss.
    """

    config_class = ForecastConfigBase

    def __init__(self, config: ForecastConfigBase) -> None:
        super().__init__(config)
        self.revin = RevIN(config.n_vars, affine=config.revin_affine) if config.revin else None

    def forecast(self, x: torch.Tensor, x_mark: torch.Tensor | None,
                 y_mark: torch.Tensor | None, output_attentions: bool = False
                 ) -> tuple[torch.Tensor, Attentions]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                target: torch.Tensor | None = None, y_mark: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Forecast the next ``pred_len`` steps.

        Args:
            x: (B, L, C) lookback window.
            x_mark: (B, L, F) calendar features of the lookback (used when ``n_marks > 0``).
            target: (B, H, C) true future; when given, ``loss`` is the MSE.
            y_mark: (B, H, F) calendar features of the horizon (the vanilla decoder uses
                them; others ignore them).
            output_attentions: also return the per-layer, per-head attention weights (computed
                by the ``math`` backend); the shapes are documented by each model's
                ``forecast``. Off, the forward pass is unchanged.

        Returns:
            ``ModelOutput`` with ``prediction`` (B, H, C), ``loss`` and, if requested, the
            attention weights (``attentions`` and, for encoder-decoders,
            ``encoder_attentions`` and ``cross_attentions``).
        """
        config = self.config
        if x.ndim != 3 or x.shape[1] != config.seq_len or x.shape[2] != config.n_vars:
            raise ValueError(f"x must be (B, seq_len={config.seq_len}, n_vars="
                             f"{config.n_vars}), got {tuple(x.shape)}")
        if config.n_marks == 0:
            x_mark = y_mark = None
        elif x_mark is not None and x_mark.shape[-1] != config.n_marks:
            raise ValueError(f"x_mark must have n_marks={config.n_marks} features, got "
                             f"shape {tuple(x_mark.shape)}")
        stats = None
        if self.revin is not None:
            x, stats = self.revin.normalize(x)
        prediction, attentions = self.forecast(x, x_mark, y_mark,
                                               output_attentions=output_attentions)
        if self.revin is not None:
            prediction = self.revin.denormalize(prediction, stats)
        loss = None
        if target is not None:
            if target.shape != prediction.shape:
                raise ValueError(f"target must be {tuple(prediction.shape)}, got "
                                 f"{tuple(target.shape)}")
            loss = F.mse_loss(prediction, target)
        return ModelOutput(loss=loss, prediction=prediction, **attentions)
