"""HuggingFace ``llama``, ``qwen2`` and ``mistral`` checkpoints <-> formerkit's Llama family:
config keys and tensor names.

The three share one layout (separate q/k/v/o projections, ``mlp.{gate,up,down}_proj``,
``input_layernorm`` / ``post_attention_layernorm``); they differ in biases (Llama's
``attention_bias`` covers q/k/v/o, Qwen2 always has q/k/v biases and none on o) and windows
(Mistral's ``sliding_window``, Qwen2's ``use_sliding_window`` from ``max_window_layers`` on).
"""

from __future__ import annotations

import re
from typing import Any

from formerkit.interop.hf import HFConverter, StateDict, register_converter

_CLASSES = {"ForCausalLM": "LlamaForCausalLM", "Model": "LlamaModel",
            "ForSequenceClassification": "LlamaForSequenceClassification"}
_PREFIXES = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral"}
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh",
                "gelu_new": "gelu_tanh", "relu": "relu"}
_ACTIVATIONS_TO_HF = {"silu": "silu", "swish": "silu", "gelu": "gelu",
                      "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
# (HF name inside a layer, formerkit name inside a layer)
_LAYER = [("self_attn.q_proj.", "self_attn.q_proj."), ("self_attn.k_proj.", "self_attn.k_proj."),
          ("self_attn.v_proj.", "self_attn.v_proj."), ("self_attn.o_proj.", "self_attn.out_proj."),
          ("mlp.gate_proj.", "ff.gate_proj."), ("mlp.up_proj.", "ff.up_proj."),
          ("mlp.down_proj.", "ff.down_proj."), ("input_layernorm.", "norm1."),
          ("post_attention_layernorm.", "norm2.")]


def _integer(hf: dict[str, Any], key: str, default: Any = None) -> Any:
    value = hf.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"HuggingFace config {key}={value!r} must be an integer")
    return value


def _rope(hf: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, scaling) from transformers 5's ``rope_parameters`` or the older
    ``rope_theta`` + ``rope_scaling``."""
    params = dict(hf.get("rope_parameters") or {})
    legacy = dict(hf.get("rope_scaling") or {})
    theta = params.pop("rope_theta", hf.get("rope_theta", 10000.0))
    scaling = {**legacy, **params}
    kind = scaling.pop("rope_type", scaling.pop("type", "default"))
    if kind == "default":
        return float(theta), None
    scaling["rope_type"] = kind
    if kind == "llama3":
        scaling.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
    return float(theta), scaling


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """HF Llama/Qwen2/Mistral config dict -> ``formerkit.LlamaConfig`` fields."""
    model_type = hf.get("model_type", "llama")
    act = hf.get("hidden_act", "silu")
    if act not in _ACTIVATIONS:
        raise ValueError(f"hidden_act={act!r} is not supported; supported: "
                         f"{', '.join(_ACTIVATIONS)}")
    theta, scaling = _rope(hf)
    values: dict[str, Any] = dict(
        vocab_size=_integer(hf, "vocab_size", 32000), d_model=_integer(hf, "hidden_size"),
        n_heads=_integer(hf, "num_attention_heads"),
        n_kv_heads=_integer(hf, "num_key_value_heads"),
        n_layers=_integer(hf, "num_hidden_layers"), d_ff=_integer(hf, "intermediate_size"),
        head_dim=_integer(hf, "head_dim"), max_seq_len=_integer(hf, "max_position_embeddings",
                                                                  2048),
        activation=_ACTIVATIONS[act], rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=theta, rope_scaling=scaling,
        attn_dropout=float(hf.get("attention_dropout", 0.0)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        pad_token_id=hf.get("pad_token_id"), bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"), architecture=model_type,
        init_std=float(hf.get("initializer_range", 0.02)),
    )
    if model_type == "qwen2":
        values.update(qkv_bias=True, out_bias=False, mlp_bias=False)
        window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
        values.update(sliding_window=window,
                      max_window_layers=hf.get("max_window_layers") if window else None)
    else:
        bias = bool(hf.get("attention_bias", False))
        values.update(qkv_bias=bias, out_bias=bias, mlp_bias=bool(hf.get("mlp_bias", False)))
        if model_type == "mistral":
            values["sliding_window"] = hf.get("sliding_window")
    if "id2label" in hf:
        values["num_labels"] = len(hf["id2label"])
    elif "num_labels" in hf:
        values["num_labels"] = hf["num_labels"]
    return values


def config_to_hf(config: Any, class_name: str) -> dict[str, Any]:
    """``LlamaConfig`` -> HF config dict of ``config.architecture``'s model type."""
    kind = config.architecture
    if kind == "qwen2" and not (config.qkv_bias and not config.out_bias
                                and not config.mlp_bias):
        raise ValueError("a qwen2 checkpoint has q/k/v biases and no output or MLP biases; "
                         f"got qkv_bias={config.qkv_bias}, out_bias={config.out_bias}, "
                         f"mlp_bias={config.mlp_bias}")
    if kind != "qwen2" and config.qkv_bias != config.out_bias:
        raise ValueError(f"a {kind} checkpoint biases q/k/v and o together (attention_bias); "
                         f"got qkv_bias={config.qkv_bias}, out_bias={config.out_bias}")
    if kind == "llama" and config.sliding_window is not None:
        raise ValueError("a llama checkpoint has no sliding window; save with "
                         "architecture='mistral' or 'qwen2'")
    if kind == "mistral" and config.max_window_layers:
        raise ValueError("a mistral checkpoint slides the window in every layer; "
                         f"got max_window_layers={config.max_window_layers}")
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": config.rope_theta}
    if config.rope_scaling:
        rope.update(config.rope_scaling)
    hf: dict[str, Any] = {
        "model_type": kind, "architectures": [_PREFIXES[kind] + _suffix(class_name)],
        "vocab_size": config.vocab_size, "hidden_size": config.d_model,
        "num_attention_heads": config.n_heads, "num_key_value_heads": config.n_kv_heads,
        "num_hidden_layers": config.n_layers, "intermediate_size": config.d_ff,
        "head_dim": config.resolved_head_dim, "max_position_embeddings": config.max_seq_len,
        "hidden_act": _ACTIVATIONS_TO_HF[config.activation], "rms_norm_eps": config.rms_norm_eps,
        "rope_parameters": rope, "rope_theta": config.rope_theta,
        "rope_scaling": config.rope_scaling, "attention_dropout": config.attn_dropout,
        "tie_word_embeddings": config.tie_embeddings, "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
        "initializer_range": config.init_std, "num_labels": config.num_labels,
        "id2label": {str(i): f"LABEL_{i}" for i in range(config.num_labels)},
        "label2id": {f"LABEL_{i}": i for i in range(config.num_labels)},
    }
    if kind == "qwen2":
        hf.update(use_sliding_window=config.sliding_window is not None,
                  sliding_window=config.sliding_window,
                  max_window_layers=config.max_window_layers or 0)
    else:
        hf.update(attention_bias=config.qkv_bias, mlp_bias=config.mlp_bias)
        if kind == "mistral":
            hf["sliding_window"] = config.sliding_window
    return hf


def _suffix(class_name: str) -> str:
    for suffix, ours in _CLASSES.items():
        if ours == class_name:
            return suffix
    raise ValueError(f"{class_name} has no HuggingFace Llama-family architecture")


def _rename(name: str, to_hf: bool) -> str | None:
    """A layer tensor's name in the other layout, or None for tensors outside the layers."""
    src, dst = (r"^encoder\.layers\.(\d+)\.", "layers.{}.") if to_hf else \
        (r"^layers\.(\d+)\.", "encoder.layers.{}.")
    match = re.match(src, name)
    if not match:
        return None
    rest = name[match.end():]
    for hf, ours in _LAYER:
        have, want = (ours, hf) if to_hf else (hf, ours)
        if rest.startswith(have):
            return dst.format(match.group(1)) + want + rest[len(have):]
    return dst.format(match.group(1)) + rest


def state_dict_from_hf(hf_state: StateDict, config: Any, class_name: str) -> StateDict:
    """HF tensors -> formerkit (unknown tensors keep their names, so the loader names them)."""
    state: StateDict = {}
    for name, tensor in hf_state.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue  # older checkpoints store the (recomputed) rotary frequencies
        local = name[len("model."):] if name.startswith("model.") else name
        prefix = "" if class_name == "LlamaModel" else "model."
        if local in ("lm_head.weight", "score.weight") and not name.startswith("model."):
            if class_name == "LlamaModel":
                continue  # a head's checkpoint loaded as the bare backbone
            if local == "lm_head.weight" and config.tie_embeddings:
                continue
            state[local] = tensor
            continue
        if local == "norm.weight":
            state[prefix + "encoder.norm.weight"] = tensor
            continue
        state[prefix + (_rename(local, to_hf=False) or local)] = tensor
    if class_name == "LlamaForCausalLM" and config.tie_embeddings:
        state["lm_head.weight"] = state.get("model.embed_tokens.weight")
    return state


def state_dict_to_hf(state: StateDict, config: Any, class_name: str) -> StateDict:
    """formerkit tensors -> HF names (a tied LM head is left out, as transformers saves it)."""
    hf: StateDict = {}
    prefix = "" if class_name == "LlamaModel" else "model."
    for name, tensor in state.items():
        if name == "lm_head.weight":
            if not config.tie_embeddings:
                hf[name] = tensor
            continue
        if name == "score.weight":
            hf[name] = tensor
            continue
        local = name[len("model."):] if class_name != "LlamaModel" else name
        if local == "encoder.norm.weight":
            hf[prefix + "norm.weight"] = tensor
            continue
        hf[prefix + (_rename(local, to_hf=True) or local)] = tensor
    return hf


for _model_type, _prefix in _PREFIXES.items():
    register_converter(HFConverter(
        model_type=_model_type,
        architectures={_prefix + suffix: ours for suffix, ours in _CLASSES.items()},
        config_from_hf=config_from_hf, config_to_hf=config_to_hf,
        state_dict_from_hf=state_dict_from_hf, state_dict_to_hf=state_dict_to_hf))
