"""ONNX export of single-graph models (Open Neural Network Exchange, opset 17), checked with
onnxruntime, and a latency benchmark for exported HAR models."""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from formerkit.export.common import SLOTS, _Exportable, _outputs, example_inputs

OPSET = 17


def export_module(model: nn.Module, output: str | Path, *, exporter: str = "torchscript",
                  verify: bool = True, atol: float = 1e-4) -> list[str]:
    """Export an in-memory single-graph model to ONNX (see ``export``); returns the output
    names."""
    model = model.eval()
    inputs, _ = example_inputs(model)
    _export_single(model, Path(output), exporter=exporter, verify=verify, atol=atol)
    extra = _extra(model)
    return list(_outputs(model, inputs, extra))


def _extra(model: nn.Module) -> dict[str, Any]:
    return {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters \
        else {}


def _export_single(model: nn.Module, output: Path, *, exporter: str, verify: bool,
                   atol: float) -> float | None:
    model = model.eval()
    if "noise" in inspect.signature(model.forward).parameters:
        raise ValueError(f"{type(model).__name__} masks patches at random; export its "
                         "encoder instead (save model.vit and export that directory)")
    inputs, axes = example_inputs(model)
    extra = _extra(model)
    outputs = _outputs(model, inputs, extra)
    input_names, output_names = list(inputs), list(outputs)
    output_axes = _output_axes(model, inputs, outputs, extra)
    wrapper = _Exportable(model, input_names, output_names, extra).eval()
    example = tuple(inputs.values())
    if exporter == "dynamo":
        sequence = "time" if "inputs" in inputs else "sequence"
        batch = torch.export.Dim("batch")
        length = torch.export.Dim(sequence, min=2, max=getattr(model.config, "max_seq_len",
                                                                None))
        dims = {param: {axis: batch if label == "batch" else length
                        for axis, label in axes[name].items()}
                for param, name in zip(SLOTS, input_names)}
        torch.onnx.export(wrapper, example, str(output), input_names=input_names,
                          output_names=output_names, dynamic_shapes=dims, dynamo=True,
                          external_data=False, opset_version=18)
    else:
        _torchscript_export(wrapper, example, output, input_names, output_names,
                            {**axes, **output_axes})
    _add_metadata(model, output)
    if not verify:
        return None
    return check_onnx(model, output, inputs, output_names, extra, atol=atol)


def _output_axes(model: nn.Module, inputs: dict[str, torch.Tensor],
                 outputs: dict[str, torch.Tensor], extra: dict[str, Any]
                 ) -> dict[str, dict[int, str]]:
    """Output axes that follow the sequence length: those that change when one step is
    removed (forecasters have a fixed length: only the batch axis is dynamic)."""
    if "x" in inputs or "pixel_values" in inputs:  # fixed length or image size
        return {name: {0: "batch"} for name in outputs}
    shorter = _outputs(model, {k: v[..., :-1] if k != "inputs" else v[:, :-1]
                               for k, v in inputs.items()}, extra)
    sequence = "time" if "inputs" in inputs else "sequence"
    axes = {name: {0: "batch", **{axis: sequence for axis in range(1, value.dim())
                                  if shorter[name].shape[axis] != value.shape[axis]}}
            for name, value in outputs.items()}
    if "input_ids" in inputs and inputs["input_ids"].dim() == 3:  # multiple choice (B, C, T)
        for name in outputs:
            axes[name][1] = "choices"
    return axes


def _torchscript_export(wrapper: nn.Module, example: tuple[torch.Tensor, ...], output: Path,
                        input_names: list[str], output_names: list[str],
                        axes: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(wrapper, example, str(output), input_names=input_names,
                          output_names=output_names, dynamic_axes=axes, opset_version=OPSET,
                          dynamo=False)


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
