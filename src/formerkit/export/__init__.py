"""Export of trained models, each checked against PyTorch: ONNX (Open Neural Network Exchange,
opset 17) run in onnxruntime, and HuggingFace directories loaded by ``transformers``.

ONNX covers every family, with names taken from the models' own arguments and output fields:

- text models that take ``input_ids`` (every BERT head, GPT without a KV cache): inputs
  ``input_ids``, ``attention_mask`` (and ``token_type_ids`` for BERT), dynamic batch and
  sequence axes; ``BertForMultipleChoice`` takes (batch, choices, sequence);
- ``HARTransformer``: raw signals (B, T, C) -> per-step ``logits``, T dynamic up to
  ``max_seq_len``;
- ``ViTForImageClassification`` / ``ViTModel``: ``pixel_values`` (B, C, H, W) at the
  config's image size -> ``logits`` (or hidden states), dynamic batch;
- forecasters (``TransformerForecaster``, ``ITransformer``, ``PatchTST``, ``Crossformer``): the
  fixed-length lookback ``x`` (B, seq_len, n_vars) (and calendar features ``x_mark``/``y_mark``
  when the model uses them) -> ``prediction`` (B, pred_len, n_vars), dynamic batch;
- seq2seq (``TransformerForSeq2Seq``): ``encoder_model.onnx`` (``input_ids``,
  ``attention_mask`` -> ``encoder_hidden_states``) and ``decoder_model.onnx``, one decoding
  step over the target so far (``decoder_input_ids``, ``encoder_hidden_states``,
  ``attention_mask`` -> ``logits``), the layout of HuggingFace Optimum without a cache.

Two ONNX exporters: ``"torchscript"`` (default; fast, traces the padded example so the exported
graph always applies the attention mask) and ``"dynamo"`` (``torch.export`` + onnxscript; works
for models without data-dependent branches, such as the HAR model).
"""

from __future__ import annotations

from pathlib import Path

from formerkit.export.common import ExportResult, example_inputs, is_seq2seq
from formerkit.export.hf import export_hf
from formerkit.export.onnx import (
    OPSET,
    _export_single,
    benchmark_onnx,
    check_onnx,
    export_module,
)
from formerkit.export.seq2seq import DECODER_FILE, ENCODER_FILE, export_seq2seq
from formerkit.extras import require

FORMATS = ("onnx", "hf")
EXPORTERS = ("torchscript", "dynamo")

__all__ = ["DECODER_FILE", "ENCODER_FILE", "EXPORTERS", "FORMATS", "OPSET", "ExportResult",
           "benchmark_onnx", "check_onnx", "example_inputs", "export", "export_hf",
           "export_model", "export_module", "export_seq2seq", "is_seq2seq"]


def export(model_dir: str | Path, format: str = "onnx", output: str | Path | None = None, *,
           exporter: str = "torchscript", verify: bool = True, atol: float = 1e-4
           ) -> ExportResult:
    """Export a saved model and measure how closely the export matches PyTorch.

    Args:
        model_dir: a model directory (``save_pretrained``) or a run directory holding ``model/``.
        format: ``"onnx"`` or ``"hf"`` (a directory ``transformers`` loads: BERT, GPT-2,
            Marian, Llama-family and ViT models).
        output: ONNX: the ``.onnx`` file (default ``model_dir/model.onnx``), or for seq2seq a
            folder (default ``model_dir``) that receives ``encoder_model.onnx`` and
            ``decoder_model.onnx``. HF: the directory (default ``model_dir`` + ``-hf``).
        exporter: ONNX exporter, ``"torchscript"`` or ``"dynamo"``.
        verify: check the export (onnxruntime, or ``transformers`` when installed) and raise
            ``ValueError`` if it differs from PyTorch by more than ``atol``.

    Returns:
        An ``ExportResult`` with the written path(s) and the measured differences.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {list(EXPORTERS)}, got {exporter!r}")
    if format == "onnx":
        for module in ("onnx", "onnxruntime"):
            require(module, "ONNX export")
    from formerkit.models.auto import from_pretrained

    model_dir = Path(model_dir)
    if (model_dir / "model" / "config.json").is_file():
        model_dir = model_dir / "model"
    model = from_pretrained(model_dir).eval()
    if format == "hf":
        target = Path(output) if output is not None else \
            model_dir.with_name(model_dir.name + "-hf")
        return export_hf(model, target, verify=verify, atol=atol)
    if is_seq2seq(model):
        folder = Path(output) if output is not None else model_dir
        if folder.suffix == ".onnx":
            raise ValueError(f"{type(model).__name__} exports an encoder and a decoder: give "
                             f"--output a folder, not {folder}")
        return export_seq2seq(model, folder, verify=verify, atol=atol)
    file = Path(output) if output is not None else model_dir / "model.onnx"
    file.parent.mkdir(parents=True, exist_ok=True)
    worst = _export_single(model, file, exporter=exporter, verify=verify, atol=atol)
    return ExportResult(file, {file: worst}, "onnxruntime", "" if verify else "verify=False")


def export_model(model_dir: str | Path, format: str = "onnx", output: str | Path | None = None,
                 *, exporter: str = "torchscript", verify: bool = True,
                 atol: float = 1e-4) -> Path:
    """``export(...)`` returning only the written path (see ``export``)."""
    return export(model_dir, format, output, exporter=exporter, verify=verify, atol=atol).path
