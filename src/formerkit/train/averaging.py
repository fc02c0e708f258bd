"""Checkpoint averaging: one model whose weights are the element-wise mean of a run's last
checkpoints (Vaswani et al. 2017 average the last 5; fairseq ships the same as a script).

Near the end of training the checkpoints of the last epochs sit around one minimum; their
mean is often a little better than any one of them, and it removes the luck of picking the
best checkpoint on a noisy validation score. ``average_run`` writes the mean as a new run
directory (the recipe, the model directory with its tokenizer and configs, and
``averaged.json`` naming the checkpoints), so ``formerkit evaluate`` and ``predict`` take it
like any run. The run it reads is left untouched.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from formerkit.models.base import (
    read_weights,
    read_weights_header,
    save_state_dict,
    weights_file,
)
from formerkit.train.checkpoint import WEIGHTS, fsync_dir, list_checkpoints, verify_checkpoint

__all__ = ["average_run", "average_weights"]

AVERAGED_FILE = "averaged.json"


def average_weights(checkpoints: Sequence[Path]) -> dict[str, torch.Tensor]:
    """The mean of the checkpoints' ``model.safetensors``, each verified against its checksums
    first. Floating-point tensors are summed in float64 and stored in their own dtype; other
    tensors (integer buffers) must be equal in every checkpoint.

    Raises:
        ValueError: no checkpoints, or two of them hold different tensor names or shapes.
        CheckpointError: a checkpoint fails verification.
    """
    if not checkpoints:
        raise ValueError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    first = checkpoints[0]
    for path in checkpoints:
        verify_checkpoint(path)
        weights = read_weights(path / WEIGHTS)
        if total and set(weights) != set(total):
            extra = sorted(set(weights) ^ set(total))[0]
            raise ValueError(f"checkpoints {first} and {path} hold different tensors "
                             f"(e.g. {extra!r}): they are not of one model")
        for name, tensor in weights.items():
            if name not in total:
                dtypes[name] = tensor.dtype
                total[name] = tensor.double() if tensor.is_floating_point() else tensor
                continue
            if tensor.shape != total[name].shape:
                raise ValueError(f"tensor {name!r} has shape {tuple(tensor.shape)} in {path} "
                                 f"but {tuple(total[name].shape)} in {first}")
            if tensor.is_floating_point():
                total[name] += tensor.double()
            elif not torch.equal(tensor, total[name]):
                raise ValueError(f"integer tensor {name!r} differs between {first} and {path}; "
                                 "only floating-point weights can be averaged")
    return {name: (tensor / len(checkpoints)).to(dtypes[name])
            if tensor.is_floating_point() else tensor for name, tensor in total.items()}


def average_run(run: Path, output: Path, *, last: int = 5) -> list[Path]:
    """Average the last ``last`` checkpoints of ``run`` (``run/checkpoint/step_*``, the best
    checkpoint not among them) into a new run directory ``output``; returns the checkpoints.

    Raises:
        FileNotFoundError: ``run`` has no recipe.yaml or model directory.
        FileExistsError: ``output`` exists and is not empty (nothing is overwritten).
        ValueError: ``last`` < 2, or the run keeps fewer checkpoints than ``last``.
    """
    run, output = Path(run), Path(output)
    model_dir = run / "model"
    if not (run / "recipe.yaml").is_file() or not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run} is not a finished run directory: averaging needs its "
                                "recipe.yaml and model/ beside checkpoint/")
    if isinstance(last, bool) or not isinstance(last, int) or last < 2:
        raise ValueError(f"last must be an integer >= 2 (checkpoints to average), got {last!r}")
    found = list_checkpoints(run / "checkpoint")
    if len(found) < last:
        raise ValueError(f"{run} keeps {len(found)} checkpoint(s), fewer than the {last} to "
                         f"average; train with trainer.keep_checkpoints={last} or more")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"{output} already exists; choose a new output directory")
    checkpoints = found[-last:]
    averaged = average_weights(checkpoints)
    model_weights = weights_file(model_dir)
    saved = read_weights_header(model_weights)  # names and shapes, not the weights
    if set(saved) != set(averaged):
        extra = sorted(set(saved) ^ set(averaged))[0]
        raise ValueError(f"the checkpoints of {run} do not hold the tensors of {model_weights} "
                         f"(e.g. {extra!r})")
    for name, meta in saved.items():
        if meta.shape != averaged[name].shape:
            raise ValueError(f"tensor {name!r} is {tuple(averaged[name].shape)} in the "
                             f"checkpoints of {run} but {tuple(meta.shape)} in {model_weights}")
    tmp = output.with_name(f".{output.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    shutil.copy2(run / "recipe.yaml", tmp / "recipe.yaml")
    shutil.copytree(model_dir, tmp / "model", ignore=shutil.ignore_patterns(model_weights.name))
    save_state_dict(averaged, tmp / "model" / "model.safetensors")
    record = {"source_run": str(run.resolve()), "checkpoints": [p.name for p in checkpoints]}
    (tmp / AVERAGED_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if output.exists():
        output.rmdir()
    tmp.rename(output)
    fsync_dir(output.parent)
    return checkpoints
