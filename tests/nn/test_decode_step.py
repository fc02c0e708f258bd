"""The compiled one-token decoding step (``DecodingPlan``) must equal the modules' own cached
forward, for every configuration the blocks build: bit for bit with exact products
(``FORMERKIT_EXACT_PRODUCTS=1``) or where no weight is blocked, within float32 rounding with
the default weight-left blocked products."""

import pytest
import torch

from formerkit.models.gpt import GPTConfig, GPTForCausalLM
from formerkit.nn import Decoder, Encoder, KVCache, RotaryEmbedding, decoding, padding_mask
from formerkit.nn.decoding import DecodingPlan, Products
from formerkit.nn.lora import apply_lora

D, H = 24, 4

# name -> Encoder.build / Decoder.build options beyond the sizes
CONFIGS = {
    "gpt2": dict(norm_first=True, final_norm=True, activation="gelu_tanh"),
    "post-norm": dict(norm_first=False, activation="relu"),
    "bert-gelu": dict(norm_first=False, activation="gelu"),
    "llama": dict(norm_first=True, final_norm=True, norm="rmsnorm", feed_forward="gated",
                  activation="silu", bias=False, fused_qkv=False, n_kv_heads=2),
    "qwen2": dict(norm_first=True, final_norm=True, norm="rmsnorm", feed_forward="gated",
                  activation="silu", bias=False, qkv_bias=True, fused_qkv=False, n_kv_heads=1),
    "mistral-window": dict(norm_first=True, final_norm=True, norm="rmsnorm",
                           feed_forward="gated", activation="silu", bias=False,
                           fused_qkv=False, n_kv_heads=2, sliding_window=3),
    "fused-gqa-geglu-head-dim": dict(norm_first=True, final_norm=True, feed_forward="gated",
                                     activation="gelu", n_kv_heads=2, head_dim=8),
    "no-bias-layernorm": dict(norm_first=True, final_norm=True, bias=False, activation="silu"),
}
ROTARY = {"llama", "qwen2", "mistral-window", "fused-gqa-geglu-head-dim"}


def _stack(name: str, decoder: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    options = dict(CONFIGS[name])
    if decoder:
        options.pop("sliding_window", None)
    cls = Decoder if decoder else Encoder
    stack = cls.build(2, d_model=D, n_heads=H, d_ff=40, dropout=0.0, **options)
    with torch.no_grad():  # non-trivial norm parameters, so a swapped norm would show
        for module in stack.modules():
            if hasattr(module, "eps") and getattr(module, "weight", None) is not None:
                module.weight.uniform_(0.5, 1.5)
    return stack.eval()


def _rotary(name: str, positions: torch.Tensor):
    if name not in ROTARY:
        return None
    head_dim = CONFIGS[name].get("head_dim", D // H)
    return RotaryEmbedding(head_dim, max_seq_len=64)(positions)


def _runners():
    return [("python", decoding._layers_step), ("torchscript", decoding.compiled_layers_step())]


@pytest.mark.parametrize("runner", ["python", "torchscript"])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_plan_equals_the_cached_forward_of_the_modules(name, padded, runner):
    encoder = _stack(name)
    plan = DecodingPlan.build(encoder)
    assert plan is not None
    plan.run_layers = dict(_runners())[runner]
    if runner == "torchscript":
        assert isinstance(plan.run_layers, torch.jit.ScriptFunction)
    keep = torch.ones(2, 9, dtype=torch.long)
    if padded:
        keep[0, :2] = 0  # left padding in row 0
    prompt = torch.randn(2, 4, D)
    # The caches start too small: the plan's buffers must grow as the modules' do. (Equal
    # capacities: SDPA's CPU kernel may block differently over differently strided buffers.)
    by_modules, by_plan = KVCache(2, max_len=5), KVCache(2, max_len=5)
    with torch.no_grad():
        positions = torch.arange(4)[None]
        prompt_mask = padding_mask(keep[:, :4]) & torch.ones(4, 4).tril().bool() \
            if padded else None
        for cache in (by_modules, by_plan):
            encoder(prompt, mask=prompt_mask, is_causal=not padded, cache=cache,
                    rotary=_rotary(name, positions))
        for t in range(4, 9):
            new = torch.randn(2, D)
            mask = padding_mask(keep[:, :t + 1]) if padded else None
            rotary = _rotary(name, torch.tensor([[t]]))
            expected = encoder(new[:, None], mask=mask, is_causal=True, cache=by_modules,
                               rotary=rotary)[0][:, 0]
            got = plan.step(new, by_plan, mask, rotary=rotary)
            assert torch.equal(got, expected), (name, t)
    assert by_plan.length == by_modules.length == 9
    assert torch.equal(by_plan[1].k[:, :, :9], by_modules[1].k[:, :, :9])
    assert torch.equal(by_plan[1].v[:, :, :9], by_modules[1].v[:, :, :9])


@pytest.mark.parametrize("name", ["post-norm", "gpt2", "llama"])
def test_plan_equals_the_modules_for_a_decoder_with_cross_attention(name):
    decoder = _stack(name, decoder=True)
    plan = DecodingPlan.build(decoder)
    assert plan is not None and plan.is_decoder
    memory = torch.randn(2, 7, D)
    source_keep = torch.ones(2, 7, dtype=torch.long)
    source_keep[1, 5:] = 0
    memory_mask = padding_mask(source_keep)
    by_modules, by_plan = KVCache(2, max_len=6), KVCache(2, max_len=6)
    with torch.no_grad():
        first = torch.randn(2, 1, D)
        for cache in (by_modules, by_plan):  # the first position fills the cross caches
            decoder(first, memory, memory_mask=memory_mask, cache=cache, cross_cache=cache,
                    rotary=_rotary(name, torch.tensor([[0]])))
        for t in range(1, 6):
            new = torch.randn(2, D)
            rotary = _rotary(name, torch.tensor([[t]]))
            expected = decoder(new[:, None], None, memory_mask=memory_mask, cache=by_modules,
                               cross_cache=by_modules, rotary=rotary)[0][:, 0]
            got = plan.step(new, by_plan, None, rotary=rotary, memory_mask=memory_mask)
            assert torch.equal(got, expected), t


def test_decoder_plan_needs_the_cross_cache():
    plan = DecodingPlan.build(_stack("post-norm", decoder=True))
    with pytest.raises(RuntimeError, match="cross-attention keys"):
        plan.step(torch.randn(1, D), KVCache(2))


def test_sliding_window_step_sees_only_the_last_window_keys():
    """With window 3, the step at position 4 sees keys 2..4: changing the input at position 0
    or 1 changes nothing, changing it at position 2 does (one layer, so no mixing before)."""
    one = Encoder([_stack("mistral-window").layers[0]]).eval()
    plan = DecodingPlan.build(one)

    def step_after(prefix: torch.Tensor) -> torch.Tensor:
        cache = KVCache(1)
        with torch.no_grad():
            one(prefix, is_causal=True, cache=cache)
            return plan.step(torch.ones(1, D), cache)

    base = torch.ones(1, 4, D)
    changed_old, changed_recent = base.clone(), base.clone()
    changed_old[:, :2] = 5.0
    changed_recent[:, 2] = 5.0
    assert torch.equal(step_after(base), step_after(changed_old))
    assert not torch.allclose(step_after(base), step_after(changed_recent))


def test_decoding_plan_starts_an_empty_cache():
    encoder = _stack("gpt2")
    plan = DecodingPlan.build(encoder)
    x = torch.randn(1, D)
    with torch.no_grad():
        expected = encoder(x[:, None], is_causal=True, cache=KVCache(2))[0][:, 0]
        cache = KVCache(2)
        got = plan.step(x, cache)
    assert torch.equal(got, expected) and cache.length == 1


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
    assert DecodingPlan.build(Encoder.build(1, d_model=D, n_heads=H, d_ff=8,
                                            backend="math")) is None
    hooked = _stack("gpt2")
    hooked.layers[1].ff.fc1.register_forward_pre_hook(lambda *args: None)
    assert DecodingPlan.build(hooked) is None
    wrapped = _stack("llama")
    apply_lora(wrapped, targets=["q_proj"], rank=2)
    assert DecodingPlan.build(wrapped) is None
    mixed = Encoder([_stack("gpt2").layers[0], _stack("post-norm").layers[0]])
    assert DecodingPlan.build(mixed) is None  # one placement per plan


def test_decoding_plan_refuses_training_mode():
    encoder = _stack("gpt2")
    plan = DecodingPlan.build(encoder)
    encoder.train()
    with pytest.raises(RuntimeError, match="eval"):
        plan.step(torch.randn(1, D), KVCache(2))


def _tiny_gpt() -> GPTForCausalLM:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, d_model=32, n_heads=2, n_layers=2, max_seq_len=32,
                       dropout=0.0)
    return GPTForCausalLM(config).eval()


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


LEFT_PADDED = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # row 0: two pads


def _decode_with_and_without_step(model, prompt: torch.Tensor, tokens: list) -> dict:
    """{True: the gathered step's run, False: the module path's}, each (logits (steps, N, V),
    decoding state), over the left-padded (2, 6) ``prompt`` and then ``tokens``."""
    runs = {}
    with torch.no_grad():
        for gathered in (True, False):
            start, state = model.start_decoding(prompt, LEFT_PADDED, expand=1,
                                                max_new_tokens=len(tokens) + 1)
            if not gathered:
                state.extras["step"] = None
            logits = [model.decoding_logits(state, start)]
            for token in tokens:
                logits.append(model.decoding_logits(state, torch.tensor(token)))
            runs[gathered] = torch.stack(logits), state
    return runs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpt_gathered_step_equals_the_module_path_bit_for_bit(dtype):
    """Left-padded rows: the step's logits and cache equal those of the module calls."""
    model = _tiny_gpt().to(dtype)
    prompt = torch.randint(0, 50, (2, 6))
    runs = _decode_with_and_without_step(model, prompt, [[[3], [7]], [[11], [2]], [[5], [5]]])
    assert torch.equal(runs[True][0], runs[False][0])
    assert torch.equal(runs[True][1].cache[1].k[:, :, :9], runs[False][1].cache[1].k[:, :, :9])


# ---- few-row products over row blocks of the weight (step_linear) ----------------------------
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 3, 6])  # 6: past the blocked range, the plain product
@pytest.mark.parametrize("blocks", [2, 3])
def test_exact_blocked_linear_equals_f_linear_bit_for_bit(blocks, rows, bias):
    torch.manual_seed(0)
    weight = torch.randn(1152, 384)
    b = torch.randn(1152) if bias else None
    step = decoding.gather_linear(weight, b, Products(blocks, exact=True))
    assert step.blocks is not None and step.blocks.shape == (blocks, 384, 1152 // blocks)
    assert step.blocks.data_ptr() == weight.data_ptr()  # a view: optimizer steps show
    x = torch.randn(rows, 384)
    for run in (decoding.step_linear, torch.jit.script(decoding.step_linear)):
        assert torch.equal(run(x, step), torch.nn.functional.linear(x, weight, b))


def test_blocked_linear_applies_only_where_it_pays():
    def blocks(weight, n):
        return decoding.gather_linear(weight, None, Products(n, exact=True)).blocks

    big = torch.randn(1152, 384)
    assert blocks(big, 1) is None  # one thread
    # 1152 rows = 72 x 16 do not split in 5 or 7 blocks of 16-row multiples: 4 and 6 do
    assert blocks(big, 5).shape == (4, 384, 288)
    assert blocks(big, 7).shape == (6, 384, 192)
    # blocks of at least BLOCK_MIN_ELEMENTS (2^15): 442,368 elements allow 13, 1152 rows 12
    assert blocks(big, 64).shape[0] == 12
    odd = torch.randn(1150, 384)  # no split into 16-row multiples: MKL would round otherwise
    assert blocks(odd, 2) is None
    assert blocks(big.bfloat16(), 2) is None
    assert blocks(big.t().contiguous().t(), 2) is None  # no view
    small = torch.randn(128, 384)  # one block's worth of elements: a thread wake-up costs more
    assert blocks(small, 2) is None


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 4, 6])  # 6: past the blocked range, F.linear's bits
@pytest.mark.parametrize("blocks", [2, 3])
def test_weight_left_blocks_are_f_linear_within_float32_rounding(blocks, rows, bias):
    torch.manual_seed(0)
    weight, b = torch.randn(1152, 384), torch.randn(1152) if bias else None
    step = decoding.gather_linear(weight, b, Products(blocks, exact=False))
    assert not step.exact and step.blocks.shape == (blocks, 1152 // blocks, 384)
    assert step.blocks.data_ptr() == weight.data_ptr()  # a view: optimizer steps show
    x = torch.randn(rows, 384)
    expected = torch.nn.functional.linear(x, weight, b)
    for run in (decoding.step_linear, torch.jit.script(decoding.step_linear)):
        out = run(x, step)
        if rows > 4:
            assert torch.equal(out, expected)
        else:  # outputs of size ~20: float32 rounding, not a misplaced row, block or bias
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)


def test_plans_take_weight_left_products_unless_exact_ones_are_asked_for(monkeypatch):
    monkeypatch.delenv("FORMERKIT_EXACT_PRODUCTS", raising=False)
    assert decoding.step_products(2) == (2, False)
    monkeypatch.setenv("FORMERKIT_EXACT_PRODUCTS", "1")
    assert decoding.step_products(2) == (2, True)
    stack = Encoder.build(1, d_model=256, n_heads=4, d_ff=512, dropout=0.0).eval()
    plan = DecodingPlan.build(stack, blocks=2)
    assert plan.products.exact and plan.layers[0].ff_in[0].exact
    assert plan.layers[0].ff_in[0].blocks.shape == (2, 256, 256)  # (n, in, out / n): exact


BLOCKED_MODELS = {  # wide enough that most weights take the blocked product
    "llama": dict(vocab_size=576, d_model=384, n_heads=6, n_kv_heads=2, n_layers=2, d_ff=1024,
                  max_seq_len=64),
    "gpt": dict(vocab_size=576, d_model=384, n_heads=6, n_layers=2, d_ff=1024, max_seq_len=64,
                dropout=0.0),
    "transformer": dict(vocab_size=576, d_model=384, n_heads=6, n_encoder_layers=1,
                        n_decoder_layers=2, d_ff=1024, max_seq_len=64, dropout=0.0),
}


@pytest.mark.parametrize("blocks", [2, 3])
@pytest.mark.parametrize("name", list(BLOCKED_MODELS))
def test_blocked_step_keeps_the_logits_of_the_module_path_bit_for_bit(name, blocks,
                                                                      monkeypatch):
    """Left-padded rows, the LM head included: blocked step logits == module-path logits."""
    import formerkit

    monkeypatch.setenv("FORMERKIT_EXACT_PRODUCTS", "1")
    monkeypatch.setattr(decoding, "step_blocks", lambda: blocks)
    torch.manual_seed(0)
    model = formerkit.create_model(name, **BLOCKED_MODELS[name]).eval()
    prompt = torch.randint(3, 576, (2, 6))
    runs = _decode_with_and_without_step(model, prompt,
                                         [[[3], [7]], [[11], [2]], [[5], [5]], [[9], [4]]])
    step = runs[True][1].extras["step"]
    assert step.plan.products == (blocks, True) and step.head.blocks is not None
    assert step.plan.layers[0].ff_out.blocks is not None  # the widest weights are blocked
    assert torch.equal(runs[True][0], runs[False][0])


@pytest.mark.parametrize("name", list(BLOCKED_MODELS))
def test_weight_left_step_keeps_the_module_path_within_float32_rounding(name, monkeypatch):
    """The default products: the step's logits are the module path's within float32 rounding,
    and greedy picks the same tokens."""
    import formerkit

    monkeypatch.delenv("FORMERKIT_EXACT_PRODUCTS", raising=False)
    monkeypatch.setattr(decoding, "step_blocks", lambda: 2)
    torch.manual_seed(0)
    model = formerkit.create_model(name, **{**BLOCKED_MODELS[name], "vocab_size": 2048}).eval()
    prompt = torch.randint(3, 2048, (2, 6))
    runs = _decode_with_and_without_step(model, prompt,
                                         [[[3], [7]], [[11], [2]], [[5], [5]], [[9], [4]]])
    step = runs[True][1].extras["step"]
    layer = step.plan.layers[0]
    assert not step.plan.products.exact and layer.ff_in[0].blocks is not None
    assert step.head.blocks.shape == (2, 1024, 384)  # (n, out / n, in): the weight on the left
    assert not torch.equal(runs[True][0], runs[False][0])  # they ran: other rounding
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-4, atol=1e-5)
    assert torch.equal(runs[True][0].argmax(-1), runs[False][0].argmax(-1))
