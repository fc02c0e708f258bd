"""HuggingFace ``bert`` checkpoints <-> formerkit BERT (Devlin et al. 2019): config keys and
tensor names for the base model and all seven heads.

HF keeps separate query/key/value projections; formerkit fuses them into ``qkv_proj`` (rows
q | k | v), so they are concatenated on load and split on save. The MLM decoder is tied to the
word embeddings on both sides and is therefore not stored.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from formerkit.interop.hf import HFConverter, StateDict, hf_architecture, register_converter

ARCHITECTURES = {
    "BertModel": "BertModel",
    "BertForPreTraining": "BertForPreTraining",
    "BertForMaskedLM": "BertForMaskedLM",
    "BertForNextSentencePrediction": "BertForNextSentencePrediction",
    "BertForSequenceClassification": "BertForSequenceClassification",
    "BertForTokenClassification": "BertForTokenClassification",
    "BertForQuestionAnswering": "BertForQuestionAnswering",
    "BertForMultipleChoice": "BertForMultipleChoice",
}

# (formerkit config field, HF config key)
_CONFIG_KEYS = [
    ("vocab_size", "vocab_size"), ("d_model", "hidden_size"),
    ("n_heads", "num_attention_heads"), ("n_layers", "num_hidden_layers"),
    ("d_ff", "intermediate_size"), ("dropout", "hidden_dropout_prob"),
    ("attn_dropout", "attention_probs_dropout_prob"),
    ("max_seq_len", "max_position_embeddings"), ("layer_norm_eps", "layer_norm_eps"),
    ("type_vocab_size", "type_vocab_size"), ("problem_type", "problem_type"),
    ("classifier_dropout", "classifier_dropout"), ("init_std", "initializer_range"),
]
_ACTIVATIONS_FROM_HF = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh",
                        "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu", "swish": "silu"}
_ACTIVATIONS_TO_HF = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_new", "silu": "silu",
                      "swish": "silu"}

# Backbone tensors, HF name (without the "bert." prefix) -> formerkit name; {i} = layer.
_LAYER = "encoder.layer.{i}."
_OURS = "encoder.layers.{i}."
_BACKBONE = [
    ("embeddings.word_embeddings.", "embeddings.token."),
    ("embeddings.position_embeddings.", "embeddings.position."),
    ("embeddings.token_type_embeddings.", "embeddings.segment."),
    ("embeddings.LayerNorm.", "embeddings.norm."),
    (_LAYER + "attention.output.dense.", _OURS + "self_attn.out_proj."),
    (_LAYER + "attention.output.LayerNorm.", _OURS + "norm1."),
    (_LAYER + "intermediate.dense.", _OURS + "ff.fc1."),
    (_LAYER + "output.dense.", _OURS + "ff.fc2."),
    (_LAYER + "output.LayerNorm.", _OURS + "norm2."),
    ("pooler.dense.", "pooler."),
]
# Head tensors (HF names carry no prefix).
_HEADS = [
    ("cls.predictions.transform.dense.", "mlm.dense."),
    ("cls.predictions.transform.LayerNorm.", "mlm.norm."),
    ("cls.seq_relationship.", "nsp."),
    ("classifier.", "classifier."),
    ("qa_outputs.", "qa_outputs."),
]
_QKV = ("query", "key", "value")
_HF_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """HF ``BertConfig`` dict -> ``formerkit.BertConfig`` fields."""
    kind = hf.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise ValueError(f"position_embedding_type={kind!r} is not supported (only 'absolute')")
    act = hf.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS_FROM_HF:
        raise ValueError(f"hidden_act={act!r} is not supported; "
                         f"supported: {', '.join(_ACTIVATIONS_FROM_HF)}")
    values = {ours: hf[theirs] for ours, theirs in _CONFIG_KEYS if theirs in hf}
    values["activation"] = _ACTIVATIONS_FROM_HF[act]
    values["pad_token_id"] = hf.get("pad_token_id") or 0
    if "id2label" in hf:
        values["num_labels"] = len(hf["id2label"])
    elif "num_labels" in hf:
        values["num_labels"] = hf["num_labels"]
    return values


def config_to_hf(config: Any, class_name: str) -> dict[str, Any]:
    """``formerkit.BertConfig`` -> HF config dict for ``class_name``'s architecture."""
    hf = {theirs: getattr(config, ours) for ours, theirs in _CONFIG_KEYS}
    # HF sizes its QA output layer by num_labels, which must therefore be 2 (start, end).
    num_labels = 2 if class_name == "BertForQuestionAnswering" else config.num_labels
    hf.update(
        model_type="bert", architectures=[hf_architecture(CONVERTER, class_name)],
        hidden_act=_ACTIVATIONS_TO_HF[config.activation], pad_token_id=config.pad_token_id,
        position_embedding_type="absolute", tie_word_embeddings=True,
        id2label={str(i): f"LABEL_{i}" for i in range(num_labels)},
        label2id={f"LABEL_{i}": i for i in range(num_labels)},
    )
    return hf


def _rename(name: str, table: list[tuple[str, str]], reverse: bool) -> str | None:
    for hf, ours in table:
        src, dst = (ours, hf) if reverse else (hf, ours)
        pattern = "^" + re.escape(src).replace(r"\{i\}", r"(\d+)")
        match = re.match(pattern, name)
        if match:
            target = dst.replace("{i}", match.group(1)) if match.groups() else dst
            return target + name[match.end():]
    return None


def state_dict_from_hf(hf_state: StateDict, config: Any, class_name: str) -> StateDict:
    """HF tensors -> formerkit tensors for ``class_name`` (unknown HF tensors are kept under
    their own names, so the strict loader reports them)."""
    backbone_prefix = "" if class_name == "BertModel" else "bert."
    state: StateDict = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for name, tensor in hf_state.items():
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
            "LayerNorm.beta", "LayerNorm.bias")  # TF-era checkpoints
        in_backbone = name.startswith("bert.") or not name.startswith(
            ("cls.", "classifier.", "qa_outputs."))
        if in_backbone:
            local = name[len("bert."):] if name.startswith("bert.") else name
            if local in _HF_BUFFERS:
                continue
            match = re.match(r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\."
                             r"(weight|bias)$", local)
            if match:
                layer, part, kind = match.groups()
                qkv.setdefault((layer, kind), {})[part] = tensor
                continue
            ours = _rename(local, _BACKBONE, reverse=False)
            state[backbone_prefix + ours if ours else name] = tensor
        elif class_name == "BertModel":
            continue  # a head's checkpoint loaded as the bare encoder: heads are dropped
        elif name.startswith("cls.predictions.decoder."):
            continue  # tied to the embeddings / the bias below
        elif name == "cls.predictions.bias":
            state["mlm.decoder.bias"] = tensor
        else:
            state[_rename(name, _HEADS, reverse=False) or name] = tensor
    for (layer, kind), parts in qkv.items():
        missing = [p for p in _QKV if p not in parts]
        if missing:
            raise ValueError(f"layer {layer} lacks attention.self.{missing[0]}.{kind}")
        fused = torch.cat([parts[p] for p in _QKV], dim=0)  # (3D, D) or (3D,)
        state[f"{backbone_prefix}encoder.layers.{layer}.self_attn.qkv_proj.{kind}"] = fused
    if "mlm.decoder.bias" in state:
        state["mlm.decoder.weight"] = state[backbone_prefix + "embeddings.token.weight"]
    return state


def state_dict_to_hf(state: StateDict, config: Any, class_name: str) -> StateDict:
    """formerkit tensors -> HF tensors, as ``transformers`` saves them (tied decoder left out)."""
    backbone_prefix = "" if class_name == "BertModel" else "bert."
    hf: StateDict = {}
    for name, tensor in state.items():
        if name == "mlm.decoder.weight":
            continue
        if name == "mlm.decoder.bias":
            hf["cls.predictions.bias"] = tensor
            continue
        if class_name != "BertModel" and not name.startswith("bert."):
            hf[_rename(name, _HEADS, reverse=True) or name] = tensor
            continue
        local = name[len(backbone_prefix):]
        match = re.match(r"^encoder\.layers\.(\d+)\.self_attn\.qkv_proj\.(weight|bias)$", local)
        if match:
            layer, kind = match.groups()
            for part, chunk in zip(_QKV, tensor.chunk(3, dim=0)):
                hf[f"{backbone_prefix}encoder.layer.{layer}.attention.self.{part}.{kind}"] = \
                    chunk.contiguous()
            continue
        hf[backbone_prefix + (_rename(local, _BACKBONE, reverse=True) or local)] = tensor
    return hf


CONVERTER = register_converter(HFConverter(
    model_type="bert", architectures=ARCHITECTURES, config_from_hf=config_from_hf,
    config_to_hf=config_to_hf, state_dict_from_hf=state_dict_from_hf,
    state_dict_to_hf=state_dict_to_hf))
