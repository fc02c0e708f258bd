"""Human activity recognition Transformer on raw inertial signals: per-step embedding, learned
positions and a ViT-style pre-norm encoder (Dosovitskiy et al. 2021) labelling every time step.

Raw accelerometer/gyroscope values (B, T, C) in physical units go through an input
normalisation whose per-channel mean and variance come from the training data and live in the
model as buffers, so a deployed (or ONNX-exported) model needs no outside preprocessing.
"""

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
from formerkit.models.registry import register_model
from formerkit.nn import ACTIVATIONS, Encoder, LearnedPositionalEmbedding, init_weights


@dataclasses.dataclass
class HARConfig(ConfigBase):
    """Configuration of ``HARTransformer``.

    Attributes:
        n_channels: input channels C (UCI HAR: 9).
        n_classes: activities.
        max_seq_len: longest window the learned positions cover.
        d_model, n_heads, n_layers, d_ff: encoder sizes.
        dropout: on embeddings and sublayer outputs.
        attn_dropout: on attention weights (ViT: 0; also keeps torch's fused attention).
        activation: feed-forward activation (ViT: ``gelu``).
        layer_norm_eps: LayerNorm epsilon.
        label_smoothing: weight moved from the true class to a uniform target in the loss.
        class_names: optional activity names, index = class id.
        channel_names: optional channel names in input order (used to read CSV headers).
    """

    n_channels: int = 9
    n_classes: int = 6
    max_seq_len: int = 128
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 4
    d_ff: int = 128
    dropout: float = 0.1
    attn_dropout: float = 0.0
    activation: str = "gelu"
    layer_norm_eps: float = 1e-5
    label_smoothing: float = 0.0
    class_names: list[str] | None = None
    channel_names: list[str] | None = None

    def validate(self) -> None:
        check_positive(self, "n_channels", "n_classes", "max_seq_len", "d_model", "n_heads",
                       "n_layers", "d_ff", "layer_norm_eps")
        check_divisible(self, "d_model", "n_heads")
        check_probability(self, "dropout", "attn_dropout", "label_smoothing")
        check_choice(self, "activation", tuple(ACTIVATIONS))
        for name, size in (("class_names", self.n_classes), ("channel_names", self.n_channels)):
            names = getattr(self, name)
            if names is not None and len(names) != size:
                raise ValueError(f"HARConfig.{name} has {len(names)} entries, expected {size} "
                                 f"(one per {'class' if name == 'class_names' else 'channel'})")


class InputNormalization(nn.Module):
    """(x - mean) / sqrt(var + eps) per channel, with statistics stored as buffers.

    The buffers start as mean 0, variance 1 (identity); ``set_statistics`` fills them from
    training data before training starts.
    """

    def __init__(self, n_channels: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(n_channels))
        self.register_buffer("var", torch.ones(n_channels))

    @torch.no_grad()
    def set_statistics(self, data: torch.Tensor) -> None:
        """Compute per-channel mean and (population) variance from ``data`` (..., C)."""
        flat = data.reshape(-1, data.shape[-1]).double()  # (N, C)
        self.mean.copy_(flat.mean(dim=0))
        self.var.copy_(flat.var(dim=0, unbiased=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * torch.rsqrt(self.var + self.eps)


class HARBackbone(PreTrainedModel):
    """What the activity model and its masked-autoencoder pre-training share: input
    normalisation, the linear step embedding, learned positions and the pre-norm encoder,
    under the same parameter names (so pre-trained weights move over by name)."""

    config_class = HARConfig

    def __init__(self, config: HARConfig) -> None:
        super().__init__(config)
        self.normalize = InputNormalization(config.n_channels)
        self.embed = nn.Linear(config.n_channels, config.d_model)
        self.position = LearnedPositionalEmbedding(config.max_seq_len, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = Encoder.build(
            config.n_layers, final_norm=True, d_model=config.d_model, n_heads=config.n_heads,
            d_ff=config.d_ff, dropout=config.dropout, attn_dropout=config.attn_dropout,
            activation=config.activation,
            norm_first=True, layer_norm_eps=config.layer_norm_eps)

    def embed_steps(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalised signals (B, T, C) -> step embeddings plus positions (B, T, D)."""
        return self.embed(normalized) + self.position.weight[:normalized.shape[1]]

    def check_inputs(self, inputs: torch.Tensor) -> None:
        """Raise ``ValueError`` for a wrong shape, channel count, length or NaN/inf values."""
        if inputs.dim() != 3:
            raise ValueError(f"inputs must be (batch, time, channels), got shape "
                             f"{tuple(inputs.shape)}")
        if inputs.shape[-1] != self.config.n_channels:
            raise ValueError(f"inputs have {inputs.shape[-1]} channels, the model expects "
                             f"n_channels={self.config.n_channels}")
        if inputs.shape[1] > self.config.max_seq_len:
            raise ValueError(f"window of {inputs.shape[1]} steps is longer than the model "
                             f"supports (max_seq_len={self.config.max_seq_len}); label long "
                             "recordings with `label_steps`")
        if inputs.shape[1] == 0:
            raise ValueError("inputs have 0 time steps")
        if not bool(torch.isfinite(inputs).all()):
            raise ValueError("inputs contain NaN or infinite values; fill or drop the missing "
                             "samples first")


@register_model("har", config_class=HARConfig, description="activity recognition Transformer "
                "labelling every step of raw inertial signals",
                presets={"tiny": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32},
                         "small": {}, "base": {"d_model": 128, "n_layers": 6, "d_ff": 256}})
class HARTransformer(HARBackbone):
    """Sequence-to-sequence activity labelling: class scores for every time step.

    normalise -> linear step embedding + learned positions -> pre-norm encoder (GELU) ->
    final LayerNorm -> linear classifier. Softmax appears only inside the loss.
    """

    def __init__(self, config: HARConfig) -> None:
        super().__init__(config)
        self.classifier = nn.Linear(config.d_model, config.n_classes)
        # ViT: every linear layer (and the position table) trunc-normal(0.02) cut at 2 std.
        self.apply(lambda module: init_weights(module, scheme="trunc_normal", std=0.02))

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Label every step of raw windows.

        Args:
            inputs: (B, T, C) float raw signals in physical units, T <= max_seq_len.
            labels: (B, T) class per step (-100 ignored) or (B,) one class per window
                (applied to every step).
            output_attentions: also return per-layer attention weights (B, H, T, T).

        Returns:
            ``ModelOutput`` with ``logits`` (B, T, n_classes) and ``loss`` (mean per-step
            cross-entropy) when ``labels`` are given.
        """
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()
                or torch.onnx.is_in_onnx_export()):
            self.check_inputs(inputs)
        length = inputs.shape[1]
        x = self.dropout(self.embed_steps(self.normalize(inputs.float())))  # (B, T, D)
        x, attentions = self.encoder(x, output_attentions=output_attentions)
        logits = self.classifier(x)  # (B, T, n_classes)
        loss = None
        if labels is not None:
            if labels.dim() == 1:
                labels = labels[:, None].expand(-1, length)  # (B, T)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                   ignore_index=-100,
                                   label_smoothing=self.config.label_smoothing)
        return ModelOutput(loss=loss, logits=logits, attentions=attentions)

    @staticmethod
    def window_logits(logits: torch.Tensor) -> torch.Tensor:
        """Window-level scores: the mean of per-step scores, (B, T, n_classes) -> (B, n)."""
        return logits.mean(dim=1)

    @torch.no_grad()
    def predict_windows(self, inputs: torch.Tensor) -> torch.Tensor:
        """One class id per window, (B, T, C) -> (B,)."""
        return self.window_logits(self(inputs).logits).argmax(dim=-1)

    @torch.no_grad()
    def label_steps(self, signal: torch.Tensor, *, window: int | None = None,
                    stride: int | None = None, batch_size: int = 256) -> torch.Tensor:
        """Per-step class probabilities for a recording of any length.

        Overlapping windows slide over the recording (the last one is aligned to its end) and
        every step averages the softmax of all windows that cover it.

        Args:
            signal: (T, C) raw recording.
            window: window length (default ``max_seq_len``).
            stride: hop between windows (default ``window // 4``).
            batch_size: windows per forward pass.

        Returns:
            (T, n_classes) probabilities.
        """
        if signal.dim() != 2 or signal.shape[0] == 0:
            raise ValueError(f"signal must be (time, channels), got {tuple(signal.shape)}")
        window = min(window or self.config.max_seq_len, signal.shape[0])
        stride = stride or max(1, window // 4)
        if stride <= 0 or window <= 0:
            raise ValueError(f"window and stride must be positive, got {window} and {stride}")
        length = signal.shape[0]
        starts = list(range(0, length - window + 1, stride))
        if starts[-1] != length - window:
            starts.append(length - window)
        probs = torch.zeros(length, self.config.n_classes)
        counts = torch.zeros(length, 1)
        for i in range(0, len(starts), batch_size):
            chunk = starts[i:i + batch_size]
            batch = torch.stack([signal[s:s + window] for s in chunk])  # (b, W, C)
            window_probs = self(batch).logits.float().softmax(dim=-1).cpu()  # (b, W, n)
            for start, p in zip(chunk, window_probs):
                probs[start:start + window] += p
                counts[start:start + window] += 1
        return probs / counts
