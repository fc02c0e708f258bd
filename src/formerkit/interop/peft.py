"""LoRA adapters in the layout of the ``peft`` library (Hu et al. 2021): ``adapter_config.json``
+ ``adapter_model.safetensors`` with ``base_model.model.<HF module>.lora_A/lora_B.weight``.

``save_adapter`` writes formerkit's LoRA layers so that ``peft.PeftModel.from_pretrained`` loads
them onto the ``save_pretrained(hf=True)`` export of the base model; ``load_adapter`` reads an
adapter ``peft`` wrote (or ``save_adapter``) onto a formerkit model. Module names and layouts are
not kept in a table: the family's HuggingFace converter is run once over a probe state dict whose
entries encode (layer, row, column), so every split of a fused projection (BERT's q/k/v), every
transpose (GPT-2's ``Conv1D``) and permutation (Marian's interleaved positions) the converter
applies to weights is applied to the adapters alike. A fused projection adapted as several
``peft`` modules becomes one LoRA of the summed rank with a block-diagonal B, which computes
exactly the same update.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from formerkit.nn.lora import LoRALinear

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
_TASK_TYPES = {"ForCausalLM": "CAUSAL_LM", "ForSequenceClassification": "SEQ_CLS",
               "ForTokenClassification": "TOKEN_CLS", "ForQuestionAnswering": "QUESTION_ANS",
               "ForSeq2Seq": "SEQ_2_SEQ_LM"}
_ROW, _LAYER = 2 ** 20, 2 ** 40  # probe value = layer * _LAYER + row * _ROW + column + 1


@dataclass(frozen=True)
class _Piece:
    """Where one HF weight's rows and columns come from in one formerkit linear layer."""

    ours: str  # formerkit module name
    rows: torch.Tensor  # our row index of each HF output feature
    cols: torch.Tensor  # our column index of each HF input feature
    transposed: bool  # the HF tensor is stored (in, out), as GPT-2's Conv1D


def _base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with LoRA layers seen as the linear layers they wrap."""
    state = {}
    for name, tensor in model.state_dict().items():
        if ".lora_" in name:
            continue
        state[name.replace(".base.", ".")] = tensor
    return state


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, LoRALinear)) and ".base" not in name
            and not name.endswith(".base")]


def _pieces(model: nn.Module) -> dict[str, _Piece]:
    """HF module name -> where its weight's rows and columns sit in our linear layers."""
    from formerkit.interop.hf import _converter_for_class

    class_name = type(model).__name__
    converter = _converter_for_class(class_name, getattr(model.config, "architecture", None))
    names = _linear_names(model)
    probe = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in _base_state(model).items()}
    for index, name in enumerate(names):
        out_features, in_features = probe[name + ".weight"].shape
        rows = torch.arange(out_features, dtype=torch.float64)[:, None]
        cols = torch.arange(in_features, dtype=torch.float64)[None]
        probe[name + ".weight"] = (index + 1) * _LAYER + rows * _ROW + cols + 1
    pieces = {}
    for hf_name, tensor in converter.state_dict_to_hf(probe, model.config, class_name).items():
        if not hf_name.endswith(".weight") or tensor.dim() != 2 or not bool((tensor > 0).all()):
            continue
        codes = (tensor - 1).long()
        layers = codes // _LAYER
        if bool((layers != layers[0, 0]).any()) or int(layers[0, 0]) < 1:
            continue  # a mix of layers, or a tensor that is no linear weight of ours
        rows, cols = (codes % _LAYER) // _ROW, codes % _ROW
        # Stored (out, in), our rows run down axis 0; stored (in, out), along axis 1.
        down = tensor.shape[0] > 1 and not bool((rows == rows[:1]).all())
        transposed = not down and tensor.shape[1] > 1 and not bool((rows == rows[:, :1]).all())
        if transposed:
            rows, cols = rows.t(), cols.t()
        pieces[hf_name[:-len(".weight")]] = _Piece(names[int(layers[0, 0]) - 1],
                                                  rows[:, 0].clone(), cols[0].clone(),
                                                  transposed)
    return pieces


def _task_type(class_name: str) -> str | None:
    return next((task for suffix, task in _TASK_TYPES.items() if class_name.endswith(suffix)),
                None)


def save_adapter(model: nn.Module, path: str | Path, *,
                 base_model_name_or_path: str | None = None) -> Path:
    """Write the model's LoRA layers (and the modules trained in full beside them, such as a
    new classifier) as a ``peft`` adapter directory.

    Raises:
        ValueError: when the model has no LoRA layers, or they differ in rank or scale (one
            ``peft`` adapter has one ``r`` and ``lora_alpha``).
    """
    from safetensors.torch import save_file

    adapted = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    if not adapted:
        raise ValueError(f"{type(model).__name__} has no LoRA layers to save as an adapter")
    settings = {(m.rank, m.alpha) for m in adapted.values()}
    if len(settings) > 1:
        raise ValueError(f"the LoRA layers differ in (rank, alpha): {sorted(settings)}; a peft "
                         "adapter has one r and lora_alpha")
    (rank, alpha), = settings
    tensors, targets = {}, []
    for hf_module, piece in _pieces(model).items():
        layer = adapted.get(piece.ours)
        if layer is None:
            continue
        tensors[f"{PREFIX}{hf_module}.lora_A.weight"] = \
            layer.lora_A.detach()[:, piece.cols].contiguous()
        tensors[f"{PREFIX}{hf_module}.lora_B.weight"] = \
            layer.lora_B.detach()[piece.rows].contiguous()
        targets.append(hf_module)
    saved = _modules_in_full(model, adapted)
    tensors.update(saved)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    transposed = any(p.transposed for p in _pieces(model).values() if p.ours in adapted)
    dropout = {float(m.dropout.p) for m in adapted.values()}
    config = {
        "peft_type": "LORA", "task_type": _task_type(type(model).__name__), "r": rank,
        "lora_alpha": alpha, "lora_dropout": max(dropout), "target_modules": sorted(targets),
        "fan_in_fan_out": transposed, "bias": "none", "use_rslora": False, "use_dora": False,
        "modules_to_save": sorted({k[len(PREFIX):].rsplit(".", 1)[0] for k in saved}) or None,
        "base_model_name_or_path": base_model_name_or_path, "inference_mode": True,
        "init_lora_weights": True, "rank_pattern": {}, "alpha_pattern": {},
    }
    (path / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def _modules_in_full(model: nn.Module, adapted: dict[str, LoRALinear]
                     ) -> dict[str, torch.Tensor]:
    """The HF-named tensors of trainable parameters outside the LoRA layers (modules_to_save)."""
    from formerkit.interop.hf import _converter_for_class

    trainable = {n for n, p in model.named_parameters() if p.requires_grad and ".lora_" not in n}
    if not trainable:
        return {}
    class_name = type(model).__name__
    converter = _converter_for_class(class_name, getattr(model.config, "architecture", None))
    state = _base_state(model)
    marked = {k: (v.detach().clone() if k in trainable else torch.zeros(v.shape, dtype=v.dtype))
              for k, v in state.items()}
    flags = {k: torch.full(v.shape, 1.0 if k in trainable else 0.0, dtype=torch.float64)
             for k, v in state.items()}
    values = converter.state_dict_to_hf(marked, model.config, class_name)
    kept = converter.state_dict_to_hf(flags, model.config, class_name)
    return {PREFIX + k: values[k].contiguous() for k, flag in kept.items()
            if flag.numel() and bool((flag == 1).all())}


def load_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """Apply the ``peft`` LoRA adapter in ``path`` to ``model`` (in place): its linear layers
    become ``LoRALinear`` with the adapter's weights, the modules it saved in full are loaded,
    and everything else is frozen. Returns ``model``.

    Raises:
        ValueError: naming the mismatch when the adapter is not LoRA, targets modules the model
            does not have, or its tensors do not fit.
    """
    from safetensors.torch import load_file

    path = Path(path)
    config = _read_config(path)
    weights_file = path / ADAPTER_WEIGHTS
    if not weights_file.is_file():
        raise FileNotFoundError(f"no adapter weights in {path}: expected {ADAPTER_WEIGHTS}")
    tensors = load_file(str(weights_file))
    rank, alpha = config["r"], config["lora_alpha"]
    if config.get("use_dora") or config.get("use_rslora") or config.get("rank_pattern") \
            or config.get("alpha_pattern"):
        raise ValueError(f"{path / ADAPTER_CONFIG}: DoRA, rsLoRA and per-module ranks are not "
                         "supported; plain LoRA only")
    pieces = _pieces(model)
    groups: dict[str, list[tuple[_Piece, torch.Tensor, torch.Tensor]]] = {}
    for key in tensors:
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[len(PREFIX):-len(".lora_A.weight")] if key.startswith(PREFIX) else key
        if module not in pieces:
            known = ", ".join(sorted(pieces)[:6])
            raise ValueError(f"adapter {path} targets {module!r}, which "
                             f"{type(model).__name__} does not have (its linear layers are "
                             f"named like: {known}, ...)")
        b = tensors.get(key.replace(".lora_A.", ".lora_B."))
        piece = pieces[module]
        a = tensors[key]
        if b is None or a.shape != (rank, len(piece.cols)) or b.shape != (len(piece.rows), rank):
            raise ValueError(f"adapter {path}: tensors of {module!r} do not fit the model's layer "
                             f"({len(piece.rows)} x {len(piece.cols)}) at r={rank}")
        groups.setdefault(piece.ours, []).append((piece, a, b))
    if not groups:
        raise ValueError(f"adapter {path} holds no LoRA weights")
    for param in model.parameters():
        param.requires_grad_(False)
    for ours, parts in groups.items():
        _install(model, ours, parts, rank, alpha, float(config.get("lora_dropout", 0.0)))
    _load_full_modules(model, path, tensors)
    return model


def _install(model: nn.Module, name: str, parts: list, rank: int, alpha: float,
             dropout: float) -> None:
    """One LoRA of rank ``rank * len(parts)`` whose block-diagonal update equals the parts'."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    base = getattr(parent, child)
    base = base.base if isinstance(base, LoRALinear) else base
    total = rank * len(parts)
    if total > min(base.in_features, base.out_features):
        raise ValueError(f"adapter rank {rank} on {len(parts)} parts exceeds the size of {name} "
                         f"({base.out_features} x {base.in_features})")
    # scale = alpha / r for each part: the combined rank is len(parts) * r, so is alpha.
    layer = LoRALinear(base, rank=total, alpha=alpha * len(parts), dropout=dropout)
    with torch.no_grad():
        layer.lora_A.zero_()
        layer.lora_B.zero_()
        for i, (piece, a, b) in enumerate(parts):
            block = slice(i * rank, (i + 1) * rank)
            layer.lora_A[block, piece.cols] = a.to(layer.lora_A.dtype)
            layer.lora_B[piece.rows, block] = b.to(layer.lora_B.dtype)
    setattr(parent, child, layer)


def _load_full_modules(model: nn.Module, path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Load the tensors saved in full (peft's modules_to_save) into the model's parameters."""
    from formerkit.interop.hf import _converter_for_class

    full = {k[len(PREFIX):]: v for k, v in tensors.items()
            if ".lora_" not in k and k.startswith(PREFIX)}
    if not full:
        return
    class_name = type(model).__name__
    converter = _converter_for_class(class_name, getattr(model.config, "architecture", None))
    ours_to_hf = _name_map(model, converter, class_name, _base_state(model))
    params = dict(model.named_parameters())
    for ours, hf in ours_to_hf.items():
        if hf not in full:
            continue
        target = params.get(ours)
        if target is None:
            target = params.get(ours.replace(".weight", ".base.weight"))
        if target is None or tuple(target.shape) != tuple(full[hf].shape):
            raise ValueError(f"adapter {path}: {hf!r} does not fit the model's {ours!r}")
        with torch.no_grad():
            target.copy_(full[hf])
        target.requires_grad_(True)


def _name_map(model: nn.Module, converter: Any, class_name: str,
              state: dict[str, torch.Tensor]) -> dict[str, str]:
    """formerkit tensor name -> HF tensor name for tensors the converter maps one to one."""
    names = sorted(state)
    probe = {k: torch.full(state[k].shape, float(i + 1), dtype=torch.float64)
             for i, k in enumerate(names)}
    mapping = {}
    for hf, tensor in converter.state_dict_to_hf(probe, model.config, class_name).items():
        values = tensor.unique()
        if values.numel() == 1 and tensor.shape == state[names[int(values[0]) - 1]].shape:
            mapping.setdefault(names[int(values[0]) - 1], hf)
    return mapping


def _read_config(path: Path) -> dict[str, Any]:
    file = path / ADAPTER_CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: not a peft adapter directory")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from None
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{file}: peft_type {config.get('peft_type')!r} is not supported "
                         "(LORA only)")
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key), (int, float)) or config[key] <= 0:
            raise ValueError(f"{file}: {key}={config.get(key)!r} must be a positive number")
    return config
