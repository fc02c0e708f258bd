"""HuggingFace habits on formerkit models: outputs indexable as HF's ModelOutput (``out[0]``,
``out["loss"]``, ``to_tuple()``), ``.device``/``.dtype``, input/output embeddings,
``resize_token_embeddings`` keeping tied heads tied, gradient checkpointing on and off;
compared with transformers' GPT-2 on the same random weights."""

from __future__ import annotations

import pytest
import torch

import formerkit.models as models
from formerkit.models.base import ModelOutput
from formerkit.models.gpt import GPTForCausalLM
from formerkit.models.registry import build_config
from formerkit.models.transformer import TransformerConfig, TransformerForSeq2Seq

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gpt_pair(tmp_path_factory):
    """(formerkit GPT, transformers GPT-2) with the same random weights."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_head=4,
                                     n_layer=2, resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0, bos_token_id=1, eos_token_id=2)
    hf = transformers.GPT2LMHeadModel(config).eval()
    path = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(path)
    return GPTForCausalLM.from_pretrained(path).eval(), hf


def test_outputs_index_as_hf_model_output(gpt_pair):
    ours, hf = gpt_pair
    ids = torch.randint(3, 50, (2, 6))
    with torch.no_grad():
        for kwargs in ({}, {"labels": ids}):
            mine, theirs = ours(ids, **kwargs), hf(ids, **kwargs, use_cache=False)
            torch.testing.assert_close(mine[0], theirs[0], atol=1e-4, rtol=0)
            assert len(mine.to_tuple()) == len(theirs.to_tuple()) == len(kwargs) + 1
            assert list(mine.keys()) == [k for k in theirs.keys()]
            assert ("loss" in mine) == ("loss" in theirs) == bool(kwargs)
    with_loss = ours(ids, labels=ids)
    torch.testing.assert_close(with_loss["loss"], with_loss.loss)
    loss, logits = with_loss.to_tuple()  # unpacks as HF's
    assert logits is with_loss.logits and with_loss[1:] == (logits,)
    assert dict(with_loss.items()) == {"loss": with_loss.loss, "logits": logits}


def test_unset_fields_are_key_errors_as_in_hf():
    out = ModelOutput(logits=torch.zeros(1))
    with pytest.raises(KeyError, match="not set"):
        out["loss"]
    with pytest.raises(KeyError, match="not a field"):
        out["logitz"]
    with pytest.raises(IndexError):
        out[1]
    assert out.get("loss") is None and out.loss is None  # attribute access stays lenient


def test_device_and_dtype(gpt_pair):
    ours, _ = gpt_pair
    assert ours.device == torch.device("cpu") and ours.dtype == torch.float32
    model = models.create_model("gpt", "tiny").to(torch.bfloat16)
    assert model.dtype == torch.bfloat16


def test_input_and_output_embeddings(gpt_pair):
    ours, hf = gpt_pair
    emb = ours.get_input_embeddings()
    torch.testing.assert_close(emb.weight, hf.get_input_embeddings().weight)
    assert ours.get_output_embeddings().weight is emb.weight  # tied as in GPT-2
    new = torch.nn.Embedding(50, 32)
    model = models.create_model("gpt", "tiny", vocab_size=50, d_model=32, n_heads=4)
    model.set_input_embeddings(torch.nn.Embedding(50, 32))
    assert model.get_input_embeddings() is not new
    with pytest.raises(ValueError, match="width"):
        model.set_input_embeddings(torch.nn.Embedding(50, 8))
    forecaster = models.create_model("itransformer", seq_len=8, pred_len=4, n_vars=2,
                                     d_model=16, n_heads=2, n_layers=1, d_ff=32)
    with pytest.raises(ValueError, match="no token embedding"):
        forecaster.get_input_embeddings()


@pytest.mark.parametrize("family,cls,overrides", [
    ("gpt", "GPTForCausalLM", {}), ("gpt", "GPTForCausalLM", {"tie_embeddings": False}),
    ("bert", "BertForMaskedLM", {}), ("bert", "BertForPreTraining", {}),
])
@pytest.mark.parametrize("grow", [True, False])
def test_resize_token_embeddings_keeps_old_logits_and_ties(family, cls, overrides, grow):
    torch.manual_seed(0)
    model = getattr(models, cls)(build_config(family, "tiny", dropout=0.0, vocab_size=60,
                                              **overrides)).eval()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    ids = torch.randint(3, 40, (2, 7))
    with torch.no_grad():
        before = model(ids)[0]
    size = 65 if grow else 40
    new = model.resize_token_embeddings(size)
    assert model.config.vocab_size == size and new is model.get_input_embeddings()
    assert (model.get_output_embeddings().weight is new.weight) == tied
    with torch.no_grad():
        after = model(ids)[0]
    assert after.shape[-1] == size
    keep = min(size, 60)
    torch.testing.assert_close(after[..., :keep], before[..., :keep], atol=1e-5, rtol=0)
    if grow:  # new rows start at the mean of the old ones
        torch.testing.assert_close(new.weight[60:], new.weight[:60].mean(0).expand(5, -1))
    loss = model(ids, labels=ids if family == "gpt" else ids).loss
    loss.backward()  # still trains
    assert new.weight.grad is not None


def test_resize_matches_hf_on_kept_tokens_and_stays_tied(gpt_pair):
    ours, hf = gpt_pair
    import copy

    ours, hf = copy.deepcopy(ours), copy.deepcopy(hf)
    ours.resize_token_embeddings(64)
    hf.resize_token_embeddings(64)
    assert hf.lm_head.weight is hf.get_input_embeddings().weight
    assert ours.get_output_embeddings().weight is ours.get_input_embeddings().weight
    ids = torch.randint(3, 50, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits[..., :50], hf(ids).logits[..., :50],
                                   atol=1e-4, rtol=0)
    out = ours.generate(ids, max_new_tokens=3)
    assert out.shape == (2, 8)


def test_seq2seq_resize_follows_the_final_logits_bias():
    torch.manual_seed(0)
    model = TransformerForSeq2Seq(TransformerConfig(
        vocab_size=30, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32,
        max_seq_len=32, dropout=0.0, final_logits_bias=True)).eval()
    model.final_logits_bias.normal_()
    ids, dec = torch.randint(3, 30, (2, 5)), torch.randint(3, 30, (2, 4))
    with torch.no_grad():
        before = model(ids, None, dec).logits
    model.resize_token_embeddings(36)
    with torch.no_grad():
        after = model(ids, None, dec).logits
    assert after.shape[-1] == 36 and model.final_logits_bias.shape == (1, 36)
    torch.testing.assert_close(after[..., :30], before, atol=1e-5, rtol=0)


def test_gradient_checkpointing_enable_disable_same_gradients():
    torch.manual_seed(0)
    model = models.create_model("gpt", "tiny", dropout=0.0).train()  # checkpoints in training
    ids = torch.randint(3, 100, (2, 10))

    layer = next(m for m in model.modules() if type(m).__name__.endswith("Layer"))
    calls = []
    layer.register_forward_pre_hook(lambda *_: calls.append(1))  # recompute may stop early

    def grads():
        model.zero_grad()
        calls.clear()
        model(ids, labels=ids).loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    assert len(calls) == 1
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    checkpointed = grads()
    assert len(calls) == 2  # recomputed in the backward pass
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
