"""HuggingFace ``vit`` and ``vit_mae`` checkpoints <-> formerkit ViT (Dosovitskiy et al. 2021)
and MAE (He et al. 2022): config keys and tensor names.

The tensor names are those ``transformers`` writes (``encoder.layer.{i}.attention.attention.
query``, the layout of the published checkpoints; transformers 5 renames them in memory only).
HF keeps separate query/key/value projections; formerkit fuses them into ``qkv_proj`` (rows
q | k | v), so they are concatenated on load and split on save.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from formerkit.interop.hf import HFConverter, StateDict, hf_architecture, register_converter

VIT_ARCHITECTURES = {"ViTModel": "ViTModel",
                     "ViTForImageClassification": "ViTForImageClassification"}
MAE_ARCHITECTURES = {"ViTMAEForPreTraining": "ViTMAEForPreTraining"}

# (formerkit config field, HF config key)
_CONFIG_KEYS = [
    ("d_model", "hidden_size"), ("n_heads", "num_attention_heads"),
    ("n_layers", "num_hidden_layers"), ("d_ff", "intermediate_size"),
    ("dropout", "hidden_dropout_prob"), ("attn_dropout", "attention_probs_dropout_prob"),
    ("layer_norm_eps", "layer_norm_eps"), ("image_size", "image_size"),
    ("patch_size", "patch_size"), ("n_channels", "num_channels"), ("qkv_bias", "qkv_bias"),
    ("init_std", "initializer_range"),
]
_MAE_KEYS = [
    ("decoder_d_model", "decoder_hidden_size"), ("decoder_n_layers", "decoder_num_hidden_layers"),
    ("decoder_n_heads", "decoder_num_attention_heads"),
    ("decoder_d_ff", "decoder_intermediate_size"), ("mask_ratio", "mask_ratio"),
    ("norm_pix_loss", "norm_pix_loss"),
]
_ACTIVATIONS_FROM_HF = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh",
                        "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu", "swish": "silu"}
_ACTIVATIONS_TO_HF = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_new", "silu": "silu",
                      "swish": "silu"}

# One Transformer layer: HF name after "{stack}.{i}." -> formerkit name after "layers.{i}.".
_LAYER = [("attention.output.dense.", "self_attn.out_proj."),
          ("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."),
          ("intermediate.dense.", "ff.fc1."), ("output.dense.", "ff.fc2.")]
# Whole names (HF -> formerkit); {p} is the backbone prefix ("" for ViTModel, else "vit.").
_TENSORS = [
    ("{p}embeddings.cls_token", "{p}embeddings.cls_token"),
    ("{p}embeddings.position_embeddings", "{p}embeddings.position"),
    ("{p}embeddings.patch_embeddings.projection.", "{p}embeddings.patch_embedding.projection."),
    ("{p}layernorm.", "{p}encoder.norm."),
    ("{p}pooler.dense.", "{p}pooler."),
    ("classifier.", "classifier."),
    ("decoder.decoder_embed.", "decoder.embed."),
    ("decoder.mask_token", "decoder.mask_token"),
    ("decoder.decoder_pos_embed", "decoder.position"),
    ("decoder.decoder_norm.", "decoder.encoder.norm."),
    ("decoder.decoder_pred.", "decoder.pred."),
]
# Layer stacks: (HF prefix, formerkit prefix); saving writes the first HF name of each.
# transformers 5 writes MAE's decoder layers as decoder_encoder.layer, the published
# checkpoints (and transformers 4) as decoder_layers; both load in transformers 5.
_STACKS = [("{p}encoder.layer.", "{p}encoder.layers."),
           ("decoder.decoder_layers.", "decoder.encoder.layers."),
           ("decoder.decoder_encoder.layer.", "decoder.encoder.layers.")]
_QKV = ("query", "key", "value")


def _square(hf: dict[str, Any], key: str) -> int:
    value = hf.get(key)
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{key}={value!r} is not supported (only square sizes)")
        return value[0]
    return value


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """HF ``ViTConfig`` / ``ViTMAEConfig`` dict -> ``formerkit.ViTConfig`` fields."""
    act = hf.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS_FROM_HF:
        raise ValueError(f"hidden_act={act!r} is not supported; "
                         f"supported: {', '.join(_ACTIVATIONS_FROM_HF)}")
    pooler = hf.get("pooler_output_size")
    if pooler not in (None, hf.get("hidden_size")) or hf.get("pooler_act", "tanh") != "tanh":
        raise ValueError("only a tanh pooler of width hidden_size is supported, got "
                         f"pooler_output_size={pooler}, pooler_act={hf.get('pooler_act')!r}")
    keys = _CONFIG_KEYS + (_MAE_KEYS if hf.get("model_type") == "vit_mae" else [])
    values = {ours: hf[theirs] for ours, theirs in keys if theirs in hf}
    for key, field in (("image_size", "image_size"), ("patch_size", "patch_size")):
        if key in hf:
            values[field] = _square(hf, key)
    values["activation"] = _ACTIVATIONS_FROM_HF[act]
    if "id2label" in hf:
        values["num_labels"] = len(hf["id2label"])
    elif "num_labels" in hf:
        values["num_labels"] = hf["num_labels"]
    if hf.get("problem_type") is not None:
        values["problem_type"] = hf["problem_type"]
    return values


def config_to_hf(config: Any, class_name: str) -> dict[str, Any]:
    """``formerkit.ViTConfig`` -> HF config dict for ``class_name``'s architecture."""
    mae = class_name in MAE_ARCHITECTURES
    hf = {theirs: getattr(config, ours) for ours, theirs in _CONFIG_KEYS + (_MAE_KEYS if mae
                                                                             else [])}
    converter = MAE_CONVERTER if mae else VIT_CONVERTER
    hf.update(model_type=converter.model_type,
              architectures=[hf_architecture(converter, class_name)],
              hidden_act=_ACTIVATIONS_TO_HF[config.activation])
    if not mae:
        hf.update(encoder_stride=config.patch_size, pooler_output_size=config.d_model,
                  pooler_act="tanh", problem_type=config.problem_type,
                  id2label={str(i): f"LABEL_{i}" for i in range(config.num_labels)},
                  label2id={f"LABEL_{i}": i for i in range(config.num_labels)})
    return hf


def _table(prefix: str, reverse: bool) -> list[tuple[str, str]]:
    rows = [(hf.format(p=prefix), ours.format(p=prefix)) for hf, ours in _TENSORS]
    for hf_stack, our_stack in _STACKS:
        hf_stack, our_stack = hf_stack.format(p=prefix), our_stack.format(p=prefix)
        rows += [(hf_stack + "{i}." + hf, our_stack + "{i}." + ours) for hf, ours in _LAYER]
    return [(ours, hf) for hf, ours in rows] if reverse else rows  # reverse: first row wins


def _rename(name: str, table: list[tuple[str, str]]) -> str | None:
    for src, dst in table:
        pattern = "^" + re.escape(src).replace(r"\{i\}", r"(\d+)")
        match = re.match(pattern, name)
        if match:
            target = dst.replace("{i}", match.group(1)) if match.groups() else dst
            return target + name[match.end():]
    return None


def _prefix(class_name: str) -> str:
    return "" if class_name == "ViTModel" else "vit."


def state_dict_from_hf(hf_state: StateDict, config: Any, class_name: str) -> StateDict:
    """HF tensors -> formerkit tensors for ``class_name`` (unknown tensors keep their names,
    so the strict loader reports them)."""
    prefix = _prefix(class_name)
    if class_name == "ViTModel" and any(k.startswith("vit.") for k in hf_state):
        # a classifier's checkpoint loaded as the bare encoder: its head is dropped
        hf_state = {k[len("vit."):]: v for k, v in hf_state.items() if k.startswith("vit.")}
    table = _table(prefix, reverse=False)
    stacks = "|".join(re.escape(hf.format(p=prefix)) for hf, _ in _STACKS)
    ours_of = {re.escape(hf.format(p=prefix)): ours.format(p=prefix) for hf, ours in _STACKS}
    state: StateDict = {}
    qkv: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    for name, tensor in hf_state.items():
        match = re.match(rf"^({stacks})(\d+)\.attention\.attention\.(query|key|value)\."
                         r"(weight|bias)$", name)
        if match:
            stack, layer, part, kind = match.groups()
            qkv.setdefault((ours_of[re.escape(stack)], layer, kind), {})[part] = tensor
            continue
        state[_rename(name, table) or name] = tensor
    for (stack, layer, kind), parts in qkv.items():
        missing = [p for p in _QKV if p not in parts]
        if missing:
            raise ValueError(f"layer {layer} lacks attention.attention.{missing[0]}.{kind}")
        state[f"{stack}{layer}.self_attn.qkv_proj.{kind}"] = torch.cat(
            [parts[p] for p in _QKV], dim=0)  # (3D, D) or (3D,)
    return state


def state_dict_to_hf(state: StateDict, config: Any, class_name: str) -> StateDict:
    """formerkit tensors -> HF tensors, named as ``transformers`` saves them."""
    prefix = _prefix(class_name)
    table = _table(prefix, reverse=True)
    back: dict[str, str] = {}
    for hf_stack, our_stack in _STACKS:
        back.setdefault(our_stack.format(p=prefix), hf_stack.format(p=prefix))
    hf: StateDict = {}
    for name, tensor in state.items():
        match = re.match(r"^(.*\.)?(\d+)\.self_attn\.qkv_proj\.(weight|bias)$", name)
        if match and match.group(1) in back:
            stack, layer, kind = match.groups()
            for part, chunk in zip(_QKV, tensor.chunk(3, dim=0)):
                hf[f"{back[stack]}{layer}.attention.attention.{part}.{kind}"] = chunk.contiguous()
            continue
        hf[_rename(name, table) or name] = tensor
    return hf


VIT_CONVERTER = register_converter(HFConverter(
    model_type="vit", architectures=VIT_ARCHITECTURES, config_from_hf=config_from_hf,
    config_to_hf=config_to_hf, state_dict_from_hf=state_dict_from_hf,
    state_dict_to_hf=state_dict_to_hf))
MAE_CONVERTER = register_converter(HFConverter(
    model_type="vit_mae", architectures=MAE_ARCHITECTURES, config_from_hf=config_from_hf,
    config_to_hf=config_to_hf, state_dict_from_hf=state_dict_from_hf,
    state_dict_to_hf=state_dict_to_hf))
