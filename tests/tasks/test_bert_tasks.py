"""End-to-end BERT tasks through the trainer: token classification and question answering
learn small synthetic tasks to a stated accuracy in seconds; LoRA and init_from switches;
SST-2 reading; pre-training on a small corpus."""

from __future__ import annotations

import json
import random

import pytest
import torch

import formerkit
from formerkit.data.classification import encode_qa, read_sentence_labels

TINY = {"name": "bert", "d_model": 64, "n_heads": 4, "n_layers": 2, "d_ff": 128,
        "max_seq_len": 32, "dropout": 0.0, "attn_dropout": 0.0}
NOUNS, VERBS, ADJS = ["cat", "dog", "bird", "fish"], ["runs", "sees", "eats"], ["red", "big"]


def _trainer(steps: int, lr: float = 3e-3, batch_size: int = 32) -> dict:
    return {"max_steps": steps, "batch_size": batch_size, "lr": lr, "warmup_steps": 10,
            "schedule": "linear", "weight_decay": 0.0, "eval_every": 0, "log_every": 100,
            "progress": False, "seed": 0}


def _tag_sentence(rng: random.Random) -> list[tuple[str, str]]:
    # "watch" is a NOUN after a determiner and a VERB after a noun: context is needed.
    words = []
    for _ in range(rng.randint(1, 3)):
        words += [("the", "DET")] + ([(rng.choice(ADJS), "ADJ")] if rng.random() < 0.5 else [])
        if rng.random() < 0.3:
            words.append(("watch", "NOUN"))
        else:
            words.append((rng.choice(NOUNS), "NOUN"))
            words.append(("watch", "VERB") if rng.random() < 0.4 else (rng.choice(VERBS),
                                                                          "VERB"))
    return words


def _write_conll(path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in _tag_sentence(rng))
                                for _ in range(n)) + "\n")


@pytest.mark.slow
def test_token_classification_end_to_end(tmp_path):
    _write_conll(tmp_path / "train.txt", 400, seed=0)
    _write_conll(tmp_path / "val.txt", 100, seed=1)
    metrics = formerkit.train(
        {"model": TINY, "data": {"train_path": str(tmp_path / "train.txt"),
                                 "val_path": str(tmp_path / "val.txt"), "vocab_size": 60,
                                 "max_length": 32},
         "task": {"name": "token_classification"}, "trainer": _trainer(150)},
        output_dir=tmp_path / "run")
    assert metrics["val_accuracy"] >= 0.97  # stated: >= 97% of words tagged right
    model = formerkit.from_pretrained(tmp_path / "run" / "model")
    assert isinstance(model, formerkit.BertForTokenClassification) and model.tokenizer


CATEGORIES = {"color": ["red", "blue", "green", "pink"], "animal": ["cat", "dog", "owl", "fox"],
              "number": ["one", "two", "six", "ten"], "fruit": ["fig", "kiwi", "lime", "plum"]}
FILLER = ["near", "with", "and", "saw", "by", "a"]


def _write_qa(path, n: int, seed: int) -> None:
    # The context holds one word of each category among fillers, in random order; the
    # question asks for one category ("what color ?"); the answer is that word's span.
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(ws) for ws in CATEGORIES.values()] + rng.sample(FILLER, 3)
        rng.shuffle(words)
        category = rng.choice(list(CATEGORIES))
        answer = next(w for w in words if w in CATEGORIES[category])
        context = " ".join(words)
        start = (" " + context + " ").index(f" {answer} ")
        lines.append(json.dumps({"question": f"what {category} ?", "context": context,
                                 "answer": answer, "answer_start": start}))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_question_answering_end_to_end(tmp_path):
    _write_qa(tmp_path / "train.jsonl", 1500, seed=0)
    _write_qa(tmp_path / "val.jsonl", 200, seed=1)
    metrics = formerkit.train(
        {"model": TINY, "data": {"train_path": str(tmp_path / "train.jsonl"),
                                 "val_path": str(tmp_path / "val.jsonl"), "vocab_size": 100,
                                 "max_length": 32},
         "task": {"name": "question_answering"}, "trainer": _trainer(200)},
        output_dir=tmp_path / "run")
    assert metrics["val_exact_match"] >= 0.9  # stated: >= 90% exact span match


@pytest.mark.slow
def test_lora_and_init_from_switches(tmp_path):
    _write_conll(tmp_path / "train.txt", 200, seed=0)
    _write_conll(tmp_path / "val.txt", 50, seed=1)
    data = {"train_path": str(tmp_path / "train.txt"), "val_path": str(tmp_path / "val.txt"),
            "vocab_size": 60, "max_length": 32}
    formerkit.train({"model": TINY, "data": data, "task": {"name": "token_classification"},
                     "trainer": _trainer(60)}, output_dir=tmp_path / "full")
    metrics = formerkit.train(
        {"model": TINY, "data": data,
         "task": {"name": "token_classification", "init_from": str(tmp_path / "full"),
                  "lora": {"rank": 4, "alpha": 8, "targets": ["qkv_proj", "fc1"]}},
         "trainer": _trainer(40)}, output_dir=tmp_path / "lora")
    assert metrics["val_accuracy"] > 0.8
    # The saved model has the adapters merged: a plain model with the original tensor names.
    merged = formerkit.from_pretrained(tmp_path / "lora" / "model")
    names = [n for n, _ in merged.named_parameters()]
    assert not any("lora_" in n for n in names)
    start = formerkit.from_pretrained(tmp_path / "full" / "model")
    changed = [n for n, p in merged.state_dict().items()
               if not torch.equal(p, start.state_dict()[n])]
    # Only the adapted layers and the head (modules_to_save) changed.
    assert changed and all(n.endswith(("qkv_proj.weight", "ff.fc1.weight")) or
                           n.startswith("classifier.") for n in changed)


def test_sst2_reader_strips_trailing_space(tmp_path):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nit 's a charming journey . \t1\n"
                                      "bleak \t0\n")
    assert read_sentence_labels(tmp_path / "dev.tsv") == [("it 's a charming journey .", 1),
                                                          ("bleak", 0)]
    (tmp_path / "bad.tsv").write_text("sentence\tlabel\nno label here\n")
    with pytest.raises(ValueError, match="bad.tsv:2"):
        read_sentence_labels(tmp_path / "bad.tsv")


def test_sst2_real_files(data_dir):
    from formerkit.data.classification import read_sst2

    dev = read_sst2("validation")
    assert len(dev) == 872 and {label for _, label in dev} == {0, 1}
    assert not any(s.endswith(" ") for s, _ in dev)


def test_encode_qa_finds_the_answer_tokens():
    from formerkit.data.tokenizers import train_wordpiece

    tok = train_wordpiece(["anna red bob blue what does have"] * 5, 60)
    context = "anna red bob blue"
    row = encode_qa(tok, "what does bob have", context, context.index("blue"), "blue", 32)
    answer = row["input_ids"][row["start_positions"]:row["end_positions"] + 1]
    assert tok.decode(answer) == "blue"
    assert encode_qa(tok, "what does bob have", context, context.index("blue"), "blue",
                     8) is None  # truncation cut the answer off


@pytest.mark.slow
def test_pretraining_on_a_small_corpus(tmp_path):
    rng = random.Random(0)
    docs = []
    for _ in range(120):  # each document: a topic word repeated in simple sentences
        topic = rng.choice(NOUNS)
        docs.append("\n".join(f"the {rng.choice(ADJS)} {topic} {rng.choice(VERBS)} ."
                              for _ in range(rng.randint(3, 8))))
    (tmp_path / "corpus.txt").write_text("\n\n".join(docs) + "\n")
    metrics = formerkit.train(
        {"model": TINY, "data": {"dataset": None, "path": str(tmp_path / "corpus.txt"),
                                 "vocab_size": 40, "max_length": 32},
         "task": {"name": "mlm_nsp"}, "trainer": _trainer(80)}, output_dir=tmp_path / "run")
    assert metrics["val_mlm_loss"] < metrics["val_unigram_entropy"]
    model = formerkit.from_pretrained(tmp_path / "run" / "model")
    assert isinstance(model, formerkit.BertForPreTraining)
    assert model.tokenizer.mask_token_id is not None


def test_dupe_factor_draws_fresh_pairs(tmp_path):
    from formerkit.data.mlm import build_nsp_examples, read_documents
    from formerkit.tasks.bert import MaskedLMNSPTask, PretrainDataConfig, PretrainTaskConfig

    rng = random.Random(1)
    docs = ["\n".join(f"the {rng.choice(ADJS)} {rng.choice(NOUNS)} {rng.choice(VERBS)} ."
                      for _ in range(rng.randint(3, 8))) for _ in range(60)]
    (tmp_path / "corpus.txt").write_text("\n\n".join(docs) + "\n")
    data = PretrainDataConfig(dataset=None, path=str(tmp_path / "corpus.txt"), vocab_size=40,
                              max_length=32, dupe_factor=3)
    setup = MaskedLMNSPTask().setup(dict(TINY), data, PretrainTaskConfig(), seed=5)
    tokenizer = setup.model.tokenizer
    train_docs = read_documents((tmp_path / "corpus.txt").read_text())[:-6]  # 10% held out
    ids = [[tokenizer.backend.encode(s, add_special_tokens=False).ids for s in d]
           for d in train_docs]
    draws = [build_nsp_examples(ids, max_length=32, cls_token_id=tokenizer.cls_token_id,
                                sep_token_id=tokenizer.sep_token_id, seed=5 + 2 * d)
             for d in range(3)]
    assert list(setup.train_dataset) == [e for draw in draws for e in draw]
    first, others = draws[0], draws[1] + draws[2]
    key = lambda e: (tuple(e["input_ids"]), e["next_sentence_label"])  # noqa: E731
    assert len({key(e) for e in others} - {key(e) for e in first}) > len(first) // 2
    with pytest.raises(ValueError, match="dupe_factor"):
        PretrainDataConfig(dupe_factor=0)
