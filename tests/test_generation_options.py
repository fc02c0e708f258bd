"""The transformers ``generate()`` options on formerkit's generic loop, compared token for token
with transformers on the same random-init GPT-2 weights: max_length, min_new_tokens,
no_repeat_ngram_size, num_return_sequences, return_dict_in_generate (sequences + scores),
stopping_criteria, stop_strings, streamer, generation_config=, min_p."""

from __future__ import annotations

import pytest
import torch

from formerkit.data.tokenizers import train_char_tokenizer
from formerkit.generation import GenerationSettings
from formerkit.generation_rules import StopStrings, ban_repeated_ngrams
from formerkit.models.gpt import GPTConfig, GPTForCausalLM
from formerkit.models.transformer import TransformerConfig, TransformerForSeq2Seq

transformers = pytest.importorskip("transformers")

VOCAB, CONTEXT = 40, 48


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(HF GPT2LMHeadModel, formerkit GPTForCausalLM) with the same random weights; a large
    init range makes a random model's choices varied."""
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
    return ids.masked_fill(mask == 0, 0), mask


BASE = dict(do_sample=False, num_beams=1, top_k=None, top_p=None, temperature=1.0,
            repetition_penalty=1.0, pad_token_id=0)


def hf_generate(hf, ids, mask, **kwargs):
    settings = {**BASE, "max_new_tokens": 12, "eos_token_id": None, **kwargs}
    with torch.no_grad():
        return hf.generate(ids, attention_mask=mask, **settings)


def fk_generate(model, ids, mask, **kwargs):
    settings = {"max_new_tokens": 12, "pad_token_id": 0, "eos_token_id": [], **kwargs}
    return model.generate(ids, attention_mask=mask, **settings)


def eos_of(hf, ids, mask):
    """A token the model picks early in row 0 (eos that makes rows stop early)."""
    return int(hf_generate(hf, ids, mask)[0, ids.shape[1] + 2])


def test_max_length_counts_the_prompt(pair):
    hf, model = pair
    ids, mask = prompts()
    expected = hf_generate(hf, ids, mask, max_new_tokens=None, max_length=15)
    ours = fk_generate(model, ids, mask, max_new_tokens=None, max_length=15)
    assert ours.shape == (3, 15) and torch.equal(ours, expected)
    with pytest.raises(ValueError, match="max_length=7"):
        fk_generate(model, ids, mask, max_new_tokens=None, max_length=7)


def test_max_length_of_seq2seq_counts_the_decoder_start():
    torch.manual_seed(0)
    model = TransformerForSeq2Seq(TransformerConfig(
        vocab_size=30, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1,
        d_ff=32, max_seq_len=32, dropout=0.0)).eval()
    out = model.generate(torch.randint(3, 30, (2, 9)), max_length=6, eos_token_id=[])
    assert out.shape == (2, 6)


def test_min_new_tokens_matches_hf(pair):
    hf, model = pair
    ids, mask = prompts(1)
    eos = eos_of(hf, ids, mask)
    for minimum in (0, 5):
        expected = hf_generate(hf, ids, mask, eos_token_id=eos, pad_token_id=3,
                               min_new_tokens=minimum)
        ours = fk_generate(model, ids, mask, eos_token_id=eos, pad_token_id=3,
                           min_new_tokens=minimum)
        assert torch.equal(ours, expected)
    assert (ours[:, 7:12] != eos).all()  # no eos among the first five new tokens


@pytest.mark.parametrize("size", [1, 2, 3])
def test_no_repeat_ngram_size_matches_hf(pair, size):
    hf, model = pair
    ids, mask = prompts(2)
    expected = hf_generate(hf, ids, mask, no_repeat_ngram_size=size, max_new_tokens=20)
    ours = fk_generate(model, ids, mask, no_repeat_ngram_size=size, max_new_tokens=20)
    assert torch.equal(ours, expected)


def test_ngram_ban_by_hand():
    scores = torch.zeros(1, 6)
    banned = ban_repeated_ngrams(scores, torch.tensor([[1, 2, 3, 1, 2]]), 3)
    assert torch.isinf(banned[0, 3]) and torch.isfinite(banned[0, [0, 1, 2, 4, 5]]).all()


def test_num_return_sequences_sampling_matches_hf(pair):
    hf, model = pair
    ids, mask = prompts(3)
    torch.manual_seed(5)
    expected = hf_generate(hf, ids, mask, do_sample=True, num_return_sequences=3, top_k=10)
    torch.manual_seed(5)
    ours = fk_generate(model, ids, mask, do_sample=True, num_return_sequences=3, top_k=10)
    assert ours.shape[0] == 9 and torch.equal(ours, expected)


def test_num_return_sequences_beams_match_hf_with_scores(pair):
    hf, model = pair
    ids, mask = prompts(4)
    eos = eos_of(hf, ids, mask)
    kwargs = dict(num_beams=4, num_return_sequences=3, eos_token_id=eos, pad_token_id=3,
                  length_penalty=1.0, early_stopping=False)
    expected = hf_generate(hf, ids, mask, return_dict_in_generate=True, output_scores=True,
                           **kwargs)
    ours = fk_generate(model, ids, mask, return_dict_in_generate=True, **kwargs)
    assert torch.equal(ours.sequences, expected.sequences)
    torch.testing.assert_close(ours.sequences_scores, expected.sequences_scores, atol=1e-4,
                               rtol=0)


def test_greedy_with_several_return_sequences_is_an_error(pair):
    _, model = pair
    ids, mask = prompts()
    with pytest.raises(ValueError, match="do_sample=True or num_beams"):
        fk_generate(model, ids, mask, num_return_sequences=2)


@pytest.mark.parametrize("kwargs", [{}, {"do_sample": True, "temperature": 0.7, "top_k": 8},
                                    {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2}])
def test_return_dict_scores_and_logits_match_hf(pair, kwargs):
    hf, model = pair
    ids, mask = prompts(5)
    eos = eos_of(hf, ids, mask)
    flags = dict(return_dict_in_generate=True, output_scores=True, output_logits=True,
                 eos_token_id=eos, pad_token_id=3, **kwargs)
    torch.manual_seed(9)
    expected = hf_generate(hf, ids, mask, **flags)
    torch.manual_seed(9)
    ours = fk_generate(model, ids, mask, **flags)
    assert torch.equal(ours.sequences, expected.sequences)
    assert len(ours.scores) == len(expected.scores) == ours.sequences.shape[1] - 7
    for mine, theirs in zip(ours.scores, expected.scores):
        finite = torch.isfinite(theirs)
        assert torch.equal(torch.isfinite(mine), finite)
        torch.testing.assert_close(mine[finite], theirs[finite], atol=1e-4, rtol=0)
    for mine, theirs in zip(ours.logits, expected.logits):
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)
    assert ours["sequences"] is ours.sequences and ours[0] is ours.sequences


def test_stopping_criteria_from_transformers_and_plain_callables(pair):
    hf, model = pair
    ids, mask = prompts(6)
    criteria = transformers.StoppingCriteriaList([transformers.MaxLengthCriteria(max_length=11)])
    expected = hf_generate(hf, ids, mask, stopping_criteria=criteria)
    assert torch.equal(fk_generate(model, ids, mask, stopping_criteria=criteria), expected)
    assert expected.shape[1] == 11

    target = int(expected[0, 8])  # stop row 0 when it emits this token; others continue

    def row_zero_hits(sequences, scores):
        done = torch.zeros(sequences.shape[0], dtype=torch.bool)
        done[0] = sequences[0, -1] == target
        return done

    ours = fk_generate(model, ids, mask, stopping_criteria=[row_zero_hits], pad_token_id=3)
    assert (ours[0, 9:] == 3).all() and ours.shape[1] == 7 + 12
    plain = fk_generate(model, ids, mask)
    assert torch.equal(ours[1:], plain[1:])


def test_stop_strings_match_hf(pair, tmp_path):
    hf, model = pair
    chars = "".join(chr(ord("a") + i) for i in range(VOCAB - 3))
    ours_tok = train_char_tokenizer(chars)
    assert ours_tok.vocab_size >= VOCAB - 3
    ids, mask = prompts(7, batch=1)
    mask[:] = 1
    plain = fk_generate(model, ids, mask, max_new_tokens=15)
    text = ours_tok.decode(plain[0, 7:].tolist())
    stop = text[5:7]  # a string the model writes after a few tokens
    ours = fk_generate(model, ids, mask, max_new_tokens=15, stop_strings=[stop],
                       tokenizer=ours_tok)
    assert ours_tok.decode(ours[0, 7:].tolist()).endswith(stop)
    assert ours.shape[1] < plain.shape[1]
    ours_tok.save(tmp_path)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    expected = hf_generate(hf, ids, mask, max_new_tokens=15, stop_strings=[stop],
                           tokenizer=hf_tok)
    assert torch.equal(ours, expected)


def test_stop_strings_allow_an_overhanging_token():
    class Letters:
        pieces = {0: "", 1: "ab", 2: "cd", 3: "x"}

        def decode(self, ids, skip_special_tokens=False):
            return "".join(self.pieces[i] for i in ids)

    rule = StopStrings(["bc"], Letters())
    assert rule(torch.tensor([[3, 1, 2], [1, 3, 2], [0, 0, 1]])).tolist() == [True, False,
                                                                              False]
    with pytest.raises(ValueError, match="tokenizer"):
        StopStrings(["x"], None)


def test_streamer_receives_prompt_then_each_token_as_hf(pair):
    hf, model = pair
    ids, mask = prompts(8, batch=1)

    class Recorder:
        def __init__(self):
            self.calls = []

        def put(self, value):
            self.calls.append(value.clone())

        def end(self):
            self.calls.append("end")

    mine, theirs = Recorder(), Recorder()
    fk_generate(model, ids, mask, streamer=mine)
    hf_generate(hf, ids, mask, streamer=theirs)
    assert len(mine.calls) == len(theirs.calls) == 12 + 2 and mine.calls[-1] == "end"
    for a, b in zip(mine.calls[:-1], theirs.calls[:-1]):
        assert torch.equal(a.reshape(-1), b.reshape(-1))


def test_text_streamer_of_transformers_prints_our_tokenizers_text(pair, capsys):
    _, model = pair
    tok = train_char_tokenizer("".join(chr(ord("a") + i) for i in range(VOCAB - 3)))
    ids = torch.tensor([tok.encode("abc")])
    out = fk_generate(model, ids, None, streamer=transformers.TextStreamer(tok,
                                                                          skip_prompt=True))
    assert capsys.readouterr().out.strip() == tok.decode(out[0, 3:].tolist()).strip()


def test_generation_config_object_or_dict_with_kwargs_on_top(pair):
    hf, model = pair
    ids, mask = prompts(9)
    config = transformers.GenerationConfig(max_new_tokens=6, no_repeat_ngram_size=2,
                                           pad_token_id=0)
    expected = hf_generate(hf, ids, mask, max_new_tokens=6, no_repeat_ngram_size=2)
    ours = model.generate(ids, attention_mask=mask, generation_config=config, eos_token_id=[])
    assert torch.equal(ours, expected)
    ours = model.generate(ids, attention_mask=mask, eos_token_id=[],
                          generation_config={"max_new_tokens": 6, "pad_token_id": 0},
                          max_new_tokens=4)
    assert ours.shape[1] == 7 + 4  # the keyword wins
    with pytest.raises(ValueError, match="typical_p"):
        model.generate(ids, generation_config=transformers.GenerationConfig(typical_p=0.5))


def test_min_p_matches_hf(pair):
    hf, model = pair
    ids, mask = prompts(10)
    torch.manual_seed(3)
    expected = hf_generate(hf, ids, mask, do_sample=True, min_p=0.2, max_new_tokens=15)
    torch.manual_seed(3)
    ours = fk_generate(model, ids, mask, do_sample=True, min_p=0.2, max_new_tokens=15)
    assert torch.equal(ours, expected)
    with pytest.raises(ValueError, match="min_p"):
        fk_generate(model, ids, mask, do_sample=True, min_p=1.5)


def test_unknown_argument_names_the_closest():
    with pytest.raises(ValueError, match="max_new_token.*did you mean 'max_new_tokens'"):
        model = GPTForCausalLM(GPTConfig(vocab_size=10, d_model=8, n_heads=2, n_layers=1,
                                         d_ff=16, max_seq_len=16))
        model.generate(torch.tensor([[1, 2]]), max_new_token=3)
    assert GenerationSettings().max_new_tokens is None  # resolved per call (20 by default)
