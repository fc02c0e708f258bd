"""ONNX export of encoder-decoders as two graphs, the layout of HuggingFace Optimum without a
cache: ``encoder_model.onnx`` and ``decoder_model.onnx`` (one decoding step over the target
so far)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from formerkit.export.common import ExportResult, _Exportable, example_inputs
from formerkit.export.onnx import _add_metadata, _torchscript_export

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"


def _encode(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
            ) -> dict[str, torch.Tensor]:
    backbone = getattr(model, "model", model)  # the seq2seq head, or the base model itself
    memory, _ = backbone.encode(input_ids, attention_mask)
    return {"encoder_hidden_states": memory}


def _decode_step(model: nn.Module, decoder_input_ids: torch.Tensor,
                 encoder_hidden_states: torch.Tensor, attention_mask: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
    out = model(None, attention_mask, decoder_input_ids, encoder_outputs=encoder_hidden_states)
    return {"logits": out.logits if out.logits is not None else out.last_hidden_state}


def seq2seq_examples(model: nn.Module) -> tuple[dict[str, torch.Tensor],
                                                dict[str, torch.Tensor]]:
    """(encoder inputs, decoder inputs) for an encoder-decoder: a padded source batch and a
    target prefix of three tokens starting with ``decoder_start_token_id``."""
    config = model.config
    source, _ = example_inputs(model, length=7)
    source = {k: source[k] for k in ("input_ids", "attention_mask")}
    generator = torch.Generator().manual_seed(1)
    vocab = getattr(config, "target_vocab_size", config.vocab_size)
    target = torch.randint(3 if vocab > 3 else 0, vocab, (source["input_ids"].shape[0], 3),
                           generator=generator)
    target[:, 0] = config.decoder_start_token_id
    with torch.no_grad():
        memory = _encode(model, **source)["encoder_hidden_states"]
    decoder = {"decoder_input_ids": target, "encoder_hidden_states": memory,
               "attention_mask": source["attention_mask"]}
    return source, decoder


def export_seq2seq(model: nn.Module, folder: str | Path, *, verify: bool = True,
                   atol: float = 1e-4) -> ExportResult:
    """Write ``encoder_model.onnx`` and ``decoder_model.onnx`` for an encoder-decoder and
    check both with onnxruntime (see the module docstring for their inputs and outputs)."""
    model = model.eval()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source, decoder = seq2seq_examples(model)
    parts = [
        (folder / ENCODER_FILE, _encode, source, ["encoder_hidden_states"],
         {"input_ids": {0: "batch", 1: "source"}, "attention_mask": {0: "batch", 1: "source"},
          "encoder_hidden_states": {0: "batch", 1: "source"}}),
        (folder / DECODER_FILE, _decode_step, decoder, ["logits"],
         {"decoder_input_ids": {0: "batch", 1: "target"},
          "encoder_hidden_states": {0: "batch", 1: "source"},
          "attention_mask": {0: "batch", 1: "source"}, "logits": {0: "batch", 1: "target"}}),
    ]
    diffs: dict[Path, float | None] = {}
    for file, fn, inputs, output_names, axes in parts:
        wrapper = _Exportable(model, list(inputs), output_names, {}, forward_fn=fn).eval()
        _torchscript_export(wrapper, tuple(inputs.values()), file, list(inputs), output_names,
                            axes)
        _add_metadata(model, file)
        diffs[file] = _check_graph(wrapper, file, inputs, output_names, atol=atol) \
            if verify else None
    return ExportResult(folder, diffs, "onnxruntime", "" if verify else "verify=False")


def _check_graph(wrapper: nn.Module, file: Path, inputs: dict[str, torch.Tensor],
                 output_names: list[str], *, atol: float) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    got = session.run(output_names, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        expected = wrapper(*inputs.values())
    worst = max(float(np.abs(e.float().numpy() - g).max()) for e, g in zip(expected, got))
    if worst > atol:
        raise ValueError(f"ONNX export {file.name} of {type(wrapper.model).__name__} differs "
                         f"from PyTorch by {worst:.3g} (> atol={atol})")
    return worst
