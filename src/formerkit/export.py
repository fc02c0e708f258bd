"""Export of trained models, each checked against PyTorch: ONNX (Open Neural Network Exchange,
opset 17) run in onnxruntime, and HuggingFace directories loaded by ``transformers``.

ONNX covers every family, with names taken from the models' own arguments and output fields:

- text models that take ``input_ids`` (every BERT head, GPT without a KV cache): inputs
  ``input_ids``, ``attention_mask`` (and ``token_type_ids`` for BERT), dynamic batch and
  sequence axes; ``BertForMultipleChoice`` takes (batch, choices, sequence);
- ``HARTransformer``: raw signals (B, T, C) -> per-step ``logits``, T dynamic up to
  ``max_seq_len``;
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

import dataclasses
import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from formerkit.extras import require

FORMATS = ("onnx", "hf")
EXPORTERS = ("torchscript", "dynamo")
OPSET = 17
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
        model: a HAR, forecasting or text model.
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
    if "x" in accepted and hasattr(config, "pred_len"):
        tensors = {"x": torch.randn(batch, config.seq_len, config.n_vars, generator=generator)}
        if getattr(config, "n_marks", 0):
            tensors["x_mark"] = torch.randn(batch, config.seq_len, config.n_marks,
                                            generator=generator)
            tensors["y_mark"] = torch.randn(batch, config.pred_len, config.n_marks,
                                            generator=generator)
        return tensors, {name: {0: "batch"} for name in tensors}
    if "input_ids" not in accepted or not hasattr(config, "vocab_size"):
        raise ValueError(f"export supports HAR, forecasting and text (input_ids) models, not "
                         f"{type(model).__name__}")
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


def export(model_dir: str | Path, format: str = "onnx", output: str | Path | None = None, *,
           exporter: str = "torchscript", verify: bool = True, atol: float = 1e-4
           ) -> ExportResult:
    """Export a saved model and measure how closely the export matches PyTorch.

    Args:
        model_dir: a model directory (``save_pretrained``) or a run directory holding ``model/``.
        format: ``"onnx"`` or ``"hf"`` (a directory ``transformers`` loads: BERT, GPT-2 and
            Marian models).
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
    if "x" in inputs:
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


# ---- seq2seq: encoder + one decoder step ----------------------------------------------------
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


# ---- HuggingFace ----------------------------------------------------------------------------
def export_hf(model: nn.Module, target: str | Path, *, verify: bool = True,
              atol: float = 1e-4) -> ExportResult:
    """``save_pretrained(target, hf=True)``, then (when ``transformers`` is installed) load it
    with the class named by ``architectures[0]`` and compare outputs on example inputs."""
    target = Path(target)
    model.save_pretrained(target, hf=True)
    if not verify:
        return ExportResult(target, {target: None}, "transformers", "verify=False")
    try:
        import transformers
    except ImportError:
        return ExportResult(target, {target: None}, "transformers",
                            "transformers is not installed (pip install transformers)")
    architecture = json.loads((target / "config.json").read_text())["architectures"][0]
    theirs = getattr(transformers, architecture).from_pretrained(
        str(target), attn_implementation="eager").eval()
    inputs = _hf_examples(model)
    with torch.no_grad():
        ours_out, theirs_out = model(**inputs), theirs(**inputs)
    fields = [name for name in OUTPUT_FIELDS
              if isinstance(getattr(ours_out, name, None), torch.Tensor)
              and isinstance(getattr(theirs_out, name, None), torch.Tensor)]
    if not fields:
        raise ValueError(f"{architecture} shares no output field with {type(model).__name__}")
    worst = max(float((getattr(ours_out, f) - getattr(theirs_out, f)).abs().max())
                for f in fields)
    if worst > atol:
        raise ValueError(f"transformers' {architecture} loaded from {target} differs from "
                         f"{type(model).__name__} by {worst:.3g} (> atol={atol})")
    return ExportResult(target, {target: worst}, "transformers")


def _hf_examples(model: nn.Module) -> dict[str, torch.Tensor]:
    """Unpadded example inputs (padded positions are undefined and differ between libraries)."""
    if is_seq2seq(model):
        source, decoder = seq2seq_examples(model)
        return {"input_ids": source["input_ids"],
                "decoder_input_ids": decoder["decoder_input_ids"]}
    inputs, _ = example_inputs(model)
    inputs.pop("attention_mask", None)
    return inputs


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
