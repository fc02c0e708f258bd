"""ONNX export of trained models (Open Neural Network Exchange, opset 17) with dynamic batch
and sequence axes, checked against PyTorch with onnxruntime.

Supported: ``HARTransformer`` (raw signals (B, T, C) -> per-step ``logits``; T is dynamic up to
``max_seq_len``), and the text models that take ``input_ids`` (BERT heads, GPT without a KV
cache): inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids`` for BERT), outputs
named as the model's output fields (``logits``, or ``start_logits``/``end_logits``, ...).

Two exporters: ``"torchscript"`` (default; fast, traces the padded example so the exported graph
always applies the attention mask) and ``"dynamo"`` (``torch.export`` + onnxscript; works for
models without data-dependent branches, such as the HAR model).
"""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FORMATS = ("onnx",)
EXPORTERS = ("torchscript", "dynamo")
OPSET = 17
OUTPUT_FIELDS = ("logits", "start_logits", "end_logits", "prediction_logits",
                 "seq_relationship_logits", "last_hidden_state", "pooler_output")


class _Exportable(nn.Module):
    """Calls the model with up to three named inputs and returns its output fields as a
    tuple (explicit parameters, so both exporters see a plain signature)."""

    def __init__(self, model: nn.Module, input_names: list[str], output_names: list[str],
                 extra: dict[str, Any]) -> None:
        super().__init__()
        self.model, self.input_names, self.output_names = model, input_names, output_names
        self.extra = extra

    def forward(self, first: torch.Tensor, second: torch.Tensor | None = None,
                third: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        values = (first, second, third)[:len(self.input_names)]
        out = self.model(**dict(zip(self.input_names, values)), **self.extra)
        return tuple(getattr(out, name) for name in self.output_names)


def example_inputs(model: nn.Module, *, batch: int = 2, length: int | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict[str, dict[int, str]]]:
    """Example inputs for tracing and their dynamic axes, chosen from the model's signature.

    Args:
        model: a HAR or text model.
        batch: example batch size.
        length: example sequence length (default: ``max_seq_len`` for HAR, 8 for text).

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
    if "input_ids" not in accepted or not hasattr(config, "vocab_size"):
        raise ValueError(f"export supports HAR and text (input_ids) models, not "
                         f"{type(model).__name__}")
    length = min(length or 8, config.max_seq_len)
    low = 3 if config.vocab_size > 3 else 0
    tensors = {"input_ids": torch.randint(low, config.vocab_size, (batch, length),
                                          generator=generator)}
    axes = {"input_ids": {0: "batch", 1: "sequence"}}
    if "attention_mask" in accepted:
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[-1, length // 2:] = 0  # trace the padded path, so the graph applies the mask
        pad = getattr(config, "pad_token_id", None)
        if pad is not None:
            tensors["input_ids"][-1, length // 2:] = pad
        tensors["attention_mask"] = mask
        axes["attention_mask"] = {0: "batch", 1: "sequence"}
    if "token_type_ids" in accepted and getattr(config, "type_vocab_size", 0):
        tensors["token_type_ids"] = torch.zeros(batch, length, dtype=torch.long)
        axes["token_type_ids"] = {0: "batch", 1: "sequence"}
    return tensors, axes


def _outputs(model: nn.Module, inputs: dict[str, torch.Tensor], extra: dict[str, Any]
             ) -> dict[str, torch.Tensor]:
    """The model's tensor output fields on ``inputs`` (only ``logits`` when a head has it)."""
    with torch.no_grad():
        out = model(**inputs, **extra)
    fields = {name: getattr(out, name) for name in OUTPUT_FIELDS
              if isinstance(getattr(out, name, None), torch.Tensor)}
    return {"logits": fields["logits"]} if "logits" in fields else fields


def export_model(model_dir: str | Path, format: str = "onnx", output: str | Path | None = None,
                 *, exporter: str = "torchscript", verify: bool = True,
                 atol: float = 1e-4) -> Path:
    """Export a saved model to ONNX.

    Args:
        model_dir: a model directory (``save_pretrained``) or a run directory holding ``model/``.
        format: only ``"onnx"``.
        output: the ``.onnx`` file (default ``model_dir/model.onnx``).
        exporter: ``"torchscript"`` or ``"dynamo"``.
        verify: run the exported file with onnxruntime on the example inputs and raise if it
            differs from PyTorch by more than ``atol``.

    Returns:
        The written path.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {list(EXPORTERS)}, got {exporter!r}")
    from formerkit.models.auto import from_pretrained

    model_dir = Path(model_dir)
    if (model_dir / "model" / "config.json").is_file():
        model_dir = model_dir / "model"
    model = from_pretrained(model_dir).eval()
    output = Path(output) if output is not None else model_dir / "model.onnx"
    output.parent.mkdir(parents=True, exist_ok=True)
    export_module(model, output, exporter=exporter, verify=verify, atol=atol)
    return output


def export_module(model: nn.Module, output: str | Path, *, exporter: str = "torchscript",
                  verify: bool = True, atol: float = 1e-4) -> list[str]:
    """Export an in-memory model (see ``export_model``); returns the output names."""
    model = model.eval()
    inputs, axes = example_inputs(model)
    extra = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters \
        else {}
    outputs = _outputs(model, inputs, extra)
    input_names, output_names = list(inputs), list(outputs)
    # Output axes that follow the sequence length: those that change when one step is removed.
    shorter = _outputs(model, {k: v[:, :-1] for k, v in inputs.items()}, extra)
    sequence = "time" if "inputs" in inputs else "sequence"
    output_axes = {name: {0: "batch", **{axis: sequence for axis in range(1, value.dim())
                                         if shorter[name].shape[axis] != value.shape[axis]}}
                   for name, value in outputs.items()}
    wrapper = _Exportable(model, input_names, output_names, extra).eval()
    example = tuple(inputs.values())
    if exporter == "dynamo":
        batch = torch.export.Dim("batch")
        length = torch.export.Dim(sequence, min=2, max=getattr(model.config, "max_seq_len",
                                                                None))
        dims = {param: {axis: batch if label == "batch" else length
                        for axis, label in axes[name].items()}
                for param, name in zip(("first", "second", "third"), input_names)}
        torch.onnx.export(wrapper, example, str(output), input_names=input_names,
                          output_names=output_names, dynamic_shapes=dims, dynamo=True,
                          external_data=False, opset_version=18)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(wrapper, example, str(output), input_names=input_names,
                              output_names=output_names, dynamic_axes={**axes, **output_axes},
                              opset_version=OPSET, dynamo=False)
    _add_metadata(model, Path(output))
    if verify:
        check_onnx(model, Path(output), inputs, output_names, extra, atol=atol)
    return output_names


def _add_metadata(model: nn.Module, file: Path) -> None:
    import onnx

    proto = onnx.load(str(file))
    config = model.config.to_dict()
    config["formerkit_class"] = type(model).__name__
    entry = proto.metadata_props.add()
    entry.key, entry.value = "formerkit_config", json.dumps(config)
    onnx.save(proto, str(file))


def check_onnx(model: nn.Module, file: Path, inputs: dict[str, torch.Tensor],
               output_names: list[str], extra: dict[str, Any] | None = None, *,
               atol: float = 1e-4) -> float:
    """Run ``file`` with onnxruntime on ``inputs`` and compare with PyTorch.

    Returns:
        The largest absolute difference over all outputs.

    Raises:
        ValueError: when it exceeds ``atol``.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    feed = {name: tensor.numpy() for name, tensor in inputs.items()
            if name in {i.name for i in session.get_inputs()}}
    got = session.run(output_names, feed)
    with torch.no_grad():
        out = model(**inputs, **(extra or {}))
    worst = max(float(np.abs(getattr(out, name).float().numpy() - value).max())
                for name, value in zip(output_names, got))
    if worst > atol:
        raise ValueError(f"ONNX export of {type(model).__name__} differs from PyTorch by "
                         f"{worst:.3g} (> atol={atol})")
    return worst


def benchmark_onnx(file: str | Path, *, batch: int = 1, length: int | None = None,
                   repeats: int = 200, threads: int = 1) -> dict[str, float]:
    """Latency of an exported HAR model in onnxruntime on this CPU.

    Args:
        file: the ``.onnx`` file written by ``export_model``.
        batch: windows per call.
        length: steps per window (default the model's ``max_seq_len``).
        repeats: timed calls (after 10 warm-up calls); the median is reported.
        threads: onnxruntime intra-op threads (1 is what a phone app typically gets).

    Returns:
        ``{"ms_per_call", "ms_per_window", "file_mb"}``.
    """
    import time

    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(file))
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    config = json.loads(meta.get("formerkit_config", "{}"))
    if "n_channels" not in config:
        raise ValueError(f"{file} is not a HAR model exported by formerkit")
    length = length or config["max_seq_len"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    feed = {"inputs": np.random.default_rng(0).normal(
        size=(batch, length, config["n_channels"])).astype(np.float32)}
    for _ in range(10):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    per_call = 1000 * float(np.median(times))
    return {"ms_per_call": per_call, "ms_per_window": per_call / batch,
            "file_mb": Path(file).stat().st_size / 2**20}
