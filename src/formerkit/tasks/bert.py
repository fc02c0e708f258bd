"""BERT tasks (Devlin et al. 2019): ``mlm_nsp`` pre-training (masked LM + next-sentence
prediction) and ``sequence_classification`` fine-tuning (SST-2); the span tasks
(``token_classification``, ``question_answering``) are in ``formerkit.tasks.bert_spans``.

Fine-tuning tasks share two switches in the recipe's ``task`` section: ``init_from: DIR``
starts from a pre-trained model directory (its encoder and tokenizer), and
``lora: {rank, alpha, targets}`` freezes the model and trains LoRA adapters (Hu et al. 2021),
merged into the weights when the model is saved.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from formerkit.config import ConfigBase, check_positive
from formerkit.data.classification import read_sentence_labels, read_sst2
from formerkit.data.mlm import MLMCollator, build_nsp_examples, pad_examples, read_documents
from formerkit.data.registry import dataset_file
from formerkit.data.tokenizers import Tokenizer, load_tokenizer, train_wordpiece
from formerkit.tasks.base import Task, TaskSetup, register_task
from formerkit.tasks.common import check_lora_options, model_directory
from formerkit.tasks.common import lora_hooks as common_lora_hooks


# ---- shared pieces --------------------------------------------------------------------------
@dataclasses.dataclass
class FineTuneTaskConfig(ConfigBase):
    """The ``task`` section of the fine-tuning tasks.

    Attributes:
        init_from: a pre-trained model directory (or a run directory holding ``model/``);
            its encoder, tokenizer and architecture are used. ``None``: train from scratch.
        lora: ``{rank, alpha, targets, dropout, modules_to_save}`` to train LoRA adapters on
            the linear layers named by ``targets`` (default ``[qkv_proj]``) while the rest is
            frozen (the new head stays trainable). ``None``: full fine-tuning.
        eval_batch_size: examples per evaluation forward pass.
    """

    init_from: str | None = None
    lora: dict[str, Any] | None = None
    eval_batch_size: int = 128

    def validate(self) -> None:
        check_positive(self, "eval_batch_size")
        check_lora_options(self.lora)


def build_bert(cls: type, model: dict[str, Any], tokenizer: Tokenizer,
               task: FineTuneTaskConfig | None, **fields: Any) -> nn.Module:
    """A BERT head ``cls``: from scratch (recipe config, vocabulary of ``tokenizer``) or, with
    ``task.init_from``, with the pre-trained architecture and encoder weights; ``fields``
    (num_labels, ...) and the recipe's dropout settings apply in both cases."""
    from formerkit.models.auto import from_pretrained
    from formerkit.models.bert import BertConfig, load_pretrained_encoder
    from formerkit.models.registry import build_config

    if model.get("name") != "bert":
        raise ValueError(f"BERT tasks need model.name: bert, got {model.get('name')!r}")
    section = {k: v for k, v in model.items() if k not in ("name", "preset")}
    if task is not None and task.init_from:
        source = from_pretrained(model_directory(task.init_from))
        keep = ("dropout", "attn_dropout", "classifier_dropout", "problem_type")
        config = source.config.replace(**{k: v for k, v in section.items() if k in keep},
                                       **fields)
        network = cls(BertConfig.from_dict(config.to_dict()))
        load_pretrained_encoder(network, source)
        return network
    section.update(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id,
                   **fields)
    return cls(build_config("bert", model.get("preset"), **section))


def check_max_length(max_length: int, network: nn.Module) -> None:
    if max_length > network.config.max_seq_len:
        raise ValueError(f"data.max_length={max_length} exceeds the model's "
                         f"max_seq_len={network.config.max_seq_len}")


def task_tokenizer(task: FineTuneTaskConfig | None, texts: Callable[[], list[str]],
                   vocab_size: int, lowercase: bool) -> Tokenizer:
    """The pre-trained model's tokenizer with ``init_from``, else WordPiece trained on the
    training texts."""
    if task is not None and task.init_from:
        return load_tokenizer(model_directory(task.init_from))
    return train_wordpiece(texts(), vocab_size, lowercase=lowercase)


def lora_hooks(network: nn.Module, task: FineTuneTaskConfig,
               head: tuple[str, ...]) -> Callable[[Path], None] | None:
    """``task.lora`` applied to a BERT head (see ``formerkit.tasks.common.lora_hooks``)."""
    return common_lora_hooks(network, task.lora, default_targets=("qkv_proj",), head=head)


def batched(items: list[Any], size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


# ---- pre-training ---------------------------------------------------------------------------
@dataclasses.dataclass
class PretrainDataConfig(ConfigBase):
    """The ``data`` section of ``mlm_nsp``.

    Attributes:
        dataset, file: the corpus ``dataset/file`` from the data registry
            (``FORMERKIT_DATA_DIR``, else the copy shipped with formerkit).
        path: a text file to use instead: one sentence per line, blank lines between documents.
        vocab_size, lowercase: the WordPiece vocabulary trained on the training documents.
        max_length: tokens per pair, ``[CLS] A [SEP] B [SEP]``.
        short_seq_prob: chance of a shorter target length (BERT: 0.1).
        dupe_factor: build the training pairs this many times with different random choices
            (segment splits, random-B negatives, short targets), as BERT's data pipeline
            (default 10 there): with one fixed set of negatives a small model memorises the
            NSP labels after a few epochs instead of learning coherence.
        val_fraction: the last fraction of documents held out for validation.
        mlm_probability: fraction of tokens to predict (BERT: 0.15).
        whole_word: mask whole words rather than WordPiece tokens.
        download: fetch the checksummed public original if missing.
    """

    dataset: str | None = "tinyshakespeare"
    file: str = "input.txt"
    path: str | None = None
    vocab_size: int = 4000
    lowercase: bool = True
    max_length: int = 128
    short_seq_prob: float = 0.1
    dupe_factor: int = 1
    val_fraction: float = 0.1
    mlm_probability: float = 0.15
    whole_word: bool = False
    download: bool = False

    def validate(self) -> None:
        check_positive(self, "vocab_size", "max_length", "dupe_factor")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"PretrainDataConfig.val_fraction must be in (0, 1), "
                             f"got {self.val_fraction!r}")
        if not self.dataset and not self.path:
            raise ValueError("PretrainDataConfig needs a dataset name or a path")


@dataclasses.dataclass
class PretrainTaskConfig(ConfigBase):
    """The ``task`` section of ``mlm_nsp``: evaluation batch size."""

    eval_batch_size: int = 64

    def validate(self) -> None:
        check_positive(self, "eval_batch_size")


def unigram_entropy(documents: list[list[list[int]]]) -> float:
    """Entropy (nats) of the corpus' token frequencies: the loss of a model that ignores
    context, the bar masked-LM loss must clear."""
    counts = Counter(t for doc in documents for sentence in doc for t in sentence)
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


@register_task
class MaskedLMNSPTask(Task):
    name = "mlm_nsp"
    description = "BERT pre-training: masked LM (80/10/10) + next-sentence prediction"
    data_config = PretrainDataConfig
    task_config = PretrainTaskConfig

    def setup(self, model: dict[str, Any], data: PretrainDataConfig, task: PretrainTaskConfig,
              *, seed: int) -> TaskSetup:
        from formerkit.models.bert import BertForPreTraining

        started = time.perf_counter()
        source = Path(data.path) if data.path else dataset_file(data.dataset, data.file,
                                                                 download=data.download)
        documents = read_documents(source.read_text(encoding="utf-8"))
        n_val = max(2, int(len(documents) * data.val_fraction))
        train_docs, val_docs = documents[:-n_val], documents[-n_val:]
        tokenizer = train_wordpiece((s for d in train_docs for s in d), data.vocab_size,
                                    lowercase=data.lowercase)

        def encode(docs: list[list[str]]) -> list[list[list[int]]]:
            flat = [s for d in docs for s in d]
            ids = iter(e.ids for e in tokenizer.backend.encode_batch(
                flat, add_special_tokens=False))
            return [[next(ids) for _ in d] for d in docs]

        train_ids, val_ids = encode(train_docs), encode(val_docs)
        pairs = dict(max_length=data.max_length, cls_token_id=tokenizer.cls_token_id,
                     sep_token_id=tokenizer.sep_token_id, short_seq_prob=data.short_seq_prob)
        # Duplicate d draws with seed + 2d: odd offsets are left to the validation pairs.
        train = [example for dupe in range(data.dupe_factor)
                 for example in build_nsp_examples(train_ids, seed=seed + 2 * dupe, **pairs)]
        val = build_nsp_examples(val_ids, seed=seed + 1, **pairs)
        network = build_bert(BertForPreTraining, model, tokenizer, None)
        check_max_length(data.max_length, network)
        network.tokenizer = tokenizer
        options = dict(mlm_probability=data.mlm_probability, whole_word=data.whole_word)
        collate = MLMCollator.from_tokenizer(
            tokenizer, generator=torch.Generator().manual_seed(seed), **options)
        entropy = unigram_entropy(train_ids)
        print(f"mlm_nsp: {len(documents):,} documents -> {len(train):,} train / {len(val):,} "
              f"val pairs of <= {data.max_length} tokens, vocab {tokenizer.vocab_size}, "
              f"unigram entropy {entropy:.3f} nats, {network.num_parameters() / 1e6:.2f}M "
              f"parameters ({time.perf_counter() - started:.1f}s)", flush=True)

        @torch.no_grad()
        def evaluate(net: nn.Module, split: str) -> dict[str, float]:
            if split != "val":
                return {}
            # The same masks at every evaluation, so numbers are comparable across steps.
            fixed = MLMCollator.from_tokenizer(
                tokenizer, generator=torch.Generator().manual_seed(seed + 1), **options)
            was_training, device = net.training, model_device(net)
            net.eval()
            sums = Counter()
            for chunk in batched(val, task.eval_batch_size):
                batch = to_device(fixed(chunk), device)
                out = net(**batch)
                targets = batch["labels"] != -100
                n_masked = int(targets.sum())
                sums["mlm_loss"] += float(nn.functional.cross_entropy(
                    out.prediction_logits[targets], batch["labels"][targets],
                    reduction="sum"))
                sums["mlm_correct"] += int((out.prediction_logits.argmax(-1) == batch["labels"])
                                           [targets].sum())
                sums["masked"] += n_masked
                nsp = batch["next_sentence_label"]
                sums["nsp_loss"] += float(nn.functional.cross_entropy(
                    out.seq_relationship_logits, nsp, reduction="sum"))
                sums["nsp_correct"] += int((out.seq_relationship_logits.argmax(-1) == nsp).sum())
            net.train(was_training)
            mlm, nsp = sums["mlm_loss"] / sums["masked"], sums["nsp_loss"] / len(val)
            return {"loss": mlm + nsp, "mlm_loss": mlm,
                    "mlm_accuracy": sums["mlm_correct"] / sums["masked"], "nsp_loss": nsp,
                    "nsp_accuracy": sums["nsp_correct"] / len(val),
                    "unigram_entropy": entropy}

        return TaskSetup(model=network, train_dataset=train, collate_fn=collate,
                         evaluate=evaluate, compute_loss=pretraining_loss,
                         count_tokens=lambda batch: int(batch["attention_mask"].sum()))


def pretraining_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """MLM + NSP loss with the MLM head run only at the masked positions (as the original
    BERT gathers them): the same value as ``model(**batch).loss`` at a fraction of the
    head's cost, which dominates a small model with a large vocabulary."""
    from formerkit.models.bert import mlm_loss, nsp_loss

    net = getattr(model, "module", model)  # DDP wraps the model
    labels = batch["labels"]
    out = model.bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]) \
        if net is model else None
    if out is None:  # under DDP the wrapper's forward must run: fall back to the full head
        return model(**batch).loss
    targets = labels != -100
    logits = net.mlm(out.last_hidden_state[targets])  # (N_masked, V)
    return mlm_loss(logits, labels[targets]) + nsp_loss(net.nsp(out.pooler_output),
                                                        batch["next_sentence_label"])


# ---- sequence classification ----------------------------------------------------------------
@dataclasses.dataclass
class SequenceClassificationDataConfig(ConfigBase):
    """The ``data`` section of ``sequence_classification``.

    Attributes:
        dataset: ``sst2`` (GLUE SST-2 from the data registry: ``train.tsv``, and ``dev.tsv``
            as the validation split), or ``None`` with ``train_path``/``val_path``.
        train_path, val_path, test_path: ``sentence<TAB>label`` TSV files with a header.
        num_labels: classes.
        max_length: tokens per sentence, special tokens included.
        vocab_size, lowercase: WordPiece trained on the training sentences (from scratch).
        max_train_examples: use a random subset of the training set.
        download: fetch missing files where a public original exists.
    """

    dataset: str | None = "sst2"
    train_path: str | None = None
    val_path: str | None = None
    test_path: str | None = None
    num_labels: int = 2
    max_length: int = 64
    vocab_size: int = 8000
    lowercase: bool = True
    max_train_examples: int | None = None
    download: bool = False

    def validate(self) -> None:
        check_positive(self, "num_labels", "max_length", "vocab_size", "max_train_examples")
        if self.dataset not in (None, "sst2"):
            raise ValueError(f"data.dataset must be 'sst2' or null, got {self.dataset!r}")
        if self.dataset is None and not (self.train_path and self.val_path):
            raise ValueError("data needs dataset: sst2, or train_path and val_path")


def _sentence_split(data: SequenceClassificationDataConfig, split: str
                    ) -> list[tuple[str, int]] | None:
    path = {"train": data.train_path, "val": data.val_path, "test": data.test_path}[split]
    if path:
        return read_sentence_labels(path)
    if data.dataset == "sst2" and split != "test":
        return read_sst2("train" if split == "train" else "validation", download=data.download)
    return None


@register_task
class SequenceClassificationTask(Task):
    name = "sequence_classification"
    description = "BERT sentence classification (SST-2), full or LoRA fine-tuning"
    data_config = SequenceClassificationDataConfig
    task_config = FineTuneTaskConfig

    def setup(self, model: dict[str, Any], data: SequenceClassificationDataConfig,
              task: FineTuneTaskConfig, *, seed: int) -> TaskSetup:
        from formerkit.models.bert import BertForSequenceClassification

        train_rows = _sentence_split(data, "train")
        if data.max_train_examples and data.max_train_examples < len(train_rows):
            train_rows = random.Random(seed).sample(train_rows, data.max_train_examples)
        splits = {"val": _sentence_split(data, "val"), "test": _sentence_split(data, "test")}
        tokenizer = task_tokenizer(task, lambda: [s for s, _ in train_rows], data.vocab_size,
                                   data.lowercase)
        network = build_bert(BertForSequenceClassification, model, tokenizer, task,
                             num_labels=data.num_labels)
        check_max_length(data.max_length, network)
        network.tokenizer = tokenizer

        def encode(rows: list[tuple[str, int]]) -> list[dict[str, Any]]:
            bad = [label for _, label in rows if not 0 <= label < data.num_labels]
            if bad:
                raise ValueError(f"label {bad[0]} is outside [0, num_labels={data.num_labels})")
            enc = tokenizer.encode_batch([s for s, _ in rows], max_length=data.max_length,
                                         padding=False, return_tensors=False)
            return [{"input_ids": ids, "labels": label}
                    for ids, (_, label) in zip(enc["input_ids"], rows)]

        train = encode(train_rows)
        encoded = {k: encode(v) for k, v in splits.items() if v is not None}
        save_artifacts = lora_hooks(network, task, ("classifier",))
        print(f"sequence_classification: {len(train):,} train / "
              f"{len(encoded['val']):,} val sentences, vocab {tokenizer.vocab_size}, "
              f"{'from ' + task.init_from if task.init_from else 'from scratch'}", flush=True)

        def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            return pad_examples(items, tokenizer.pad_token_id)

        @torch.no_grad()
        def evaluate(net: nn.Module, split: str) -> dict[str, float]:
            if split not in encoded:
                return {}
            was_training, device = net.training, model_device(net)
            net.eval()
            loss, correct, rows = 0.0, 0, encoded[split]
            for chunk in batched(rows, task.eval_batch_size):
                batch = to_device(collate(chunk), device)
                out = net(**batch)
                loss += float(out.loss) * len(chunk)
                correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
            net.train(was_training)
            return {"loss": loss / len(rows), "accuracy": correct / len(rows)}

        return TaskSetup(model=network, train_dataset=train, collate_fn=collate,
                         evaluate=evaluate, save_artifacts=save_artifacts,
                         metric_for_best="accuracy", greater_is_better=True)


from formerkit.tasks import bert_spans  # noqa: E402,F401  (registers the span tasks)
