"""The single-token decoding path (``decode_step``) must equal the general cached forward."""

import pytest
import torch

from formerkit.models.gpt import GPTConfig, GPTForCausalLM
from formerkit.nn import Encoder, KVCache, MultiHeadAttention, decoding, padding_mask
from formerkit.nn.decoding import DecodingPlan
from formerkit.nn.lora import apply_lora


def _encoder(norm_first: bool, backend: str = "sdpa", activation: str = "gelu") -> Encoder:
    torch.manual_seed(0)
    encoder = Encoder(2, final_norm=norm_first, d_model=24, n_heads=3, d_ff=40, dropout=0.0,
                      activation=activation, norm_first=norm_first, backend=backend)
    return encoder.eval()


def _tiny_gpt() -> GPTForCausalLM:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, d_model=32, n_heads=2, n_layers=2, max_seq_len=32,
                       dropout=0.0)
    return GPTForCausalLM(config).eval()


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("backend", ["sdpa", "math", "linear"])
def test_encoder_decode_step_equals_cached_forward(norm_first, backend):
    encoder = _encoder(norm_first, backend)
    prompt = torch.randn(2, 5, 24)
    steps = torch.randn(2, 4, 24)
    general, fast = KVCache(2, max_len=9), KVCache(2, max_len=9)
    with torch.no_grad():
        encoder(prompt, is_causal=True, cache=general)
        encoder(prompt, is_causal=True, cache=fast)
        for t in range(steps.shape[1]):
            expected = encoder(steps[:, t:t + 1], is_causal=True, cache=general)[0][:, 0]
            got = encoder.decode_step(steps[:, t], fast)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert fast.length == general.length == 9
    torch.testing.assert_close(fast[1].k[:, :, :9], general[1].k[:, :, :9])


def test_decode_step_applies_the_padding_mask():
    encoder = _encoder(norm_first=True)
    prompt = torch.randn(2, 5, 24)
    keep = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # row 0 left-padded
    general, fast = KVCache(2), KVCache(2)
    with torch.no_grad():
        prefill_mask = padding_mask(keep[:, :5]) & torch.ones(5, 5, dtype=torch.bool).tril()
        encoder(prompt, mask=prefill_mask, cache=general)
        encoder(prompt, mask=prefill_mask, cache=fast)
        new = torch.randn(2, 24)
        expected = encoder(new[:, None], mask=padding_mask(keep), cache=general)[0][:, 0]
        got = encoder.decode_step(new, fast, padding_mask(keep))
        unmasked = encoder.decode_step(torch.zeros(2, 24), KVCache(2), None)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert unmasked.shape == (2, 24)


def test_decode_step_refuses_training_mode_and_cross_attention():
    encoder = _encoder(norm_first=True).train()
    with pytest.raises(RuntimeError, match="eval"):
        encoder.decode_step(torch.randn(1, 24), KVCache(2))
    cross = MultiHeadAttention(24, 3, cross=True)
    with pytest.raises(ValueError, match="cross-attention"):
        cross.decode_step(torch.randn(1, 24), KVCache(1)[0])


def test_lora_adapters_and_hooks_are_honoured_while_decoding():
    model = _tiny_gpt()
    prompt = torch.randint(0, 50, (1, 6))
    with torch.no_grad():
        plain = model.generate(prompt, max_new_tokens=8, eos_token_id=[])
    apply_lora(model, targets=["qkv_proj", "fc2"], rank=2, alpha=4)
    adapters = [m.lora_B for m in model.modules() if hasattr(m, "lora_B")]
    assert len(adapters) == 4
    for lora_b in adapters:  # non-zero adapters, so they change the output
        torch.nn.init.normal_(lora_b, std=2.0)
    calls = []
    model.transformer.encoder.layers[0].ff.fc1.register_forward_hook(
        lambda *args: calls.append(1))
    with torch.no_grad():
        cached = model.generate(prompt, max_new_tokens=8, eos_token_id=[])
        full = prompt
        for _ in range(8):  # uncached reference: the whole sequence each step
            full = torch.cat([full, model(full).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, full)
    assert not torch.equal(cached, plain)  # the adapters were applied, not skipped
    assert len(calls) >= 8  # the hooked layer ran as a module at every decoding step


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu", "silu"])
@pytest.mark.parametrize("runner", ["torchscript", "python"])
def test_decoding_plan_equals_decode_step_bit_for_bit(norm_first, padded, activation, runner):
    encoder = _encoder(norm_first, activation=activation)
    plan = DecodingPlan.build(encoder)
    assert plan is not None
    if runner == "python":
        plan.run_layers = decoding._layers_step
    else:
        assert isinstance(plan.run_layers, torch.jit.ScriptFunction)
    keep = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]])
    prompt = torch.randn(2, 5, 24)
    # The plan's cache starts too small: its buffers must grow as the modules' do.
    by_modules, by_plan = KVCache(2, max_len=8), KVCache(2, max_len=5)
    with torch.no_grad():
        for cache in (by_modules, by_plan):
            encoder(prompt, is_causal=True, cache=cache)
        for t in range(5, 8):
            mask = padding_mask(keep[:, :t + 1]) if padded else None
            new = torch.randn(2, 24)
            expected = encoder.decode_step(new, by_modules, mask)
            got = plan.step(new, by_plan, mask)
            assert torch.equal(got, expected)
    assert by_plan.length == by_modules.length == 8
    assert torch.equal(by_plan[1].k[:, :, :8], by_modules[1].k[:, :, :8])
    assert torch.equal(by_plan[1].v[:, :, :8], by_modules[1].v[:, :, :8])


def test_decoding_plan_starts_an_empty_cache():
    encoder = _encoder(True)
    plan = DecodingPlan.build(encoder)
    x = torch.randn(3, 24)
    with torch.no_grad():
        expected = encoder.decode_step(x, KVCache(2))
        cache = KVCache(2)
        got = plan.step(x, cache)
    assert torch.equal(got, expected)
    assert cache.length == 1 and cache[0].k.shape == (3, 3, 1, 8)


def test_decoding_step_runs_as_python_when_torchscript_is_off_or_fails(monkeypatch):
    build = decoding.compiled_layers_step.__wrapped__  # uncached
    monkeypatch.setenv("FORMERKIT_TORCHSCRIPT", "0")
    assert build() is decoding._layers_step
    monkeypatch.delenv("FORMERKIT_TORCHSCRIPT")

    def no_torchscript(fn):
        raise RuntimeError("TorchScript is not available")

    monkeypatch.setattr(torch.jit, "script", no_torchscript)
    with pytest.warns(RuntimeWarning, match="TorchScript is not available"):
        assert build() is decoding._layers_step


def test_decoding_plan_declines_what_needs_a_module_call():
    assert DecodingPlan.build(_encoder(True, backend="math")) is None
    hooked = _encoder(True)
    hooked.layers[1].ff.fc1.register_forward_pre_hook(lambda *args: None)
    assert DecodingPlan.build(hooked) is None
    no_bias = Encoder(1, d_model=24, n_heads=3, d_ff=40, norm_first=True, bias=False)
    assert DecodingPlan.build(no_bias) is None
    wrapped = _encoder(True)
    apply_lora(wrapped, targets=["out_proj"], rank=2)
    assert DecodingPlan.build(wrapped) is None


def test_decoding_plan_refuses_training_mode():
    encoder = _encoder(True)
    plan = DecodingPlan.build(encoder)
    encoder.train()
    with pytest.raises(RuntimeError, match="eval"):
        plan.step(torch.randn(1, 24), KVCache(2))


def test_gpt_generation_takes_the_gathered_step_only_where_it_applies():
    model = _tiny_gpt()
    prompt = torch.randint(0, 50, (2, 6))
    _, state = model.start_decoding(prompt, None, expand=1, max_new_tokens=4)
    assert isinstance(state.extras["step"].plan, DecodingPlan)
    with torch.no_grad():
        planned = model.generate(prompt, max_new_tokens=12, eos_token_id=[])
        model.transformer.encoder.layers[0].register_forward_hook(lambda *args: None)
        _, state = model.start_decoding(prompt, None, expand=1, max_new_tokens=4)
        assert state.extras["step"] is None
        by_modules = model.generate(prompt, max_new_tokens=12, eos_token_id=[])
    assert torch.equal(planned, by_modules)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpt_gathered_step_equals_the_module_path_bit_for_bit(dtype):
    """Left-padded rows: the step's logits and cache equal those of the module calls."""
    model = _tiny_gpt().to(dtype)
    prompt = torch.randint(0, 50, (2, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    runs = {}
    with torch.no_grad():
        for gathered in (True, False):
            start, state = model.start_decoding(prompt, mask, expand=1, max_new_tokens=4)
            if not gathered:
                state.extras["step"] = None
            logits = [model.decoding_logits(state, start)]
            for token in ([[3], [7]], [[11], [2]], [[5], [5]]):
                logits.append(model.decoding_logits(state, torch.tensor(token)))
            runs[gathered] = torch.stack(logits), state.cache[1].k[:, :, :9]
    assert torch.equal(runs[True][0], runs[False][0])
    assert torch.equal(runs[True][1], runs[False][1])
