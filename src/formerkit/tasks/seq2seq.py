"""The ``seq2seq`` task: translation with the encoder-decoder Transformer (Vaswani et al. 2017)
on Multi30k German -> English, or a synthetic copy / reverse task.

Training uses label-smoothed cross-entropy on token-capped, length-bucketed batches. Evaluation
reports the plain per-token cross-entropy (``loss``) and decodes every source (greedy or beam
search): sacreBLEU on detokenised output (13a tokenisation; ``bleu`` lowercased, ``bleu_cased``
as is) for translation, ``exact_match`` for the synthetic tasks.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from formerkit.config import ConfigBase, check_choice, check_positive
from formerkit.data.tokenizers import Tokenizer, train_bpe
from formerkit.data.translation import (
    SYNTHETIC,
    ParallelDataset,
    chunks,
    collate_pairs,
    pad_batch,
    read_multi30k,
    synthetic_pairs,
    token_batches,
)
from formerkit.extras import require
from formerkit.models.transformer import shift_tokens_right
from formerkit.tasks.base import Task, TaskSetup, register_task

DATASETS = ("multi30k",) + SYNTHETIC


@dataclasses.dataclass
class Seq2SeqDataConfig(ConfigBase):
    """The recipe's ``data`` section.

    Attributes:
        dataset: ``multi30k``, or the synthetic ``copy`` / ``reverse``.
        src_lang, tgt_lang: Multi30k direction (``de`` -> ``en`` by default).
        vocab_size: size of the shared source/target BPE vocabulary.
        max_tokens: cap of padded tokens per training batch (batch x longest side).
        max_len: drop training pairs with a side longer than this many tokens.
        n_train, n_val, n_test, n_symbols, min_len, max_len_synthetic: synthetic task sizes
            (pairs per split, alphabet, sequence length range in letters).
        download: fetch the checksummed Multi30k originals if they are not on disk.
    """

    dataset: str = "multi30k"
    src_lang: str = "de"
    tgt_lang: str = "en"
    vocab_size: int = 8000
    max_tokens: int = 4096
    max_len: int = 100
    n_train: int = 10000
    n_val: int = 200
    n_test: int = 200
    n_symbols: int = 10
    min_len: int = 3
    max_len_synthetic: int = 10
    download: bool = False

    def validate(self) -> None:
        check_choice(self, "dataset", DATASETS)
        check_positive(self, "vocab_size", "max_tokens", "max_len", "n_train", "n_val",
                       "n_test", "n_symbols", "min_len", "max_len_synthetic")
        if self.src_lang == self.tgt_lang:
            raise ValueError(f"Seq2SeqDataConfig.src_lang and tgt_lang are both "
                             f"{self.src_lang!r}")


@dataclasses.dataclass
class Seq2SeqTaskConfig(ConfigBase):
    """The recipe's ``task`` section: how evaluation decodes.

    Attributes:
        num_beams: 1 = greedy, more = beam search.
        length_penalty: beam score = log-probability / length ** length_penalty.
        max_new_tokens: decoding cap; a source of S tokens gets at most
            ``min(max_new_tokens, 1.5 * S + 10)`` new tokens.
        eval_batch_size: sentences per batch when scoring and decoding.
        decode_val: also decode the validation split at each evaluation (the BLEU curve);
            the test split is always decoded.
        samples: translations printed after training.
    """

    num_beams: int = 1
    length_penalty: float = 1.0
    max_new_tokens: int = 128
    eval_batch_size: int = 128
    decode_val: bool = True
    samples: int = 3

    def validate(self) -> None:
        check_positive(self, "num_beams", "max_new_tokens", "eval_batch_size")


def _build_data(data: Seq2SeqDataConfig, seed: int
                ) -> tuple[Tokenizer, dict[str, tuple[list[str], list[str]]]]:
    if data.dataset == "multi30k":
        splits = {split: (read_multi30k(split, data.src_lang, download=data.download),
                          read_multi30k(split, data.tgt_lang, download=data.download))
                  for split in ("train", "val", "test")}
    else:
        sizes = {"train": data.n_train, "val": data.n_val, "test": data.n_test}
        splits = {split: synthetic_pairs(n, mode=data.dataset, n_symbols=data.n_symbols,
                                         min_len=data.min_len, max_len=data.max_len_synthetic,
                                         seed=seed * 3 + i)
                  for i, (split, n) in enumerate(sizes.items())}
    src, tgt = splits["train"]
    tokenizer = train_bpe(list(src) + list(tgt), data.vocab_size)
    return tokenizer, splits


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def translate(model: nn.Module, tokenizer: Tokenizer, sources: list[str], *, num_beams: int = 1,
              length_penalty: float = 1.0, max_new_tokens: int = 128, batch_size: int = 64
              ) -> list[str]:
    """Detokenised translations of ``sources``, decoded in batches of similar length."""
    encoded = [torch.tensor(e.ids) for e in tokenizer.backend.encode_batch(list(sources))]
    order = sorted(range(len(sources)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(sources)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = _device(model)
    for group in chunks(order, batch_size):
        ids, mask = pad_batch([encoded[i] for i in group], pad)
        limit = min(max_new_tokens, int(1.5 * ids.shape[1]) + 10,
                    getattr(model.config, "max_seq_len", max_new_tokens))
        generated = model.generate(ids.to(device), mask.to(device), max_new_tokens=limit,
                                   num_beams=num_beams, length_penalty=length_penalty)
        for row, i in enumerate(group):
            out[i] = tokenizer.decode(generated[row, 1:].tolist(), skip_special_tokens=True)
    return out


@torch.no_grad()
def token_loss(model: nn.Module, dataset: ParallelDataset, pad_token_id: int,
               batch_size: int) -> float:
    """Per-token cross-entropy (no label smoothing) of the whole dataset, teacher forced."""
    order = sorted(range(len(dataset)), key=lambda i: int(dataset.src_lengths[i]))
    total, count = 0.0, 0
    device = _device(model)
    for group in chunks(order, batch_size):
        batch = collate_pairs([dataset[i] for i in group], pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        decoder_input_ids = shift_tokens_right(batch["labels"], pad_token_id,
                                               model.config.decoder_start_token_id)
        logits = model(batch["input_ids"], batch["attention_mask"], decoder_input_ids).logits
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(),
                                       ignore_index=-100, reduction="sum"))
        count += int((batch["labels"] != -100).sum())
    return total / max(count, 1)


def score(hypotheses: list[str], references: list[str], synthetic: bool) -> dict[str, float]:
    """``exact_match`` (synthetic) or sacreBLEU ``bleu`` (13a, lowercased) and ``bleu_cased``."""
    if synthetic:
        hits = sum(h.split() == r.split() for h, r in zip(hypotheses, references))
        return {"exact_match": hits / max(len(references), 1)}
    sacrebleu = require("sacrebleu", "BLEU scoring")
    return {"bleu": sacrebleu.corpus_bleu(hypotheses, [references], tokenize="13a",
                                          lowercase=True).score,
            "bleu_cased": sacrebleu.corpus_bleu(hypotheses, [references],
                                                tokenize="13a").score}


@register_task
class Seq2SeqTask(Task):
    name = "seq2seq"
    description = ("encoder-decoder translation (Multi30k de->en) or synthetic copy/reverse; "
                   "BLEU or exact match with greedy or beam decoding")
    data_config = Seq2SeqDataConfig
    task_config = Seq2SeqTaskConfig

    def setup(self, model: dict[str, Any], data: Seq2SeqDataConfig, task: Seq2SeqTaskConfig,
              *, seed: int) -> TaskSetup:
        from formerkit.models.registry import create_model

        if data.dataset not in SYNTHETIC:  # test BLEU: fail now, not after training
            require("sacrebleu", f"BLEU scoring of data.dataset={data.dataset}")
        started = time.perf_counter()
        tokenizer, splits = _build_data(data, seed)
        fields = {k: v for k, v in model.items() if k not in ("name", "preset")}
        fields["vocab_size"] = tokenizer.vocab_size
        for role in ("pad", "bos", "eos"):
            fields.setdefault(f"{role}_token_id", getattr(tokenizer, f"{role}_token_id"))
        fields.setdefault("decoder_start_token_id", tokenizer.bos_token_id)
        network = create_model(model.get("name", "transformer"), model.get("preset"), **fields)
        pad = network.config.pad_token_id
        max_len = min(data.max_len, network.config.max_seq_len)
        train = ParallelDataset(tokenizer, *splits["train"], max_len=max_len)
        held_out = {split: ParallelDataset(tokenizer, *splits[split])
                    for split in ("val", "test")}
        network.tokenizer = tokenizer
        network.generation_config = {**(network.generation_config or {}),
                                     "num_beams": task.num_beams,
                                     "length_penalty": task.length_penalty,
                                     "max_new_tokens": task.max_new_tokens}
        synthetic = data.dataset in SYNTHETIC
        print(f"seq2seq: {data.dataset} {len(train):,} train pairs "
              f"({int(train.src_lengths.sum()):,} + {int(train.tgt_lengths.sum()):,} tokens), "
              f"vocab {tokenizer.vocab_size}, {network.num_parameters() / 1e6:.2f}M parameters "
              f"({time.perf_counter() - started:.1f}s)", flush=True)

        def evaluate(net: nn.Module, split: str) -> dict[str, float]:
            net = getattr(net, "module", net)
            was_training = net.training
            net.eval()
            try:
                dataset = held_out[split]
                metrics = {"loss": token_loss(net, dataset, pad, task.eval_batch_size)}
                if split == "test" or task.decode_val:
                    hyps = translate(net, tokenizer, dataset.sources, num_beams=task.num_beams,
                                     length_penalty=task.length_penalty,
                                     max_new_tokens=task.max_new_tokens,
                                     batch_size=task.eval_batch_size)
                    metrics.update(score(hyps, dataset.targets, synthetic))
            finally:
                net.train(was_training)
            return metrics

        def after_training(net: nn.Module, output_dir: Path) -> None:
            if not task.samples:
                return
            net = getattr(net, "module", net)
            net.eval()
            test = held_out["test"]
            sources = test.sources[:task.samples]
            hyps = translate(net, tokenizer, sources, num_beams=task.num_beams,
                             length_penalty=task.length_penalty)
            for src, hyp, ref in zip(sources, hyps, test.targets):
                print(f"  src: {src}\n  out: {hyp}\n  ref: {ref}", flush=True)

        has_bleu = not synthetic and task.decode_val
        return TaskSetup(
            model=network, train_dataset=train,
            collate_fn=lambda items: collate_pairs(items, pad),
            evaluate=evaluate,
            batch_sampler=lambda epoch: token_batches(train.src_lengths, train.tgt_lengths,
                                                      data.max_tokens, seed=seed, epoch=epoch),
            count_tokens=lambda batch: int(batch["attention_mask"].sum())
            + int((batch["labels"] != -100).sum()),
            after_training=after_training,
            metric_for_best=("bleu" if has_bleu else
                             "exact_match" if synthetic and task.decode_val else "loss"),
            greater_is_better=has_bleu or (synthetic and task.decode_val))

    def generate(self, model_dir: Path, prompt: str, **options: Any) -> str:
        """Translate ``prompt`` with the model saved in ``model_dir``.

        Options: ``num_beams``, ``length_penalty``, ``max_new_tokens`` (defaults from the
        saved generation config), ``do_sample=False`` (translation decodes greedily or by
        beam search), ``device`` (``auto``: CUDA when available).
        """

        known = ("num_beams", "length_penalty", "max_new_tokens", "do_sample", "device", "seed")
        unknown = sorted(k for k, v in options.items() if k not in known and v is not None)
        if unknown:
            raise ValueError(f"translation does not take the generate options {unknown}; "
                             f"it takes {list(known)}")
        if options.get("do_sample"):
            raise ValueError("translation decodes greedily or by beam search: --sample is "
                             "not supported for seq2seq models")
        model, settings = _translator(model_dir, options)
        settings.pop("batch_size", None)
        return translate(model, model.tokenizer, [prompt], batch_size=1, **settings)[0]

    def predict(self, model_dir: Path, input_path: Path, **options: Any) -> str:
        """Translate every line of ``input_path`` (one source sentence per line, UTF-8):
        one translation per line, in order, decoded in batches of similar length.

        Options: ``num_beams``, ``length_penalty``, ``max_new_tokens`` (defaults from the saved
        generation config), ``batch_size`` (64), ``device``. A line longer than the model's
        positions is truncated to fit, with a warning naming it; an empty file is an error.
        """

        known = ("num_beams", "length_penalty", "max_new_tokens", "batch_size", "device")
        unknown = sorted(k for k, v in options.items() if k not in known and v is not None)
        if unknown:
            raise ValueError(f"translating a file does not take {unknown}; it takes "
                             f"{list(known)}")
        lines = read_lines(input_path)
        model, settings = _translator(model_dir, options)
        sources = fit_to_positions(model, model.tokenizer, lines, input_path)
        return "\n".join(translate(model, model.tokenizer, sources, **settings))

    def score_file(self, model_dir: Path, input_path: Path, reference_path: Path,
                   **options: Any) -> dict[str, Any]:
        """Translate ``input_path`` and score it against ``reference_path`` (one reference per
        line) with sacreBLEU: ``bleu`` (13a, lowercased), ``bleu_cased``, and each score's
        sacreBLEU signature. Options as ``predict``."""
        sacrebleu = require("sacrebleu", "BLEU scoring")
        references = read_lines(reference_path)
        hypotheses = self.predict(model_dir, input_path, **options).split("\n")
        if len(references) != len(hypotheses):
            raise ValueError(f"{reference_path} has {len(references)} lines but {input_path} "
                             f"has {len(hypotheses)}: one reference per source line")
        result: dict[str, Any] = {"sentences": len(references)}
        for name, lowercase in (("bleu", True), ("bleu_cased", False)):
            metric = sacrebleu.metrics.BLEU(tokenize="13a", lowercase=lowercase)
            result[name] = metric.corpus_score(hypotheses, [references]).score
            result[f"{name}_signature"] = str(metric.get_signature())
        return result


def _translator(model_dir: Path, options: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """The saved model on ``options["device"]`` and its decoding settings: the saved
    generation config's, overridden by the ``options`` that are set."""
    import formerkit
    from formerkit.train.distributed import resolve_device

    model = formerkit.from_pretrained(model_dir).to(
        resolve_device(options.get("device") or "auto"))
    if model.tokenizer is None:
        raise ValueError(f"{model_dir} has no tokenizer (tokenizer.json): cannot encode "
                         "the source sentences")
    saved = model.generation_config or {}
    settings = {k: saved[k] for k in ("num_beams", "length_penalty", "max_new_tokens")
                if saved.get(k) is not None}
    settings.update({k: v for k, v in options.items() if v is not None and k in
                     ("num_beams", "length_penalty", "max_new_tokens", "batch_size")})
    return model, settings


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (without newlines); an empty file is an error."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text: {err}") from None
    if not lines:
        raise ValueError(f"{path} is empty: expected one sentence per line")
    return lines


def fit_to_positions(model: nn.Module, tokenizer: Tokenizer, lines: list[str],
                     source: Path) -> list[str]:
    """``lines``, each cut to the model's ``max_seq_len`` tokens (end-of-sequence included),
    with a warning naming every line that was cut."""
    import warnings

    limit = model.config.max_seq_len
    fitted = []
    for number, (line, encoding) in enumerate(
            zip(lines, tokenizer.backend.encode_batch(lines)), start=1):
        if len(encoding.ids) > limit:
            warnings.warn(f"{source}:{number}: the source has {len(encoding.ids)} tokens, more "
                          f"than the model's {limit} positions; translating its first {limit}",
                          stacklevel=3)
            # Cut on token boundaries and leave room for the end-of-sequence token.
            end = encoding.offsets[limit - 2][1] if limit > 1 else 0
            line = line[:end]
        fitted.append(line)
    return fitted
