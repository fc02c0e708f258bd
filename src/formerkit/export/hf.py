"""Export to a HuggingFace directory (``save_pretrained(hf=True)``) checked by loading it with
``transformers`` and comparing outputs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from formerkit.export.common import OUTPUT_FIELDS, ExportResult, example_inputs, is_seq2seq
from formerkit.export.seq2seq import seq2seq_examples


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
    hf_logging = transformers.utils.logging
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the check is ours: no "Loading weights" bar
    try:
        theirs = getattr(transformers, architecture).from_pretrained(
            str(target), attn_implementation="eager").eval()
    finally:
        if shown:
            hf_logging.enable_progress_bar()
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
