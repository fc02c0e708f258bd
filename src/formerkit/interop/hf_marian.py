"""HuggingFace Marian (Junczys-Dowmunt et al. 2018, the Transformer of Vaswani et al. 2017 as
OPUS-MT ships it) <-> formerkit ``TransformerForSeq2Seq`` / ``TransformerModel``.

Marian is the paper's post-norm encoder-decoder with its own conventions, which the formerkit
config expresses: ``[sin | cos]`` halves for positions (``position_layout="halves"``), a
``final_logits_bias``, ``swish`` activations in real checkpoints, pad = decoder start token.
HF keeps separate q/k/v projections; formerkit fuses them (rows q | k | v, cross: q and k | v).
A formerkit model with interleaved positions is saved by permuting the residual-stream basis
(even features first), which LayerNorm and every projection commute with.
"""

from __future__ import annotations

from typing import Any

import torch

from formerkit.interop.hf import HFConverter, StateDict, register_converter
from formerkit.nn import sinusoidal_table

_ACT_FROM_HF = {"swish": "swish", "silu": "silu", "relu": "relu", "gelu": "gelu",
                "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_ACT_TO_HF = {"swish": "swish", "silu": "silu", "relu": "relu", "gelu": "gelu",
              "gelu_tanh": "gelu_new"}
_PREFIX = {"TransformerForSeq2Seq": "model.", "TransformerModel": ""}


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """A MarianConfig dict -> ``TransformerConfig`` fields."""
    for ours, (enc, dec) in {"n_heads": ("encoder_attention_heads", "decoder_attention_heads"),
                             "d_ff": ("encoder_ffn_dim", "decoder_ffn_dim")}.items():
        if hf.get(enc) != hf.get(dec):
            raise ValueError(f"Marian config has {enc}={hf.get(enc)} but {dec}={hf.get(dec)}; "
                             f"formerkit uses one {ours} for both stacks")
    activation = hf.get("activation_function", "gelu")
    if activation not in _ACT_FROM_HF:
        raise ValueError(f"Marian activation_function {activation!r} is not supported; "
                         f"supported: {sorted(_ACT_FROM_HF)}")
    eos = hf.get("eos_token_id", 0)
    eos = eos[0] if isinstance(eos, list) else eos
    # transformers 5 ties nothing (not even the shared source/target embeddings) when
    # tie_word_embeddings is false, so the stacks then have embeddings of their own.
    tied = hf.get("tie_word_embeddings", True)
    shared = hf.get("share_encoder_decoder_embeddings", True) and tied
    vocab = hf["vocab_size"]
    tgt_vocab = hf.get("decoder_vocab_size") or vocab
    return dict(
        vocab_size=vocab, tgt_vocab_size=None if shared or tgt_vocab == vocab else tgt_vocab,
        d_model=hf["d_model"], n_heads=hf["encoder_attention_heads"],
        n_encoder_layers=hf["encoder_layers"], n_decoder_layers=hf["decoder_layers"],
        d_ff=hf["encoder_ffn_dim"], dropout=hf.get("dropout", 0.1),
        attn_dropout=hf.get("attention_dropout", 0.0),
        activation_dropout=hf.get("activation_dropout", 0.0),
        activation=_ACT_FROM_HF[activation], max_seq_len=hf.get("max_position_embeddings", 1024),
        layer_norm_eps=1e-5, norm_first=False, scale_embedding=hf.get("scale_embedding", False),
        position_layout="halves", share_embeddings=shared,
        tie_embeddings=tied, final_logits_bias=True,
        pad_token_id=hf["pad_token_id"], bos_token_id=hf.get("bos_token_id"), eos_token_id=eos,
        decoder_start_token_id=hf.get("decoder_start_token_id", hf["pad_token_id"]),
        label_smoothing=0.0)  # HF Marian's loss is plain cross-entropy


def config_to_hf(config: Any, class_name: str) -> dict[str, Any]:
    """``TransformerConfig`` -> MarianConfig dict (loads in ``transformers`` unchanged)."""
    if config.norm_first:
        raise ValueError("Marian is post-norm: a model with norm_first=True has no "
                         "HuggingFace Marian equivalent")
    if config.layer_norm_eps != 1e-5:
        raise ValueError(f"Marian's LayerNorm eps is 1e-5, got layer_norm_eps="
                         f"{config.layer_norm_eps}")
    if class_name == "TransformerModel" and config.position_layout != "halves":
        raise ValueError("a TransformerModel with position_layout='interleaved' saved as "
                         "MarianModel would return its hidden states with permuted features; "
                         "save the TransformerForSeq2Seq (same logits) or use 'halves'")
    architecture = {"TransformerForSeq2Seq": "MarianMTModel", "TransformerModel": "MarianModel"}
    return {
        "model_type": "marian", "architectures": [architecture[class_name]],
        "vocab_size": config.vocab_size, "decoder_vocab_size": config.target_vocab_size,
        "d_model": config.d_model, "encoder_layers": config.n_encoder_layers,
        "decoder_layers": config.n_decoder_layers,
        "encoder_attention_heads": config.n_heads, "decoder_attention_heads": config.n_heads,
        "encoder_ffn_dim": config.d_ff, "decoder_ffn_dim": config.d_ff,
        "activation_function": _ACT_TO_HF[config.activation], "dropout": config.dropout,
        "attention_dropout": config.attn_dropout,
        "activation_dropout": config.activation_dropout,
        "max_position_embeddings": config.max_seq_len, "scale_embedding": config.scale_embedding,
        "share_encoder_decoder_embeddings": config.share_embeddings,
        "tie_word_embeddings": config.tie_embeddings, "is_encoder_decoder": True,
        "pad_token_id": config.pad_token_id, "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "decoder_start_token_id": config.decoder_start_token_id,
        # formerkit's generate() stops on eos only; do not let HF force eos at max length.
        "forced_eos_token_id": None,
    }


def _layer_map(stack: str, i: int) -> list[tuple[str, str]]:
    """(formerkit suffix, HF suffix) pairs of one layer's unfused tensors."""
    ours, hf = f"{stack}.layers.{i}.", f"{stack}.layers.{i}."
    pairs = [("self_attn.out_proj", "self_attn.out_proj"), ("ff.fc1", "fc1"), ("ff.fc2", "fc2"),
             ("norm1", "self_attn_layer_norm")]
    if stack == "encoder":
        pairs.append(("norm2", "final_layer_norm"))
    else:
        pairs += [("cross_attn.q_proj", "encoder_attn.q_proj"),
                  ("cross_attn.out_proj", "encoder_attn.out_proj"),
                  ("norm2", "encoder_attn_layer_norm"), ("norm3", "final_layer_norm")]
    return [(ours + a + "." + p, hf + b + "." + p) for a, b in pairs for p in ("weight", "bias")]


def _fused_map(stack: str, i: int) -> list[tuple[str, list[str]]]:
    """(formerkit fused tensor, HF tensors concatenated along rows) of one layer."""
    base = f"{stack}.layers.{i}."
    out = []
    for p in ("weight", "bias"):
        out.append((base + f"self_attn.qkv_proj.{p}",
                    [base + f"self_attn.{x}_proj.{p}" for x in "qkv"]))
        if stack == "decoder":
            out.append((base + f"cross_attn.kv_proj.{p}",
                        [base + f"encoder_attn.{x}_proj.{p}" for x in "kv"]))
    return out


def state_dict_from_hf(hf: StateDict, config: Any, class_name: str) -> StateDict:
    """HF Marian tensors -> formerkit names (tied tensors may be stored once in the file)."""
    prefix = _PREFIX[class_name]
    hf = {k[len("model."):] if k.startswith("model.") else k: v for k, v in hf.items()}

    def get(*names: str) -> torch.Tensor:
        for name in names:
            if name in hf:
                return hf[name]
        raise ValueError(f"Marian checkpoint lacks tensor {names[0]!r}")

    src = get("encoder.embed_tokens.weight", "shared.weight")
    tgt = src if config.share_embeddings else get("decoder.embed_tokens.weight", "shared.weight")
    state = {prefix + "src_embed.weight": src, prefix + "tgt_embed.weight": tgt}
    for stack, n in (("encoder", config.n_encoder_layers), ("decoder", config.n_decoder_layers)):
        for i in range(n):
            for ours, theirs in _layer_map(stack, i):
                state[prefix + ours] = get(theirs)
            for ours, parts in _fused_map(stack, i):
                state[prefix + ours] = torch.cat([get(p) for p in parts], dim=0)
    if class_name == "TransformerForSeq2Seq":
        state["lm_head.weight"] = tgt if config.tie_embeddings else get("lm_head.weight")
        bias = hf.get("final_logits_bias")
        state["final_logits_bias"] = bias if bias is not None else \
            torch.zeros(1, config.target_vocab_size)
    return state


def _residual_permutation(config: Any) -> torch.Tensor | None:
    """Index p with halves[:, j] = interleaved[:, p[j]], or None for halves models."""
    if config.position_layout == "halves":
        return None
    return torch.cat([torch.arange(0, config.d_model, 2), torch.arange(1, config.d_model, 2)])


def state_dict_to_hf(state: StateDict, config: Any, class_name: str) -> StateDict:
    """formerkit tensors -> HF Marian names, splitting fused projections."""
    prefix = _PREFIX[class_name]
    ours = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    perm = _residual_permutation(config)

    def reads(t: torch.Tensor) -> torch.Tensor:  # input features are the residual stream
        return t if perm is None else t[..., perm]

    def writes(t: torch.Tensor) -> torch.Tensor:  # output features are the residual stream
        return t if perm is None else t[perm]

    d = config.d_model
    hf: StateDict = {}
    hf["encoder.embed_tokens.weight"] = reads(ours["src_embed.weight"])
    hf["decoder.embed_tokens.weight"] = reads(ours["tgt_embed.weight"])
    if config.share_embeddings:
        hf["shared.weight"] = hf["encoder.embed_tokens.weight"]
    for stack, n in (("encoder", config.n_encoder_layers), ("decoder", config.n_decoder_layers)):
        for i in range(n):
            for mine, theirs in _layer_map(stack, i):
                tensor = ours[mine]
                if any(s in mine for s in ("out_proj", "fc2", "norm")):
                    tensor = writes(tensor)
                elif mine.endswith("weight"):  # q_proj and fc1 read the stream
                    tensor = reads(tensor)
                hf[theirs] = tensor
            for mine, parts in _fused_map(stack, i):
                tensor = ours[mine]
                if mine.endswith("weight"):
                    tensor = reads(tensor)
                for name, piece in zip(parts, tensor.split(d, dim=0)):
                    hf[name] = piece
        table = sinusoidal_table(config.max_seq_len, d, layout="halves")
        hf[f"{stack}.embed_positions.weight"] = table
    if class_name == "TransformerForSeq2Seq":
        out = {"model." + k: v for k, v in hf.items()}
        out["lm_head.weight"] = reads(state["lm_head.weight"])
        bias = state.get("final_logits_bias")
        out["final_logits_bias"] = bias if bias is not None else \
            torch.zeros(1, config.target_vocab_size)
        return out
    return hf


register_converter(HFConverter(
    model_type="marian",
    architectures={"MarianMTModel": "TransformerForSeq2Seq", "MarianModel": "TransformerModel"},
    config_from_hf=config_from_hf, config_to_hf=config_to_hf,
    state_dict_from_hf=state_dict_from_hf, state_dict_to_hf=state_dict_to_hf,
))
