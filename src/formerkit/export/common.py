"""What every exporter shares: example inputs chosen from a model's signature, the wrapper
that turns a model into a plain tensor function, and ``ExportResult``."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

OUTPUT_FIELDS = ("logits", "start_logits", "end_logits", "prediction_logits",
                 "seq_relationship_logits", "prediction", "last_hidden_state", "pooler_output")
SLOTS = ("first", "second", "third", "fourth")


@dataclasses.dataclass
class ExportResult:
    """What an export wrote and how closely it matches PyTorch.

    Attributes:
        path: the ``.onnx`` file, or the directory (seq2seq ONNX pair, HuggingFace).
        max_abs_diff: written file or directory -> largest absolute difference measured
            against PyTorch on example inputs (``None`` where it could not be checked).
        checked_with: ``"onnxruntime"`` or ``"transformers"``.
        note: why a check was skipped, if it was.
    """

    path: Path
    max_abs_diff: dict[Path, float | None]
    checked_with: str
    note: str = ""

    def summary(self) -> list[str]:
        """One line per written file: ``wrote X (max |onnxruntime - PyTorch| = 2.4e-07)``."""
        lines = []
        for file, diff in self.max_abs_diff.items():
            check = f"max |{self.checked_with} - PyTorch| = {diff:.2e}" if diff is not None \
                else f"not checked: {self.note}"
            lines.append(f"wrote {file} ({check})")
        return lines


class _Exportable(nn.Module):
    """Calls ``forward_fn(model, **named inputs)`` with up to four named inputs and returns
    the named output fields as a tuple (explicit parameters, so both exporters see a plain
    signature)."""

    def __init__(self, model: nn.Module, input_names: list[str], output_names: list[str],
                 extra: dict[str, Any], forward_fn: Any = None) -> None:
        super().__init__()
        self.model, self.input_names, self.output_names = model, input_names, output_names
        self.extra = extra
        self.forward_fn = forward_fn or (lambda m, **kw: m(**kw))

    def forward(self, first: torch.Tensor, second: torch.Tensor | None = None,
                third: torch.Tensor | None = None, fourth: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, ...]:
        values = (first, second, third, fourth)[:len(self.input_names)]
        out = self.forward_fn(self.model, **dict(zip(self.input_names, values)), **self.extra)
        return tuple(out[name] if isinstance(out, dict) else getattr(out, name)
                     for name in self.output_names)


def is_seq2seq(model: nn.Module) -> bool:
    """An encoder-decoder over token ids (exported as an encoder and a decoder step)."""
    accepted = inspect.signature(model.forward).parameters
    return "decoder_input_ids" in accepted and "encoder_outputs" in accepted


def example_inputs(model: nn.Module, *, batch: int = 2, length: int | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict[str, dict[int, str]]]:
    """Example inputs for tracing and their dynamic axes, chosen from the model's signature.

    Args:
        model: a HAR, forecasting, image (``pixel_values``) or text model.
        batch: example batch size.
        length: example sequence length (default: ``max_seq_len`` for HAR, 8 for text;
            forecasters always take ``seq_len``).

    Returns:
        (name -> tensor, name -> {axis: axis name}).
    """
    config = model.config
    accepted = inspect.signature(model.forward).parameters
    generator = torch.Generator().manual_seed(0)
    if "inputs" in accepted and hasattr(config, "n_channels"):
        length = length or config.max_seq_len
        inputs = torch.randn(batch, length, config.n_channels, generator=generator)
        if hasattr(model, "normalize"):  # examples in the data's physical range
            inputs = inputs * model.normalize.var.sqrt() + model.normalize.mean
        return {"inputs": inputs}, {"inputs": {0: "batch", 1: "time"}}
    if "pixel_values" in accepted and hasattr(config, "image_size"):
        size = config.image_size  # positions are not resized in the graph: a fixed image size
        pixels = torch.randn(batch, config.n_channels, size, size, generator=generator)
        tensors = {"pixel_values": pixels}
        if "noise" in accepted:  # MAE: a fixed mask, so that two implementations compare
            tensors["noise"] = torch.rand(batch, (size // config.patch_size) ** 2,
                                          generator=generator)
        return tensors, {name: {0: "batch"} for name in tensors}
    if "x" in accepted and hasattr(config, "pred_len"):
        tensors = {"x": torch.randn(batch, config.seq_len, config.n_vars, generator=generator)}
        if getattr(config, "n_marks", 0):
            tensors["x_mark"] = torch.randn(batch, config.seq_len, config.n_marks,
                                            generator=generator)
            tensors["y_mark"] = torch.randn(batch, config.pred_len, config.n_marks,
                                            generator=generator)
        return tensors, {name: {0: "batch"} for name in tensors}
    if "input_ids" not in accepted or not hasattr(config, "vocab_size"):
        raise ValueError(f"export supports HAR, forecasting, image and text (input_ids) "
                         f"models, not {type(model).__name__}")
    length = min(length or 8, getattr(config, "max_seq_len", 8))
    low = 3 if config.vocab_size > 3 else 0
    choices = 2 if type(model).__name__ == "BertForMultipleChoice" else 0
    shape = (batch, choices, length) if choices else (batch, length)
    names = {0: "batch", 1: "choices", 2: "sequence"} if choices else {0: "batch", 1: "sequence"}
    tensors = {"input_ids": torch.randint(low, config.vocab_size, shape, generator=generator)}
    axes = {"input_ids": names}
    if "attention_mask" in accepted:
        mask = torch.ones(shape, dtype=torch.long)
        mask[-1, ..., length // 2:] = 0  # trace the padded path, so the graph applies the mask
        pad = getattr(config, "pad_token_id", None)
        if pad is not None:
            tensors["input_ids"][-1, ..., length // 2:] = pad
        tensors["attention_mask"] = mask
        axes["attention_mask"] = names
    if "token_type_ids" in accepted and getattr(config, "type_vocab_size", 0):
        tensors["token_type_ids"] = torch.zeros(shape, dtype=torch.long)
        axes["token_type_ids"] = names
    return tensors, axes


def _outputs(model: nn.Module, inputs: dict[str, torch.Tensor], extra: dict[str, Any]
             ) -> dict[str, torch.Tensor]:
    """The model's tensor output fields on ``inputs`` (only ``logits`` when a head has it)."""
    with torch.no_grad():
        out = model(**inputs, **extra)
    fields = {name: getattr(out, name) for name in OUTPUT_FIELDS
              if isinstance(getattr(out, name, None), torch.Tensor)}
    return {"logits": fields["logits"]} if "logits" in fields else fields
