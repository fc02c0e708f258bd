"""LoRA adapters in peft's layout: formerkit's adapters load into peft on the hf=True export
with equal outputs, and adapters peft wrote load into formerkit with equal outputs."""

from __future__ import annotations

import json

import pytest
import torch

import formerkit
from formerkit.interop.peft import load_adapter, save_adapter
from formerkit.nn.lora import LoRALinear, apply_lora

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

# (family, formerkit class, tiny overrides, formerkit targets, HF Auto class)
CASES = {
    "gpt2": ("gpt", "GPTForCausalLM", {}, ["qkv_proj", "out_proj", "fc1", "fc2"],
             "AutoModelForCausalLM"),
    "bert-classifier": ("bert", "BertForSequenceClassification", {"num_labels": 3},
                        ["qkv_proj", "out_proj", "fc1", "fc2"],
                        "AutoModelForSequenceClassification"),
    "llama": ("llama", "LlamaForCausalLM", {}, ["q_proj", "k_proj", "v_proj", "out_proj",
                                                "gate_proj", "up_proj", "down_proj"],
              "AutoModelForCausalLM"),
}


def _trained_adapter(family, cls_name, overrides, targets):
    from formerkit.models.registry import build_config

    torch.manual_seed(0)
    model = getattr(formerkit, cls_name)(build_config(family, "tiny", **overrides))
    apply_lora(model, targets=targets, rank=4, alpha=8,
               modules_to_save=["classifier"] if "Classification" in cls_name else ())
    with torch.no_grad():  # a trained-looking adapter: B is not zero
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.normal_(0.0, 0.2)
        if hasattr(model, "classifier"):
            model.classifier.weight.normal_(0.0, 0.5)
    return model.eval()


def _ids(model):
    ids = torch.randint(3, model.config.vocab_size, (2, 9), generator=torch.Generator()
                        .manual_seed(1))
    return ids, torch.ones_like(ids)


@pytest.mark.parametrize("case", list(CASES))
def test_formerkit_adapter_loads_in_peft_with_equal_outputs(tmp_path, case):
    family, cls_name, overrides, targets, auto = CASES[case]
    model = _trained_adapter(family, cls_name, overrides, targets)
    base = getattr(formerkit, cls_name)(model.config)  # the frozen weights, without adapters
    base.load_state_dict({k.replace(".base.", "."): v for k, v in model.state_dict().items()
                          if ".lora_" not in k})
    if hasattr(base, "classifier"):  # the head as it was before fine-tuning: the adapter
        torch.manual_seed(5)         # directory must carry the trained one
        base.classifier.weight.data.normal_()
    base.save_pretrained(tmp_path / "base", hf=True)
    save_adapter(model, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    hf_base = getattr(transformers, auto).from_pretrained(tmp_path / "base")
    hf = peft.PeftModel.from_pretrained(hf_base, tmp_path / "adapter").eval()
    ids, mask = _ids(model)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        got = hf(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_peft_adapter_loads_in_formerkit_with_equal_outputs(tmp_path, case):
    family, cls_name, overrides, _, auto = CASES[case]
    from formerkit.models.registry import build_config

    torch.manual_seed(0)
    ours = getattr(formerkit, cls_name)(build_config(family, "tiny", **overrides)).eval()
    ours.save_pretrained(tmp_path / "base", hf=True)
    hf_base = getattr(transformers, auto).from_pretrained(tmp_path / "base")
    targets = {"gpt": ["c_attn", "c_proj"], "bert": ["query", "value", "dense"],
               "llama": ["q_proj", "v_proj", "o_proj", "down_proj"]}[family]
    task = "SEQ_CLS" if "Classification" in cls_name else "CAUSAL_LM"
    hf = peft.get_peft_model(hf_base, peft.LoraConfig(r=2, lora_alpha=6, target_modules=targets,
                                                      task_type=task,
                                                      fan_in_fan_out=family == "gpt"))
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.normal_(0.0, 0.2)
    hf.save_pretrained(tmp_path / "peft")
    hf.eval()
    reloaded = getattr(formerkit, cls_name).from_pretrained(tmp_path / "base")
    load_adapter(reloaded, tmp_path / "peft")
    assert any(isinstance(m, LoRALinear) for m in reloaded.modules())
    ids, mask = _ids(reloaded)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        got = reloaded.eval()(ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_mismatched_adapters_are_errors_that_name_the_mismatch(tmp_path):
    gpt = _trained_adapter("gpt", "GPTForCausalLM", {}, ["qkv_proj"])
    save_adapter(gpt, tmp_path / "gpt")
    llama = formerkit.create_model("llama", preset="tiny")
    with pytest.raises(ValueError, match="targets 'transformer.h.0.attn.c_attn'"):
        load_adapter(llama, tmp_path / "gpt")
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(llama, tmp_path / "none")
    config_file = tmp_path / "gpt" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(ValueError, match="peft_type 'IA3' is not supported"):
        load_adapter(formerkit.create_model("gpt", preset="tiny"), tmp_path / "gpt")
    config_file.write_text(json.dumps({**config, "r": 3}))
    with pytest.raises(ValueError, match="do not fit"):
        load_adapter(formerkit.create_model("gpt", preset="tiny"), tmp_path / "gpt")
