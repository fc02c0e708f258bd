"""Generation: token-for-token equality with HF generate() on the same weights, cached equals
uncached, reproducible sampling, streaming, and clear errors."""

from __future__ import annotations

import pytest
import torch

from formerkit.generation import DecodingState, generate, stream
from formerkit.models.gpt import GPTConfig, GPTForCausalLM

transformers = pytest.importorskip("transformers")

VOCAB, CONTEXT = 40, 48


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(HF GPT2LMHeadModel, formerkit GPTForCausalLM) with the same random weights. A large init
    range makes the random model's next-token choices varied instead of repetitive."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=CONTEXT, n_embd=30, n_head=3, n_layer=2, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, initializer_range=0.3)
    hf = transformers.GPT2LMHeadModel(config).eval()
    path = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(path)
    return hf, GPTForCausalLM.from_pretrained(path)


def prompts(seed: int = 0, batch: int = 3, length: int = 7):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    for row in range(1, batch):  # left padding of different widths
        mask[row, : min(row * 2, length - 1)] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


def hf_generate(hf, ids, mask, **kwargs):
    # Pass every setting HF has its own default for (top_k=50, max_length=20, ...).
    settings = dict(max_new_tokens=12, do_sample=False, num_beams=1, top_k=None, top_p=None,
                    temperature=1.0, repetition_penalty=1.0, length_penalty=1.0,
                    early_stopping=False, pad_token_id=0, eos_token_id=None)
    settings.update(kwargs)
    with torch.no_grad():
        return hf.generate(ids, attention_mask=mask, **settings)


def fk_generate(model, ids, mask, **kwargs):
    """formerkit with the settings of ``hf_generate``; ``eos_token_id=[]`` turns off the eos
    default that both libraries otherwise take from the saved generation config."""
    settings = dict(max_new_tokens=12, pad_token_id=0, eos_token_id=None)
    settings.update(kwargs)
    if settings["eos_token_id"] is None:
        settings["eos_token_id"] = []
    return model.generate(ids, attention_mask=mask, **settings)


def frequent_token(sequences, prompt_len):
    """A token the model generates early in row 0 (to use as eos so that rows stop early)."""
    return int(sequences[0, prompt_len + 2])


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_matches_hf_with_left_padding(pair, seed):
    hf, model = pair
    ids, mask = prompts(seed)
    expected = hf_generate(hf, ids, mask)
    assert torch.equal(fk_generate(model, ids, mask), expected)


def test_greedy_eos_stops_rows_and_pads(pair):
    hf, model = pair
    ids, mask = prompts(2)
    eos = frequent_token(hf_generate(hf, ids, mask), ids.shape[1])
    expected = hf_generate(hf, ids, mask, eos_token_id=eos, pad_token_id=3)
    ours = fk_generate(model, ids, mask, eos_token_id=eos, pad_token_id=3)
    assert torch.equal(ours, expected)
    assert (ours[0, ids.shape[1] + 3:] == 3).all()  # row 0 finished and is padded
    # A list of eos ids stops at any of them.
    other = int(expected[1, ids.shape[1] + 1])
    expected = hf_generate(hf, ids, mask, eos_token_id=[eos, other], pad_token_id=3)
    assert torch.equal(fk_generate(model, ids, mask, eos_token_id=[eos, other], pad_token_id=3),
                       expected)


def test_greedy_stops_when_every_row_finished(pair):
    hf, model = pair
    ids, mask = prompts(3, batch=1)
    eos = frequent_token(hf_generate(hf, ids, mask), ids.shape[1])
    ours = model.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos)
    assert ours.shape[1] < ids.shape[1] + 12 and int(ours[0, -1]) == eos
    assert torch.equal(ours, hf_generate(hf, ids, mask, eos_token_id=eos))


def test_repetition_penalty_matches_hf(pair):
    hf, model = pair
    ids, mask = prompts(4)
    for penalty in (1.5, 0.7):
        expected = hf_generate(hf, ids, mask, repetition_penalty=penalty)
        ours = fk_generate(model, ids, mask, repetition_penalty=penalty)
        assert torch.equal(ours, expected)


@pytest.mark.parametrize("beams,length_penalty,early_stopping", [
    (2, 1.0, False), (3, 0.5, True), (4, 2.0, "never"), (3, -1.0, False)])
def test_beam_search_matches_hf(pair, beams, length_penalty, early_stopping):
    hf, model = pair
    ids, mask = prompts(5)
    eos = frequent_token(hf_generate(hf, ids, mask), ids.shape[1])
    # The batch of one (row 0 ends with eos) may stop before max_new_tokens.
    for rows, eos_token_id in ((3, None), (3, eos), (1, eos)):
        kwargs = dict(num_beams=beams, length_penalty=length_penalty,
                      early_stopping=early_stopping, eos_token_id=eos_token_id)
        expected = hf_generate(hf, ids[:rows], mask[:rows], **kwargs)
        ours = fk_generate(model, ids[:rows], mask[:rows], **kwargs)
        assert torch.equal(ours, expected), (kwargs, ours, expected)


def test_beam_search_with_repetition_penalty_matches_hf(pair):
    hf, model = pair
    ids, mask = prompts(6)
    expected = hf_generate(hf, ids, mask, num_beams=3, repetition_penalty=1.3)
    assert torch.equal(fk_generate(model, ids, mask, num_beams=3, repetition_penalty=1.3),
                       expected)


@pytest.mark.parametrize("kwargs", [dict(temperature=0.7, top_k=10), dict(top_p=0.8),
                                    dict(temperature=1.3, top_k=5, top_p=0.9,
                                         repetition_penalty=1.2)])
def test_sampling_matches_hf_with_the_same_global_seed(pair, kwargs):
    # Both draw one torch.multinomial per step from the global RNG, so equal processing
    # (temperature, top-k, top-p) gives equal samples.
    hf, model = pair
    ids, mask = prompts(7)
    torch.manual_seed(11)
    expected = hf_generate(hf, ids, mask, do_sample=True, **kwargs)
    torch.manual_seed(11)
    ours = fk_generate(model, ids, mask, do_sample=True, **kwargs)
    assert torch.equal(ours, expected)


def test_beam_sampling_matches_hf_with_the_same_global_seed(pair):
    hf, model = pair
    ids, mask = prompts(15)
    kwargs = dict(do_sample=True, num_beams=2, temperature=0.9, top_k=8)
    torch.manual_seed(12)
    expected = hf_generate(hf, ids, mask, **kwargs)
    torch.manual_seed(12)
    assert torch.equal(fk_generate(model, ids, mask, **kwargs), expected)


@pytest.fixture(scope="module")
def wide_pair(tmp_path_factory):
    """A pair whose beams * vocabulary candidates (4 * 2,048) take the chunked top-k."""
    torch.manual_seed(1)
    config = transformers.GPT2Config(
        vocab_size=2048, n_positions=CONTEXT, n_embd=24, n_head=2, n_layer=1, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, initializer_range=0.3)
    hf = transformers.GPT2LMHeadModel(config).eval()
    path = tmp_path_factory.mktemp("gpt2-wide")
    hf.save_pretrained(path)
    return hf, GPTForCausalLM.from_pretrained(path)


@pytest.mark.parametrize("beams,length_penalty,early_stopping", [
    (4, 1.0, False), (3, 0.6, True), (4, 2.0, "never")])
def test_beam_search_over_a_wide_vocabulary_matches_hf(wide_pair, beams, length_penalty,
                                                       early_stopping):
    """Covers the chunked top-k over beams * vocabulary candidates and both beam steps: the
    common one where none of the best candidates stops, and the one where some end with eos."""
    hf, model = wide_pair
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(3, 2048, (3, 6), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    ids = ids.masked_fill(mask == 0, 0)
    eos = frequent_token(hf_generate(hf, ids, mask), ids.shape[1])
    for eos_token_id in (None, eos, [eos, 5]):
        kwargs = dict(num_beams=beams, length_penalty=length_penalty,
                      early_stopping=early_stopping, eos_token_id=eos_token_id,
                      max_new_tokens=16)
        expected = hf_generate(hf, ids, mask, **kwargs)
        assert torch.equal(fk_generate(model, ids, mask, **kwargs), expected), kwargs


def test_top_candidates_equal_torch_topk():
    from formerkit.generation import _top_candidates

    gen = torch.Generator().manual_seed(0)
    for batch, n, k in ((1, 32000, 8), (3, 8192, 12), (2, 4096, 8), (2, 1000, 6)):
        scores = torch.randn(batch, n, generator=gen).log_softmax(-1)
        scores[0, ::3] = float("-inf")  # masked candidates (bad words, min length)
        scores[-1, 17] = 5.0  # one far-ahead candidate: its chunk has the only large score
        values, ids = _top_candidates(scores, k)
        expected = torch.topk(scores, k)
        assert torch.equal(values, expected.values) and torch.equal(ids, expected.indices)
    scores = torch.full((1, 4096), float("-inf"))
    scores[0, 4000] = 0.0
    values, ids = _top_candidates(scores, 8)  # fewer finite scores than k
    assert int(ids[0, 0]) == 4000 and torch.equal(values, torch.topk(scores, 8).values)


def test_sampling_reproducible_with_seed_or_generator(pair):
    _, model = pair
    ids, mask = prompts(8)
    kwargs = dict(attention_mask=mask, max_new_tokens=12, do_sample=True, temperature=1.5)
    first = model.generate(ids, seed=3, **kwargs)
    assert torch.equal(first, model.generate(ids, seed=3, **kwargs))
    assert torch.equal(first, model.generate(ids, generator=torch.Generator().manual_seed(3),
                                             **kwargs))
    assert not torch.equal(first, model.generate(ids, seed=4, **kwargs))


def test_degenerate_sampling_equals_greedy(pair):
    _, model = pair
    ids, mask = prompts(9)
    greedy = model.generate(ids, attention_mask=mask, max_new_tokens=10)
    assert torch.equal(greedy, model.generate(ids, attention_mask=mask, max_new_tokens=10,
                                              do_sample=True, top_k=1, seed=0))
    assert torch.equal(greedy, model.generate(ids, attention_mask=mask, max_new_tokens=10,
                                              do_sample=True, top_p=1e-6, seed=0))


def test_cached_decoding_equals_uncached(pair):
    _, model = pair
    ids, mask = prompts(10)
    ours = model.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=[])
    # Reference: the whole sequence through the model at every step, no cache.
    seqs, full_mask = ids, mask
    with torch.no_grad():
        for _ in range(10):
            position_ids = (full_mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(seqs, attention_mask=full_mask, position_ids=position_ids).logits
            seqs = torch.cat([seqs, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            full_mask = torch.cat([full_mask, torch.ones_like(full_mask[:, :1])], dim=1)
    assert torch.equal(ours, seqs)


def test_stream_yields_the_generated_tokens(pair):
    _, model = pair
    ids, mask = prompts(11)
    steps = list(model.stream(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[]))
    assert len(steps) == 8 and all(step.shape == (3,) for step in steps)
    full = model.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[])
    assert torch.equal(torch.stack(steps, dim=1), full[:, ids.shape[1]:])
    assert torch.equal(torch.stack(list(stream(model, ids, mask, max_new_tokens=8,
                                               eos_token_id=[])), 1),
                       full[:, ids.shape[1]:])
    with pytest.raises(ValueError, match="num_beams"):
        model.stream(ids, num_beams=2)


def test_token_defaults_come_from_generation_config(pair, tmp_path):
    hf, model = pair
    ids, mask = prompts(12)
    eos = frequent_token(hf_generate(hf, ids, mask), ids.shape[1])
    expected = hf_generate(hf, ids, mask, eos_token_id=eos, pad_token_id=5)
    saved = model.generation_config
    try:
        model.generation_config = {"eos_token_id": eos, "pad_token_id": 5}
        assert torch.equal(generate(model, ids, mask, max_new_tokens=12), expected)
        model.save_pretrained(tmp_path)
        loaded = GPTForCausalLM.from_pretrained(tmp_path)
        assert loaded.generation_config == {"eos_token_id": eos, "pad_token_id": 5}
        assert torch.equal(loaded.generate(ids, attention_mask=mask, max_new_tokens=12),
                           expected)
    finally:
        model.generation_config = saved


def test_no_padding_mask_equals_no_mask(pair):
    _, model = pair
    ids = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(13))
    assert torch.equal(model.generate(ids, max_new_tokens=6),
                       model.generate(ids, attention_mask=torch.ones_like(ids),
                                      max_new_tokens=6))


def test_decoding_state_reorders_rows():
    from formerkit.nn import KVCache

    cache, cross = KVCache(1), KVCache(1)
    cache[0].append(torch.arange(3.0).view(3, 1, 1, 1), torch.arange(3.0).view(3, 1, 1, 1))
    state = DecodingState(cache, torch.tensor([[1], [0], [1]]),
                          {"memory": torch.arange(3), "cross": cross, "step": 4})
    state.reorder(torch.tensor([2, 2, 0]))
    assert state.cache[0].k.flatten().tolist() == [2.0, 2.0, 0.0]
    assert state.attention_mask.flatten().tolist() == [1, 1, 1]
    assert state.extras["memory"].tolist() == [2, 2, 0] and state.extras["step"] == 4


def test_decoding_state_leaves_rows_in_place_for_the_identity():
    from formerkit.nn import KVCache

    cache = KVCache(1)
    cache[0].append(torch.arange(3.0).view(3, 1, 1, 1), torch.arange(3.0).view(3, 1, 1, 1))
    mask, keys = torch.ones(3, 1), cache[0].k
    state = DecodingState(cache, mask)
    state.reorder(torch.arange(3))
    assert state.attention_mask is mask and state.cache[0].k is keys  # nothing copied
    state.reorder(torch.tensor([0, 2, 1]))
    assert state.cache[0].k.flatten().tolist() == [0.0, 2.0, 1.0]


def test_beam_reorder_leaves_per_input_state_and_cross_attention_in_place():
    """Rows move only among copies of one input: its encoder output, masks and cross-attention
    keys/values are the same in every copy, so reordering them would only cost time."""
    from formerkit.nn import KVCache

    cache = KVCache(1)
    rows = torch.arange(4.0).view(4, 1, 1, 1)
    cache[0].append(rows, rows)
    cache[0].set_cross(rows + 10, rows + 20)
    memory = torch.arange(4)
    state = DecodingState(cache, None, {"memory": memory, "scores": torch.arange(4)},
                          per_input=("memory",))
    state.reorder(torch.tensor([1, 1, 3, 2]))
    assert state.cache[0].k.flatten().tolist() == [1.0, 1.0, 3.0, 2.0]
    assert state.cache[0].cross_k.flatten().tolist() == [10.0, 11.0, 12.0, 13.0]
    assert state.extras["memory"] is memory
    assert state.extras["scores"].tolist() == [1, 1, 3, 2]


# ---- errors ----------------------------------------------------------------------------------

def test_clear_errors(pair):
    _, model = pair
    ids = torch.randint(3, VOCAB, (1, 5))
    with pytest.raises(ValueError, match="longer than the model's context"):
        model.generate(torch.zeros(1, CONTEXT + 1, dtype=torch.long), max_new_tokens=1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(ids, max_new_tokens=CONTEXT)
    with pytest.raises(ValueError, match="empty"):
        model.generate(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="no tokens"):
        model.generate(ids, attention_mask=torch.zeros_like(ids))
    for top_p in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="top_p"):
            model.generate(ids, do_sample=True, top_p=top_p)
    for temperature in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            model.generate(ids, do_sample=True, temperature=temperature)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(ids, do_sample=True, top_k=0)
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(ids, num_beams=0)
    with pytest.raises(ValueError, match="input_ids"):
        model.generate(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        model.generate(ids, attention_mask=torch.ones(1, 4))


def test_greedy_ignores_temperature(pair):
    _, model = pair
    ids = torch.randint(3, VOCAB, (1, 4), generator=torch.Generator().manual_seed(14))
    assert torch.equal(model.generate(ids, max_new_tokens=5, temperature=0.0),
                       model.generate(ids, max_new_tokens=5))


def test_gpt_config_small_model_generates():
    model = GPTForCausalLM(GPTConfig(vocab_size=20, d_model=16, n_heads=2, n_layers=1,
                                     max_seq_len=16, dropout=0.0)).eval()
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, num_beams=2)
    assert out.shape == (1, 7) and torch.equal(out[:, :3], torch.tensor([[1, 2, 3]]))


@pytest.mark.parametrize("bad", [-1, 40])
def test_token_id_outside_the_vocabulary_is_a_clear_error(bad):
    # e.g. a tokenizer larger than the model's vocabulary: not an IndexError in the embedding
    model = GPTForCausalLM(GPTConfig(vocab_size=40, d_model=16, n_heads=2, n_layers=1,
                                     max_seq_len=16)).eval()
    ids = torch.tensor([[1, 2, bad]])
    with pytest.raises(ValueError, match=f"token id {bad}, outside the model's vocabulary of 40"):
        generate(model, ids, max_new_tokens=2)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        next(iter(stream(model, ids, max_new_tokens=2)))
