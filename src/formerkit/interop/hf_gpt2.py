"""HuggingFace GPT-2 (Radford et al. 2019) <-> formerkit GPT: config keys and tensor names.

HF's GPT-2 uses ``Conv1D`` layers whose weights are stored (in, out), the transpose of
``nn.Linear``; formerkit's fused ``qkv_proj`` has rows q|k|v exactly as HF's ``c_attn`` columns.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import torch

from formerkit.interop.hf import HFConverter, StateDict, register_converter

ARCHITECTURES = {
    "GPT2LMHeadModel": "GPTForCausalLM",
    "GPT2Model": "GPTModel",
    "GPT2ForSequenceClassification": "GPTForSequenceClassification",
}

_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
                "relu": "relu", "silu": "silu", "swish": "silu"}
_HF_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu",
                   "swish": "silu"}

# Per-layer tensors: HF suffix -> (formerkit suffix, is a Conv1D weight to transpose).
_LAYER = {
    "ln_1.weight": ("norm1.weight", False), "ln_1.bias": ("norm1.bias", False),
    "attn.c_attn.weight": ("self_attn.qkv_proj.weight", True),
    "attn.c_attn.bias": ("self_attn.qkv_proj.bias", False),
    "attn.c_proj.weight": ("self_attn.out_proj.weight", True),
    "attn.c_proj.bias": ("self_attn.out_proj.bias", False),
    "ln_2.weight": ("norm2.weight", False), "ln_2.bias": ("norm2.bias", False),
    "mlp.c_fc.weight": ("ff.fc1.weight", True), "mlp.c_fc.bias": ("ff.fc1.bias", False),
    "mlp.c_proj.weight": ("ff.fc2.weight", True), "mlp.c_proj.bias": ("ff.fc2.bias", False),
}
_BODY = {"wte.weight": "embed_tokens.weight", "wpe.weight": "embed_positions.weight",
         "ln_f.weight": "encoder.norm.weight", "ln_f.bias": "encoder.norm.bias"}
# Old checkpoints store the causal-mask buffers; they carry no weights.
_IGNORED = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)$")
_HF_LAYER = re.compile(r"h\.(\d+)\.(.+)$")
_OUR_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)$")


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """HF GPT2Config dict -> GPTConfig fields; unsupported variants are a clear error."""
    for key, unsupported in (("scale_attn_weights", False), ("add_cross_attention", True),
                             ("scale_attn_by_inverse_layer_idx", True),
                             ("reorder_and_upcast_attn", True)):
        if hf.get(key) is unsupported:
            raise ValueError(f"GPT-2 config {key}={unsupported} is not supported by formerkit")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"GPT-2 activation_function {activation!r} is not supported; "
                         f"supported: {', '.join(_ACTIVATIONS)}")
    eos = hf.get("eos_token_id", 50256)
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    num_labels = hf.get("num_labels") or len(hf.get("id2label") or {}) or 2
    d_model = hf.get("n_embd", 768)
    return dict(
        vocab_size=hf.get("vocab_size", 50257), d_model=d_model, n_heads=hf.get("n_head", 12),
        n_layers=hf.get("n_layer", 12), d_ff=hf.get("n_inner") or 4 * d_model,
        dropout=float(hf.get("resid_pdrop", 0.1)), attn_dropout=float(hf.get("attn_pdrop", 0.1)),
        max_seq_len=hf.get("n_positions", 1024), activation=_ACTIVATIONS[activation],
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        pad_token_id=hf.get("pad_token_id"), bos_token_id=hf.get("bos_token_id", 50256),
        eos_token_id=eos, tie_embeddings=hf.get("tie_word_embeddings", True),
        num_labels=num_labels)


def config_to_hf(config: Any, class_name: str) -> dict[str, Any]:
    hf_arch = next(hf for hf, ours in ARCHITECTURES.items() if ours == class_name)
    dropout = config.dropout
    hf = dict(
        model_type="gpt2", architectures=[hf_arch], vocab_size=config.vocab_size,
        n_positions=config.max_seq_len, n_embd=config.d_model, n_layer=config.n_layers,
        n_head=config.n_heads, n_inner=config.d_ff,
        activation_function=_HF_ACTIVATIONS[config.activation], resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout if config.attn_dropout is None else config.attn_dropout,
        layer_norm_epsilon=config.layer_norm_eps, initializer_range=0.02,
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, tie_word_embeddings=config.tie_embeddings,
        scale_attn_weights=True, use_cache=True)
    if class_name == "GPTForSequenceClassification":
        hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(config.num_labels)}
        hf["label2id"] = {f"LABEL_{i}": i for i in range(config.num_labels)}
    return hf


def _body_from_hf(name: str) -> str | None:
    """HF backbone tensor name (without ``transformer.``) -> formerkit GPTModel name."""
    if name in _BODY:
        return _BODY[name]
    match = _HF_LAYER.match(name)
    if match and match.group(2) in _LAYER:
        return f"encoder.layers.{match.group(1)}.{_LAYER[match.group(2)][0]}"
    return None


def state_dict_from_hf(hf_state: StateDict, config: Any, class_name: str) -> StateDict:
    """Rename and transpose; unknown names are kept so the loader reports them by name."""
    prefix = "" if class_name == "GPTModel" else "transformer."
    state: StateDict = {}
    for hf_name, tensor in hf_state.items():
        body = hf_name[len("transformer."):] if hf_name.startswith("transformer.") else hf_name
        if _IGNORED.search(body):
            continue
        ours = _body_from_hf(body)
        if ours is not None:
            layer = _HF_LAYER.match(body)
            if layer and _LAYER[layer.group(2)][1] and tensor.dim() == 2:
                tensor = tensor.t()  # Conv1D (in, out) -> Linear (out, in)
            state[prefix + ours] = tensor.contiguous()
        elif hf_name in ("lm_head.weight", "score.weight"):
            if class_name != "GPTModel":  # a base model drops a checkpoint's head, as HF
                state[hf_name] = tensor
        else:
            state[hf_name] = tensor
    if class_name == "GPTForCausalLM" and "lm_head.weight" not in state \
            and config.tie_embeddings and "transformer.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["transformer.embed_tokens.weight"]  # tied, not saved
    if class_name == "GPTForSequenceClassification" and "score.weight" not in state \
            and "transformer.embed_tokens.weight" in state:
        # A language-model checkpoint as the start of fine-tuning: a new head, as HF does.
        warnings.warn(f"GPT-2 checkpoint has no classifier; score.weight ({config.num_labels} "
                      "labels) is newly initialised and needs training", stacklevel=2)
        state.pop("lm_head.weight", None)
        state["score.weight"] = torch.randn(config.num_labels, config.d_model) * 0.02
    return state


def state_dict_to_hf(state: StateDict, config: Any, class_name: str) -> StateDict:
    prefix = "" if class_name == "GPTModel" else "transformer."
    inverse_body = {ours: hf for hf, ours in _BODY.items()}
    inverse_layer = {ours: (hf, transpose) for hf, (ours, transpose) in _LAYER.items()}
    hf_state: StateDict = {}
    for name, tensor in state.items():
        if name.startswith(prefix) and name[len(prefix):] in inverse_body:
            hf_state[prefix + inverse_body[name[len(prefix):]]] = tensor
            continue
        match = _OUR_LAYER.match(name[len(prefix):]) if name.startswith(prefix) else None
        if match and match.group(2) in inverse_layer:
            hf_suffix, transpose = inverse_layer[match.group(2)]
            hf_state[f"{prefix}h.{match.group(1)}.{hf_suffix}"] = \
                tensor.t().contiguous() if transpose else tensor
        elif name == "lm_head.weight":
            if not config.tie_embeddings:  # HF re-ties it from wte
                hf_state[name] = tensor
        elif name == "score.weight":
            hf_state[name] = tensor
        else:
            raise ValueError(f"tensor {name!r} has no GPT-2 equivalent")
    return hf_state


GPT2_CONVERTER = register_converter(HFConverter(
    model_type="gpt2", architectures=ARCHITECTURES, config_from_hf=config_from_hf,
    config_to_hf=config_to_hf, state_dict_from_hf=state_dict_from_hf,
    state_dict_to_hf=state_dict_to_hf))
