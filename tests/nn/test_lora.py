"""LoRA: only adapters (and chosen modules) train, the initial output is unchanged, and the
merged model equals the adapted one within 1e-5, for BERT and GPT."""

from __future__ import annotations

import pytest
import torch

import formerkit
from formerkit.nn.lora import LoRALinear, apply_lora, has_lora, merge_lora


def _bert():
    torch.manual_seed(0)
    return formerkit.BertForSequenceClassification(formerkit.BertConfig(
        vocab_size=60, d_model=32, n_heads=4, n_layers=2, d_ff=48, max_seq_len=16,
        dropout=0.0, attn_dropout=0.0)).eval()


def _randomise_adapters(model):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.normal_(0, 0.5)


def test_lora_trains_only_adapters_and_merges_exactly(tmp_path):
    model = _bert()
    ids = torch.randint(1, 60, (3, 9))
    before = model(ids).logits
    report = apply_lora(model, targets=["qkv_proj", "out_proj"], rank=4, alpha=8,
                        modules_to_save=["classifier"])
    assert len(report.adapted) == 4  # two layers x (qkv_proj, out_proj)
    torch.testing.assert_close(model(ids).logits, before)  # B = 0: unchanged at start
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("classifier.") for n in trainable)
    lora_params = 4 * 4 * (32 + 96) // 2 + 2 * 4 * (32 + 32)  # qkv: 4*(32+96), out: 4*(32+32)
    assert report.trainable == lora_params + 32 * 2 + 2
    assert 0 < report.fraction < 0.2 and "trainable" in str(report)

    # One optimiser step changes adapters and the classifier only.
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    model(ids, labels=torch.tensor([0, 1, 1])).loss.backward()
    opt.step()
    model.eval()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n

    _randomise_adapters(model)
    adapted = model(ids).logits
    assert not torch.allclose(adapted, before, atol=1e-3)
    merge_lora(model)
    assert not has_lora(model)
    torch.testing.assert_close(model(ids).logits, adapted, atol=1e-5, rtol=0)
    model.save_pretrained(tmp_path)  # original tensor names: loads as a plain model
    loaded = formerkit.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(ids).logits, adapted, atol=1e-5, rtol=0)


def test_lora_on_gpt():
    gpt = pytest.importorskip("formerkit.models.gpt")
    torch.manual_seed(0)
    model = formerkit.create_model("gpt", vocab_size=50, d_model=32, n_heads=4, n_layers=2,
                                   d_ff=64, max_seq_len=16, dropout=0.0)
    if not isinstance(model, gpt.GPTForCausalLM):
        model = gpt.GPTForCausalLM(model.config)
    model.eval()
    report = apply_lora(model, targets=["qkv_proj", "fc1", "fc2"], rank=2, alpha=4)
    assert len(report.adapted) == 6
    _randomise_adapters(model)
    ids = torch.randint(0, 50, (2, 10))
    adapted = model(ids).logits
    merge_lora(model)
    torch.testing.assert_close(model(ids).logits, adapted, atol=1e-5, rtol=0)


def test_lora_errors():
    model = _bert()
    with pytest.raises(ValueError, match="match no linear layer.*qkv_proj"):
        apply_lora(model, targets=["query"])
    with pytest.raises(ValueError, match="rank"):
        apply_lora(model, targets=["out_proj"], rank=0)
    with pytest.raises(ValueError, match="exceeds"):
        LoRALinear(torch.nn.Linear(4, 4), rank=8, alpha=1)


def test_adapters_alone_learn_a_task():
    # With the encoder frozen, rank-8 adapters on attention plus the classifier learn
    # "does the sentence contain token 7" from a random initialisation.
    torch.manual_seed(0)
    model = formerkit.BertForSequenceClassification(formerkit.BertConfig(
        vocab_size=50, d_model=64, n_heads=4, n_layers=2, d_ff=128, max_seq_len=32))
    apply_lora(model, targets=["qkv_proj", "out_proj"], rank=8, alpha=16,
               modules_to_save=["classifier"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)

    def batch(n: int):
        ids, labels = torch.randint(8, 50, (n, 16)), torch.randint(0, 2, (n,))
        rows = labels.nonzero().squeeze(1)
        ids[rows, torch.randint(1, 16, (len(rows),))] = 7
        ids[:, 0] = 2
        return ids, labels

    for _ in range(150):
        ids, labels = batch(64)
        model(ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    ids, labels = batch(512)
    assert (model(ids).logits.argmax(-1) == labels).float().mean() > 0.95
