"""What the library-vs-transformers benchmarks share: timing a training run and a generation on
both clocks (wall and this process's CPU time, steadier on a shared machine), interleaved rounds,
and the markdown table of medians and ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from formerkit.nn import decoding

Timing = tuple[float, float]  # (per wall-clock second, per CPU second)


def optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The same fused AdamW for both libraries: the default of formerkit's trainer and of
    transformers' Trainer (``adamw_torch_fused`` from torch 2.8), on CPU and CUDA alike."""
    return torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                             fused=True)


def train_tokens_per_s(model, opt, batches) -> Timing:
    model.train()
    start, cpu = time.perf_counter(), time.process_time()
    for x in batches:
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    tokens = sum(x.numel() for x in batches)
    return tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu)


def generate_tokens_per_s(fn: Callable, model, prompt, *, start_len: int | None = None
                          ) -> tuple[Timing, torch.Tensor]:
    """((new tokens per wall-clock second, per CPU second), output ids). The output's first
    ``start_len`` ids are not new (default: the prompt's length; seq2seq models start from one
    decoder start token)."""
    model.eval()
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = fn(model, prompt)
    tokens = out.shape[1] - (prompt.shape[1] if start_len is None else start_len)
    return (tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu)), out


def linear_layers_tokens_per_s(model: torch.nn.Module, steps: int) -> dict[str, float]:
    """Tokens per wall-clock second of the model's ``nn.Linear`` layers alone (the LM head
    included), one (1, in) row through each per token, as batch-1 decoding runs them:

    - ``"F.linear"``: one-row products as transformers runs them (MKL runs them on one thread);
    - ``"formerkit"``: formerkit's decoding products (``formerkit.nn.decoding.step_linear``:
      each weight's row blocks over the threads, as the left operand of a batched product);
    - ``"memory"``: reading every weight once (a sum over each on all threads), the memory
      bound that no fp32 batch-1 decoding beats.
    """
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    rows = {m.in_features: torch.randn(1, m.in_features, dtype=m.weight.dtype,
                                       device=m.weight.device) for m in linears}
    products = decoding.step_products()
    gathered = [decoding.gather_module(m, products) for m in linears]
    runs = {
        "F.linear": lambda: [linear(rows[linear.in_features]) for linear in linears],
        "formerkit": lambda: [decoding.step_linear(rows[layer.weight.shape[1]], layer)
                              for layer in gathered],
        "memory": lambda: [linear.weight.sum() for linear in linears],
    }
    rates = {}
    with torch.inference_mode():
        for name, run in runs.items():
            run()  # warm-up
            start = time.perf_counter()
            for _ in range(steps):
                run()
            rates[name] = steps / (time.perf_counter() - start)
    return rates


def bounds_line(model: torch.nn.Module, steps: int, hf_generation: float) -> str:
    """The median of three ``linear_layers_tokens_per_s`` runs, as multiples of HF's measured
    generation speed (tokens per wall-clock second)."""
    runs = [linear_layers_tokens_per_s(model, steps) for _ in range(3)]
    cells = []
    for name in runs[0]:
        rate = statistics.median(run[name] for run in runs)
        cells.append(f"{name} {rate:,.1f} tok/s = {rate / hf_generation:.2f}x HF")
    return ("Linear layers alone, batch 1 (wall clock): " + "; ".join(cells) + ".")


def interleave(models: dict, opts: dict, fns: dict, batches, prompt, rounds: int,
               gen_runs: int = 1) -> tuple[dict[str, list[Timing]], dict[str, list[Timing]]]:
    """Alternate the libraries' order each round; returns (train, generate) timings by name."""
    train: dict[str, list[Timing]] = {name: [] for name in models}
    generate: dict[str, list[Timing]] = {name: [] for name in models}
    for round_ in range(rounds):
        order = list(models) if round_ % 2 == 0 else list(models)[::-1]
        for name in order:
            train[name].append(train_tokens_per_s(models[name], opts[name], batches))
        for name in order:
            for _ in range(gen_runs):
                generate[name].append(generate_tokens_per_s(fns[name], models[name], prompt)[0])
        print(f"round {round_ + 1}: train hf {train['hf'][-1][0]:.0f} ours "
              f"{train['ours'][-1][0]:.0f} tok/s; generate hf {generate['hf'][-1][0]:.1f} ours "
              f"{generate['ours'][-1][0]:.1f} tok/s (wall clock)", flush=True)
    return train, generate


def row(label: str, values: dict[str, list[Timing]], target: float) -> str:
    cells = []
    for clock in (0, 1):
        hf_value = statistics.median(v[clock] for v in values["hf"])
        our_value = statistics.median(v[clock] for v in values["ours"])
        cells.append(f"{hf_value:,.0f} | {our_value:,.0f} | {our_value / hf_value:.2f}x")
    return f"| {label} | {' | '.join(cells)} | >= {target}x |"


TABLE_HEADER = ("| median tokens/s | HF wall | formerkit wall | ratio | HF CPU | formerkit CPU | "
                "ratio | target |\n|---|---:|---:|---:|---:|---:|---:|---:|")
