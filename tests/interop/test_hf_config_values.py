"""Bad values in a HuggingFace config.json are one-line errors naming the file and field,
never a TypeError from deep inside the model or a silently accepted NaN."""

from __future__ import annotations

import json

import pytest
import torch

from formerkit import BertModel, GPTForCausalLM

GPT2 = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 32,
        "n_embd": 16, "n_head": 2, "n_layer": 2, "n_positions": 16}
BERT = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 32,
        "hidden_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1,
        "intermediate_size": 32, "max_position_embeddings": 16}


def _write(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    from safetensors.torch import save_file

    save_file({"wte.weight": torch.zeros(32, 16)}, str(tmp_path / "model.safetensors"))
    return tmp_path


@pytest.mark.parametrize("cls, base, key, value, match", [
    (GPTForCausalLM, GPT2, "n_layer", 1.5, "n_layers must be an integer, got 1.5"),
    (GPTForCausalLM, GPT2, "layer_norm_epsilon", float("nan"), "layer_norm_eps must be a "
                                                                "number, got nan"),
    (GPTForCausalLM, GPT2, "n_embd", "16", "d_model must be an integer, got '16'"),
    (GPTForCausalLM, GPT2, "layer_norm_epsilon", -1e-5, "layer_norm_eps must be positive"),
    (BertModel, BERT, "num_hidden_layers", 2.5, "n_layers must be an integer, got 2.5"),
    (BertModel, BERT, "layer_norm_eps", float("nan"), "layer_norm_eps must be a number"),
])
def test_bad_hf_config_value_is_a_clear_error(tmp_path, cls, base, key, value, match):
    path = _write(tmp_path, {**base, key: value})
    with pytest.raises(ValueError, match=match) as info:
        cls.from_pretrained(path)
    assert str(path / "config.json") in str(info.value)
