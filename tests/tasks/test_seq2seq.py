"""The seq2seq task: data pipeline, batching, scoring, and a copy task trained end to end."""

from __future__ import annotations

import json

import pytest
import torch

import formerkit
from formerkit.data.tokenizers import train_bpe
from formerkit.data.translation import (
    ParallelDataset,
    collate_pairs,
    read_multi30k,
    synthetic_pairs,
    token_batches,
)
from formerkit.tasks import get_task
from formerkit.tasks.seq2seq import score


def test_synthetic_pairs_copy_and_reverse():
    src, tgt = synthetic_pairs(50, mode="reverse", n_symbols=5, min_len=2, max_len=6, seed=1)
    assert all(t.split() == s.split()[::-1] for s, t in zip(src, tgt))
    assert all(2 <= len(s.split()) <= 6 and set(s.split()) <= set("abcde") for s in src)
    assert synthetic_pairs(50, mode="reverse", n_symbols=5, seed=1) == \
        synthetic_pairs(50, mode="reverse", n_symbols=5, seed=1)
    with pytest.raises(ValueError, match="mode"):
        synthetic_pairs(3, mode="sort")


def test_dataset_collate_and_token_batches():
    src, tgt = synthetic_pairs(300, n_symbols=6, min_len=1, max_len=12, seed=0)
    tokenizer = train_bpe(src + tgt, 40)
    data = ParallelDataset(tokenizer, src, tgt, max_len=10)
    assert len(data) < 300 and int(data.src_lengths.max()) <= 10  # long pairs dropped
    item = data[0]
    assert item["src"][-1] == tokenizer.eos_token_id  # eos appended to each side
    assert tokenizer.decode(item["tgt"].tolist()) == data.targets[0]
    batches = token_batches(data.src_lengths, data.tgt_lengths, 60, seed=0, epoch=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(data)))  # every pair exactly once
    for b in batches:
        width = max(max(int(data.src_lengths[i]), int(data.tgt_lengths[i])) for i in b)
        assert width * len(b) <= 60 or len(b) == 1
    assert token_batches(data.src_lengths, data.tgt_lengths, 60, seed=0, epoch=1) != batches
    batch = collate_pairs([data[i] for i in batches[0]], tokenizer.pad_token_id)
    lengths = data.tgt_lengths[batches[0]]
    assert ((batch["labels"] != -100).sum(1) == lengths).all()
    assert (batch["attention_mask"].sum(1) == data.src_lengths[batches[0]]).all()


def test_score():
    assert score(["a b", "c"], ["a b", "d"], synthetic=True) == {"exact_match": 0.5}
    refs = ["A man is riding a bike .", "Two dogs play in the snow ."]
    perfect = score(refs, refs, synthetic=False)
    assert perfect["bleu"] == pytest.approx(100.0)
    lower = score([r.lower() for r in refs], refs, synthetic=False)
    assert lower["bleu"] == pytest.approx(100.0) and lower["bleu_cased"] < 100.0


def test_copy_task_trains_end_to_end(tmp_path):
    torch.manual_seed(0)
    recipe = {
        "model": {"name": "transformer", "preset": "tiny", "d_model": 32, "d_ff": 64,
                  "n_encoder_layers": 1, "n_decoder_layers": 1, "label_smoothing": 0.0},
        "data": {"dataset": "copy", "vocab_size": 32, "n_symbols": 4, "min_len": 2,
                 "max_len_synthetic": 4, "n_train": 2000, "n_val": 50, "n_test": 100,
                 "max_tokens": 400},
        "task": {"name": "seq2seq", "samples": 0, "eval_batch_size": 100},
        "trainer": {"max_steps": 250, "batch_size": 1, "lr": 5e-3, "warmup_steps": 20,
                    "schedule": "cosine", "weight_decay": 0.0, "eval_every": 0,
                    "log_every": 50, "progress": False, "seed": 0},
    }
    metrics = formerkit.train(recipe, output_dir=tmp_path)
    assert metrics["test_exact_match"] >= 0.95
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_exact_match"] == metrics["test_exact_match"]
    out = get_task("seq2seq").generate(tmp_path / "model", "a c b d")
    assert out == "a c b d"
    _translate_and_score_files(tmp_path)


def _translate_and_score_files(run, capsys=None):
    """predict translates a file line by line (batched, beams as an option); evaluate scores
    it against references with sacreBLEU and its signature; bad input is one line."""
    from formerkit import cli

    sources = run / "test.src"
    lines = ["a c b d", "b b a", "d c", "c a d b"]
    sources.write_text("\n".join(lines) + "\n")
    task = get_task("seq2seq")
    assert task.predict(run / "model", sources, num_beams=3, batch_size=2).split("\n") == lines
    (run / "test.ref").write_text("\n".join(lines) + "\n")
    scores = task.score_file(run / "model", sources, run / "test.ref")
    assert scores["bleu"] == pytest.approx(100.0) and scores["sentences"] == 4
    assert "tok:13a" in scores["bleu_signature"] and "case:lc" in scores["bleu_signature"]
    out = run / "out.txt"
    assert cli.main(["predict", str(run), "-i", str(sources), "-o", str(out),
                     "--num-beams", "2"]) == 0
    assert out.read_text().splitlines() == lines
    seen = {}
    score_file = type(task).score_file

    def spy(self, *args, **options):
        seen.update(options)
        return score_file(self, *args, **options)

    with pytest.MonkeyPatch.context() as patch:  # the decoding options reach the task
        patch.setattr(type(task), "score_file", spy)
        assert cli.main(["evaluate", str(run), "--input", str(sources), "--reference",
                         str(run / "test.ref"), "--num-beams", "2",
                         "--length-penalty", "0.6"]) == 0
    assert seen == {"num_beams": 2, "length_penalty": 0.6}
    (run / "empty.src").write_text("")
    with pytest.raises(ValueError, match="empty.src is empty"):
        task.predict(run / "model", run / "empty.src")
    (run / "short.ref").write_text("a c b d\n")
    with pytest.raises(ValueError, match="has 1 lines but"):
        task.score_file(run / "model", sources, run / "short.ref")
    model = formerkit.from_pretrained(run / "model")
    long_line = " ".join(["a b c d"] * model.config.max_seq_len)
    (run / "long.src").write_text(long_line + "\n")
    with pytest.warns(UserWarning, match="long.src:1: the source has"):
        translated = task.predict(run / "model", run / "long.src")
    assert len(translated.splitlines()) == 1 and translated.strip()


def test_multi30k_files(data_dir):
    de, en = read_multi30k("test", "de"), read_multi30k("test", "en")
    assert len(de) == len(en) == 1000
    assert len(read_multi30k("val", "en")) == 1014
    with pytest.raises(ValueError, match="split"):
        read_multi30k("dev", "en")
