"""The ``causal_lm`` task: next-token language modelling on a text (GPT, Radford et al. 2019),
e.g. character-level tiny Shakespeare as in Karpathy's char-rnn and nanoGPT.

Data: a named dataset or a text file, split into the first ``1 - val_fraction`` of its
characters (training) and the rest (validation), tokenised once. Training samples are random
context windows; validation is the whole split in non-overlapping windows.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from formerkit.config import ConfigBase, check_choice, check_positive
from formerkit.data.text import (
    LMWindows,
    encode_stream,
    evaluate_lm,
    lm_loss,
    read_text,
    split_text,
)
from formerkit.data.tokenizers import Tokenizer, train_byte_bpe, train_char_tokenizer
from formerkit.tasks.base import Task, TaskSetup, register_task
from formerkit.tasks.common import check_lora_options, lora_hooks, model_directory

TOKENIZERS = ("char", "byte_bpe")


@dataclasses.dataclass
class CausalLMDataConfig(ConfigBase):
    """The recipe's ``data`` section.

    Attributes:
        dataset: a named dataset whose text is ``NAME/input.txt`` (``tinyshakespeare``).
        path: a UTF-8 text file to use instead of ``dataset``.
        tokenizer: ``char`` (one id per character of the text) or ``byte_bpe`` (GPT-2 style
            byte-level BPE trained on the training split).
        vocab_size: BPE vocabulary size (``byte_bpe`` only).
        val_fraction: the last fraction of the text held out for validation.
        context: window length; ``None``: the model's ``max_seq_len``.
        download: fetch the checksummed public original if the dataset is not on disk.
    """

    dataset: str | None = "tinyshakespeare"
    path: str | None = None
    tokenizer: str = "char"
    vocab_size: int = 1024
    val_fraction: float = 0.1
    context: int | None = None
    download: bool = False

    def validate(self) -> None:
        check_choice(self, "tokenizer", TOKENIZERS)
        check_positive(self, "vocab_size", "context")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"CausalLMDataConfig.val_fraction must be in (0, 1), "
                             f"got {self.val_fraction!r}")
        if not self.dataset and not self.path:
            raise ValueError("CausalLMDataConfig needs a dataset name or a path")


@dataclasses.dataclass
class CausalLMTaskConfig(ConfigBase):
    """The recipe's ``task`` section: evaluation batch and the sample printed after training.

    Attributes:
        eval_batch_size: windows per forward pass during evaluation.
        sample_prompt: text the sample continues.
        sample_tokens: tokens to sample after training (0: no sample).
        temperature, top_k, top_p: sampling settings (also the defaults of ``generate``).
        seed: seed of the sample.
        init_from: continue from a saved model (a model directory, a run directory holding
            ``model/``, or a HuggingFace checkpoint): its architecture, weights and tokenizer
            are used; the recipe's ``model`` section may only change dropout.
        lora: ``{rank, alpha, targets, dropout, modules_to_save}`` to train LoRA adapters on
            the linear layers named by ``targets`` (default: ``qkv_proj`` of GPT, ``q_proj``
            and ``v_proj`` of Llama, as PEFT) while the rest is frozen; merged when saved.
    """

    eval_batch_size: int = 64
    sample_prompt: str = "\n"
    sample_tokens: int = 300
    temperature: float = 0.8
    top_k: int | None = 40
    top_p: float | None = None
    seed: int = 0
    init_from: str | None = None
    lora: dict[str, Any] | None = None

    def validate(self) -> None:
        check_positive(self, "eval_batch_size", "temperature", "top_k")
        check_lora_options(self.lora)
        if self.sample_tokens < 0:
            raise ValueError(f"CausalLMTaskConfig.sample_tokens must be >= 0, "
                             f"got {self.sample_tokens!r}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"CausalLMTaskConfig.top_p must be in (0, 1], got {self.top_p!r}")


def build_tokenizer(data: CausalLMDataConfig, text: str, train_text: str) -> Tokenizer:
    """The run's tokenizer: characters of the whole text (so validation has no unknown
    characters, as nanoGPT), or byte-level BPE learned from the training split only."""
    if data.tokenizer == "char":
        return train_char_tokenizer(text)
    return train_byte_bpe(train_text.splitlines(keepends=True), data.vocab_size)


def pretrained_model(path: str, model: dict[str, Any]) -> nn.Module:
    """The model saved at ``path`` (``task.init_from``), for further training. The recipe's
    ``model`` section may repeat the saved architecture and may change dropout, nothing else;
    the model must carry its tokenizer."""
    from formerkit.models.auto import from_pretrained

    directory = model_directory(path)
    network = from_pretrained(directory)
    if model.get("name") and model["name"] != network.registry_name:
        raise ValueError(f"task.init_from={path!r} holds a {network.registry_name!r} model, "
                         f"but the recipe names model.name={model['name']!r}")
    dropout = {k: v for k, v in model.items() if k in ("dropout", "attn_dropout")}
    for key, value in model.items():
        if key in ("name", "preset", "dropout", "attn_dropout"):
            continue
        saved = getattr(network.config, key, None)
        if saved != value:
            raise ValueError(f"task.init_from={path!r}: model.{key}={value!r} differs from the "
                             f"saved model's {saved!r}; only dropout and attn_dropout can change")
    if any(getattr(network.config, k, None) != v for k, v in dropout.items()):
        network = from_pretrained(directory, **dropout)
    if network.tokenizer is None:
        raise ValueError(f"task.init_from={path!r}: {directory} has no tokenizer to encode the "
                         "text with")
    return network.train()


@register_task
class CausalLMTask(Task):
    name = "causal_lm"
    description = "next-token language modelling on a text (GPT)"
    data_config = CausalLMDataConfig
    task_config = CausalLMTaskConfig

    def setup(self, model: dict[str, Any], data: CausalLMDataConfig, task: CausalLMTaskConfig,
              *, seed: int) -> TaskSetup:
        from formerkit.models.registry import create_model

        started = time.perf_counter()
        text = read_text(data.dataset, data.path, download=data.download)
        train_text, val_text = split_text(text, data.val_fraction)
        if task.init_from:
            network = pretrained_model(task.init_from, model)
            tokenizer = network.tokenizer
        else:
            tokenizer = build_tokenizer(data, text, train_text)
            fields = {k: v for k, v in model.items() if k not in ("name", "preset")}
            fields["vocab_size"] = tokenizer.vocab_size
            for role in ("bos", "eos", "pad"):
                fields.setdefault(f"{role}_token_id", getattr(tokenizer, f"{role}_token_id"))
            network = create_model(model["name"], model.get("preset"), **fields)
        fused = any(name.endswith("qkv_proj") for name, _ in network.named_modules())
        save_artifacts = lora_hooks(network, task.lora, default_targets=(
            ("qkv_proj",) if fused else ("q_proj", "v_proj")))
        max_len = network.config.max_seq_len
        context = data.context or max_len
        if context > max_len:
            raise ValueError(f"data.context={context} exceeds the model's max_seq_len={max_len}")
        train_tokens = encode_stream(tokenizer, train_text)
        val_tokens = encode_stream(tokenizer, val_text)
        network.tokenizer = tokenizer
        network.generation_config = {
            **(network.generation_config or {}), "do_sample": True,
            "temperature": task.temperature, "top_k": task.top_k, "top_p": task.top_p}
        if int(os.environ.get("RANK", "0")) == 0:  # once under torchrun
            print(f"causal_lm: {len(text):,} characters -> {train_tokens.numel():,} train / "
                  f"{val_tokens.numel():,} val tokens, vocab {tokenizer.vocab_size}, "
                  f"context {context}, {network.num_parameters() / 1e6:.2f}M parameters "
                  f"({time.perf_counter() - started:.1f}s)", flush=True)

        def evaluate(net: nn.Module, split: str) -> dict[str, float]:
            if split != "val":
                return {}  # the text has no separate test split
            return evaluate_lm(net, val_tokens, context, batch_size=task.eval_batch_size)

        def after_training(net: nn.Module, output_dir: Path) -> None:
            if task.sample_tokens:
                text = sample(net, tokenizer, task.sample_prompt, task.sample_tokens,
                              temperature=task.temperature, top_k=task.top_k, top_p=task.top_p,
                              seed=task.seed)
                print(f"--- sample ({task.sample_tokens} tokens, temperature "
                      f"{task.temperature}) ---\n{text}\n---", flush=True)

        return TaskSetup(model=network, train_dataset=LMWindows(train_tokens, context),
                         evaluate=evaluate, compute_loss=lm_loss,
                         count_tokens=lambda batch: batch["input_ids"].numel(),
                         after_training=after_training, save_artifacts=save_artifacts)

    def generate(self, model_dir: Path, prompt: str, **options: Any) -> str:
        """Continue ``prompt`` with the model saved in ``model_dir``.

        Options: ``max_new_tokens`` (default 200), ``temperature`` (0 = greedy), ``top_k``,
        ``top_p`` (defaults from the saved generation config), ``seed``, ``do_sample``,
        ``num_beams`` (beam search, no sampling), ``repetition_penalty``, ``device``
        (``auto``: CUDA when available); ``chat=True`` sends ``prompt`` as the user's turn
        through the checkpoint's chat template (after ``system``, if given) and returns the
        reply alone.
        """
        import formerkit
        from formerkit.train.distributed import resolve_device

        known = ("max_new_tokens", "temperature", "top_k", "top_p", "seed", "do_sample",
                 "num_beams", "repetition_penalty", "device", "chat", "system")
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"unknown generate options {unknown}; expected some of {known}")
        chat, system = options.pop("chat", False), options.pop("system", None)
        device = resolve_device(options.pop("device", None) or "auto")
        model = formerkit.from_pretrained(model_dir).to(device)
        if model.tokenizer is None:
            raise ValueError(f"{model_dir} has no tokenizer (tokenizer.json): cannot encode "
                             "the prompt")
        if chat:
            messages = ([{"role": "system", "content": system}] if system else []) + \
                [{"role": "user", "content": prompt}]
            prompt = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        elif system:
            raise ValueError("system is a chat option: pass chat=True (--chat) with it")
        saved = model.generation_config or {}
        settings = {k: saved.get(k) for k in ("temperature", "top_k", "top_p", "do_sample")
                    if saved.get(k) is not None}
        settings.update({k: v for k, v in options.items() if v is not None})
        max_new = settings.pop("max_new_tokens", 200)
        if settings.get("temperature") == 0:  # temperature 0 is greedy (llama.cpp, vLLM)
            settings.pop("temperature")
            settings["do_sample"] = False
        if settings.get("num_beams", 1) > 1:
            settings["do_sample"] = False
        return sample(model, model.tokenizer, prompt, max_new, new_only=chat, **settings)


@torch.no_grad()
def sample(model: nn.Module, tokenizer: Tokenizer, prompt: str, max_new_tokens: int, *,
           do_sample: bool = True, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, seed: int | None = None, num_beams: int = 1,
           repetition_penalty: float = 1.0, new_only: bool = False) -> str:
    """``prompt`` followed by ``max_new_tokens`` generated tokens, as text (the generated
    text alone with ``new_only``).

    Longer than the model's context, the text is generated in pieces, each conditioned on the
    last ``max_seq_len // 2`` (or more) tokens, as nanoGPT crops its context.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    if not ids:
        raise ValueError(f"prompt {prompt!r} encodes to no tokens: give a non-empty prompt")
    context = model.config.max_seq_len
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    was_training = model.training
    model.eval()
    try:
        out = torch.tensor([ids], device=device)  # (1, T)
        remaining = max_new_tokens
        while remaining > 0:
            step = min(remaining, max(1, context // 2))
            keep = min(out.shape[1], context - step)
            new = model.generate(out[:, -keep:], max_new_tokens=step, do_sample=do_sample,
                                 temperature=temperature, top_k=top_k, top_p=top_p,
                                 num_beams=num_beams, repetition_penalty=repetition_penalty,
                                 generator=generator)[:, keep:]  # (1, step)
            out = torch.cat([out, new], dim=1)
            remaining -= new.shape[1]
            if new.shape[1] < step:  # the model stopped at its eos token
                break
    finally:
        model.train(was_training)
    return tokenizer.decode(out[0, len(ids):] if new_only else out[0])
