"""The causal_lm task end to end: a few training steps of a tiny GPT through the real trainer,
the saved model directory, and generation from it."""

from __future__ import annotations

import json
import math

import pytest
import torch

import formerkit
from formerkit.data.tokenizers import train_char_tokenizer
from formerkit.tasks import get_task
from formerkit.tasks.causal_lm import CausalLMDataConfig, CausalLMTaskConfig, sample
from formerkit.train.recipe import load_recipe

TINY = {"name": "gpt", "d_model": 32, "n_heads": 2, "n_layers": 1, "max_seq_len": 32,
        "dropout": 0.0}


def tiny_recipe(data: dict, **trainer) -> dict:
    return {"model": dict(TINY), "data": data,
            "task": {"name": "causal_lm", "sample_prompt": "ROMEO:", "sample_tokens": 40},
            "trainer": {"max_steps": 6, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2,
                        "log_every": 2, "progress": False, "seed": 0, **trainer}}


def test_tiny_run_trains_saves_and_generates(tmp_path, capsys):
    text = "ROMEO:\nBut soft, what light through yonder window breaks?\n" * 40
    file = tmp_path / "play.txt"
    file.write_text(text)
    out = tmp_path / "run"
    metrics = formerkit.train(tiny_recipe({"path": str(file)}), output_dir=out)
    assert set(metrics) >= {"val_loss", "val_perplexity"}
    vocab = len(set(text))
    assert 0 < metrics["val_loss"] < math.log(vocab) + 1.0
    assert json.loads((out / "metrics.json").read_text())["val_loss"] == metrics["val_loss"]
    printed = capsys.readouterr().out
    assert "--- sample" in printed and "ROMEO:" in printed

    model_dir = out / "model"
    model = formerkit.from_pretrained(model_dir)
    assert model.tokenizer.vocab_size == vocab == model.config.vocab_size
    assert model.generation_config["temperature"] == 0.8
    task = get_task("causal_lm")
    first = task.generate(model_dir, "ROMEO:", max_new_tokens=50, seed=3, top_k=5)
    assert first.startswith("ROMEO:") and len(first) == len("ROMEO:") + 50
    assert set(first) <= set(text)
    assert task.generate(model_dir, "ROMEO:", max_new_tokens=50, seed=3, top_k=5) == first
    greedy = task.generate(model_dir, "ROMEO:", max_new_tokens=10, do_sample=False)
    ids = model.tokenizer.encode("ROMEO:")
    expected = model.generate(torch.tensor([ids]), max_new_tokens=10)[0]
    assert greedy == model.tokenizer.decode(expected)
    beams = task.generate(model_dir, "ROMEO:", max_new_tokens=8, num_beams=3)
    assert beams.startswith("ROMEO:") and len(beams) == len("ROMEO:") + 8
    with pytest.raises(ValueError, match="characters not in"):
        task.generate(model_dir, "ROMEO: ü")
    with pytest.raises(ValueError, match="unknown generate options"):
        task.generate(model_dir, "ROMEO:", beams=2)
    # the whole validation split is the evaluation; there is no test split
    setup = get_task("causal_lm").setup(dict(TINY), CausalLMDataConfig(path=str(file)),
                                        CausalLMTaskConfig(), seed=0)
    assert setup.evaluate(setup.model, "test") == {}
    assert len(setup.train_dataset) == int(len(text) * 0.9) - 32


def test_sample_longer_than_the_context():
    tok = train_char_tokenizer("abcdefgh \n")
    torch.manual_seed(0)
    model = formerkit.create_model("gpt", vocab_size=tok.vocab_size, d_model=16, n_heads=2,
                                   n_layers=1, max_seq_len=8, dropout=0.0)
    text = sample(model, tok, "abcdefghabc", 30, seed=1)  # prompt longer than the context
    assert text.startswith("abcdefghabc") and len(text) == 11 + 30
    assert sample(model, tok, "ab", 30, seed=1) == sample(model, tok, "ab", 30, seed=1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample(model, tok, "ab", 0)
    with pytest.raises(ValueError, match="prompt"):
        sample(model, tok, "", 5)


def test_byte_bpe_tokenizer_option(tmp_path):
    file = tmp_path / "t.txt"
    file.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    setup = get_task("causal_lm").setup(
        dict(TINY), CausalLMDataConfig(path=str(file), tokenizer="byte_bpe", vocab_size=300),
        CausalLMTaskConfig(), seed=0)
    vocab = setup.model.tokenizer.vocab_size  # at most 300: a tiny text runs out of merges
    assert setup.model.config.vocab_size == vocab and 256 < vocab <= 300
    eot = setup.model.tokenizer.eos_token_id
    assert setup.model.config.eos_token_id == eot == setup.model.generation_config["eos_token_id"]
    loss = setup.evaluate(setup.model, "val")["loss"]
    assert loss == pytest.approx(math.log(vocab), rel=0.1)  # an untrained model is near uniform


def test_default_recipe_and_config_errors():
    recipe = load_recipe("gpt-shakespeare-char")
    assert recipe.task_name == "causal_lm" and recipe.model["name"] == "gpt"
    assert recipe.data.dataset == "tinyshakespeare" and recipe.data.tokenizer == "char"
    with pytest.raises(ValueError, match="tokenizer"):
        CausalLMDataConfig(tokenizer="sentencepiece")
    with pytest.raises(ValueError, match="val_fraction"):
        CausalLMDataConfig(val_fraction=0.0)
    with pytest.raises(ValueError, match="context=64"):
        get_task("causal_lm").setup(dict(TINY), CausalLMDataConfig(context=64),
                                    CausalLMTaskConfig(), seed=0)


def test_llama_recipe_runs_end_to_end_at_the_gpt_recipe_size(tmp_path):
    """The shipped llama recipe, shortened, trains through the real trainer and generates from
    the saved model; its model is within 1% of the GPT default recipe's parameter count."""
    from formerkit.models.registry import create_model

    llama, gpt = load_recipe("llama-shakespeare-char"), load_recipe("gpt-shakespeare-char")
    assert llama.trainer == gpt.trainer and llama.model["name"] == "llama"
    sizes = [create_model(**{**r.model, "vocab_size": 65}).num_parameters() for r in (llama, gpt)]
    assert abs(sizes[0] - sizes[1]) / sizes[1] < 0.01
    text = "ROMEO:\nBut soft, what light through yonder window breaks?\n" * 40
    file = tmp_path / "play.txt"
    file.write_text(text)
    recipe = tiny_recipe({"path": str(file)})
    recipe["model"] = {**llama.model, "n_layers": 1, "d_model": 32, "d_ff": 64}
    metrics = formerkit.train(recipe, output_dir=tmp_path / "run")
    assert 0 < metrics["val_loss"] < math.log(len(set(text))) + 1.0
    model = formerkit.from_pretrained(tmp_path / "run" / "model")
    assert type(model).__name__ == "LlamaForCausalLM"
    prompt = torch.tensor([model.tokenizer.encode("ROMEO:")])
    assert model.generate(prompt, max_new_tokens=5).shape == (1, prompt.shape[1] + 5)


def test_generate_chat_renders_the_template_and_prints_the_reply(tmp_path, capsys):
    from formerkit import cli
    from formerkit.data.tokenizers import train_byte_bpe

    tokenizer = train_byte_bpe(["hello there, tell me a joke."] * 5, 280,
                               special_tokens=["<|eot|>"])
    tokenizer.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}<|eot|>"
                               "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    torch.manual_seed(0)
    model = formerkit.create_model("llama", preset="tiny", vocab_size=tokenizer.vocab_size)
    model.tokenizer = tokenizer
    model.save_pretrained(tmp_path / "chat")
    assert cli.main(["generate", str(tmp_path / "chat"), "--chat", "--system", "Be brief.",
                     "--prompt", "tell me", "--max-new-tokens", "6", "--num-beams", "2"]) == 0
    printed = capsys.readouterr().out.rstrip("\n")
    text = "<system>Be brief.<|eot|><user>tell me<|eot|><assistant>"
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    with torch.no_grad():
        new = model.eval().generate(ids, max_new_tokens=6, num_beams=2)[0, ids.shape[1]:]
    assert printed == tokenizer.decode(new)
    assert cli.main(["generate", str(tmp_path / "chat"), "--system", "x", "--prompt", "y"]) == 2
    assert "--chat" in capsys.readouterr().err


def test_pretrain_then_lora_fine_tune_a_llama(tmp_path):
    """Pre-train a tiny Llama, then fine-tune it on another text with LoRA on every
    projection: only adapters train, the saved model is plain (merged) and generates."""
    from formerkit.models.llama import LlamaForCausalLM

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n" * 40)
    recipe = tiny_recipe({"path": str(corpus)})
    recipe["model"] = {"name": "llama", "d_model": 32, "n_heads": 2, "n_kv_heads": 1,
                       "n_layers": 1, "d_ff": 64, "max_seq_len": 32}
    formerkit.train(recipe, output_dir=tmp_path / "pre")
    base = formerkit.from_pretrained(tmp_path / "pre" / "model")
    other = tmp_path / "other.txt"
    other.write_text("ROMEO: what light breaks through yonder window? But soft,\n" * 40)
    tune = tiny_recipe({"path": str(other)})
    tune["model"] = dict(recipe["model"], dropout=0.1)
    targets = ["q_proj", "k_proj", "v_proj", "out_proj", "gate_proj", "up_proj", "down_proj"]
    tune["task"].update(init_from=str(tmp_path / "pre"),
                        lora={"rank": 2, "alpha": 4, "targets": targets})
    formerkit.train(tune, output_dir=tmp_path / "tuned")
    tuned = formerkit.from_pretrained(tmp_path / "tuned" / "model")
    assert type(tuned) is LlamaForCausalLM and tuned.config.dropout == 0.1
    assert not any("lora" in name for name in tuned.state_dict())  # merged into the weights
    changed = [n for n, p in tuned.state_dict().items()
               if not torch.equal(p, base.state_dict()[n])]
    assert changed and all(n.split(".")[-2] in targets for n in changed)  # adapted ones only
    bad = dict(tune, model=dict(recipe["model"], d_model=64))
    with pytest.raises(ValueError, match="model.d_model=64 differs"):
        formerkit.train(bad, output_dir=tmp_path / "bad")
