"""BERT span tasks (Devlin et al. 2019, sec. 4.2 and 5.3): ``token_classification`` (one tag
per word, predicted on its first WordPiece, as the paper's NER setup) and
``question_answering`` (start/end of the answer span in the context, as SQuAD v1.1).
Both accept ``task.init_from`` and ``task.lora`` as ``sequence_classification`` does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from formerkit.config import ConfigBase, check_positive
from formerkit.data.classification import encode_qa, encode_token_labels, read_conll, read_qa_jsonl
from formerkit.data.mlm import pad_examples
from formerkit.tasks.base import Task, TaskSetup, register_task
from formerkit.tasks.bert import (
    FineTuneTaskConfig,
    batched,
    build_bert,
    check_max_length,
    lora_hooks,
    model_device,
    task_tokenizer,
    to_device,
)


@dataclasses.dataclass
class SpanDataConfig(ConfigBase):
    """The ``data`` section of the span tasks.

    Attributes:
        train_path, val_path, test_path: CoNLL-style ``word TAG`` files (token
            classification) or JSON lines with ``question``, ``context``, ``answer`` and
            optionally ``answer_start`` (question answering).
        max_length: tokens per example, special tokens included.
        vocab_size, lowercase: WordPiece trained on the training text (from scratch).
        max_answer_tokens: longest span considered when decoding answers.
    """

    train_path: str = ""
    val_path: str = ""
    test_path: str | None = None
    max_length: int = 128
    vocab_size: int = 2000
    lowercase: bool = True
    max_answer_tokens: int = 30

    def validate(self) -> None:
        check_positive(self, "max_length", "vocab_size", "max_answer_tokens")
        if not self.train_path or not self.val_path:
            raise ValueError("data.train_path and data.val_path are required")


def _paths(data: SpanDataConfig) -> dict[str, str]:
    paths = {"train": data.train_path, "val": data.val_path}
    if data.test_path:
        paths["test"] = data.test_path
    return paths


def _evaluator(encoded: dict[str, list[dict[str, Any]]], pad_id: int, batch_size: int,
               score):
    @torch.no_grad()
    def evaluate(net: nn.Module, split: str) -> dict[str, float]:
        if split not in encoded:
            return {}
        was_training, device = net.training, model_device(net)
        net.eval()
        totals: dict[str, float] = {}
        for chunk in batched(encoded[split], batch_size):
            batch = to_device(pad_examples(chunk, pad_id), device)
            for key, value in score(net(**batch), batch).items():
                totals[key] = totals.get(key, 0.0) + value
        net.train(was_training)
        count = totals.pop("count")
        return {k: v / count for k, v in totals.items()}

    return evaluate


@register_task
class TokenClassificationTask(Task):
    name = "token_classification"
    description = "BERT token tagging (NER / POS) from CoNLL-style files"
    data_config = SpanDataConfig
    task_config = FineTuneTaskConfig

    def setup(self, model: dict[str, Any], data: SpanDataConfig, task: FineTuneTaskConfig,
              *, seed: int) -> TaskSetup:
        from formerkit.models.bert import BertForTokenClassification

        splits = {k: read_conll(p) for k, p in _paths(data).items()}
        tags = sorted({t for _, ts in splits["train"] for t in ts})
        tag_ids = {t: i for i, t in enumerate(tags)}
        tokenizer = task_tokenizer(task, lambda: [" ".join(w) for w, _ in splits["train"]],
                                   data.vocab_size, data.lowercase)
        network = build_bert(BertForTokenClassification, model, tokenizer, task,
                             num_labels=len(tags))
        check_max_length(data.max_length, network)
        network.tokenizer = tokenizer

        def encode(sentences):
            out = []
            for words, ts in sentences:
                unknown = [t for t in ts if t not in tag_ids]
                if unknown:
                    raise ValueError(f"tag {unknown[0]!r} does not occur in the training data")
                out.append(encode_token_labels(tokenizer, words, [tag_ids[t] for t in ts],
                                               data.max_length))
            return out

        encoded = {k: encode(v) for k, v in splits.items()}
        save_artifacts = lora_hooks(network, task, ("classifier",))
        print(f"token_classification: {len(encoded['train']):,} train sentences, "
              f"{len(tags)} tags ({', '.join(tags[:10])})", flush=True)

        def score(out, batch) -> dict[str, float]:
            labels = batch["labels"]
            tagged = labels != -100
            n = int(tagged.sum())
            return {"count": n, "loss": float(out.loss) * n,
                    "accuracy": int((out.logits.argmax(-1) == labels)[tagged].sum())}

        train = encoded.pop("train")
        return TaskSetup(
            model=network, train_dataset=train,
            collate_fn=lambda items: pad_examples(items, tokenizer.pad_token_id),
            evaluate=_evaluator(encoded, tokenizer.pad_token_id, task.eval_batch_size, score),
            save_artifacts=save_artifacts, metric_for_best="accuracy", greater_is_better=True)


def best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, allowed: torch.Tensor,
               max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The span (i, j) maximising start_i + end_j with i <= j < i + max_tokens, both inside
    ``allowed`` (B, T) (the context tokens). Returns (start, end), each (B,)."""
    scores = start_logits[:, :, None] + end_logits[:, None, :]  # (B, T, T)
    length = start_logits.shape[1]
    band = torch.ones(length, length, dtype=torch.bool, device=scores.device)
    band = band.triu().tril(max_tokens - 1)
    ok = band[None] & allowed[:, :, None] & allowed[:, None, :]
    flat = scores.masked_fill(~ok, float("-inf")).flatten(1).argmax(-1)  # (B,)
    return flat // length, flat % length


@register_task
class QuestionAnsweringTask(Task):
    name = "question_answering"
    description = "BERT extractive question answering (SQuAD-style JSON lines)"
    data_config = SpanDataConfig
    task_config = FineTuneTaskConfig

    def setup(self, model: dict[str, Any], data: SpanDataConfig, task: FineTuneTaskConfig,
              *, seed: int) -> TaskSetup:
        from formerkit.models.bert import BertForQuestionAnswering

        splits = {k: read_qa_jsonl(p) for k, p in _paths(data).items()}
        tokenizer = task_tokenizer(
            task, lambda: [t for e in splits["train"] for t in (e["question"], e["context"])],
            data.vocab_size, data.lowercase)
        network = build_bert(BertForQuestionAnswering, model, tokenizer, task)
        check_max_length(data.max_length, network)
        network.tokenizer = tokenizer
        encoded, skipped = {}, 0
        for name, examples in splits.items():
            rows = [encode_qa(tokenizer, e["question"], e["context"], e["answer_start"],
                              e["answer"], data.max_length) for e in examples]
            skipped += sum(r is None for r in rows)
            encoded[name] = [r for r in rows if r is not None]
        save_artifacts = lora_hooks(network, task, ("qa_outputs",))
        print(f"question_answering: {len(encoded['train']):,} train questions "
              f"({skipped} skipped: answer beyond max_length)", flush=True)

        def score(out, batch) -> dict[str, float]:
            context = (batch["token_type_ids"] == 1) & (batch["attention_mask"] == 1)
            context[:, -1] = False  # never the final [SEP] ...
            context &= batch["input_ids"] != tokenizer.sep_token_id  # ... nor any [SEP]
            start, end = best_spans(out.start_logits, out.end_logits, context,
                                    data.max_answer_tokens)
            hit_s, hit_e = start == batch["start_positions"], end == batch["end_positions"]
            n = len(start)
            return {"count": n, "loss": float(out.loss) * n,
                    "exact_match": int((hit_s & hit_e).sum()),
                    "start_accuracy": int(hit_s.sum()), "end_accuracy": int(hit_e.sum())}

        train = encoded.pop("train")
        return TaskSetup(
            model=network, train_dataset=train,
            collate_fn=lambda items: pad_examples(items, tokenizer.pad_token_id),
            evaluate=_evaluator(encoded, tokenizer.pad_token_id, task.eval_batch_size, score),
            save_artifacts=save_artifacts, metric_for_best="exact_match",
            greater_is_better=True)
