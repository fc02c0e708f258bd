"""Benchmark formerkit's GPT against transformers' GPT2LMHeadModel (Radford et al. 2019) on CPU.

Same weights (a random-init HF model saved to disk and loaded by formerkit), same config
(6 layers, 6 heads, width 384, context 256, vocab 65, dropout 0), same AdamW settings, batch 8;
rounds interleave the two libraries in one process so that machine load hits both alike.
Measures training tokens/s and greedy generation tokens/s (batch 1, 16-token prompt, 200 new
tokens) per wall-clock second and per CPU second of this process (steadier on a shared machine)
and prints a markdown table of medians and ratios.

    nice -n 5 python benchmarks/bench_gpt.py [--rounds 5] [--train-steps 3] [--gen-runs 1]
        [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import transformers

from formerkit.models.gpt import GPTForCausalLM

CONFIG = dict(n_layer=6, n_head=6, n_embd=384, n_positions=256, vocab_size=65)
BATCH, CONTEXT, PROMPT, NEW_TOKENS = 8, 256, 16, 200


def build_models() -> tuple[torch.nn.Module, GPTForCausalLM]:
    torch.manual_seed(0)
    config = transformers.GPT2Config(**CONFIG, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(config)
    with tempfile.TemporaryDirectory() as path:
        hf.save_pretrained(path)
        ours = GPTForCausalLM.from_pretrained(path)
    return hf, ours


def optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)


def train_tokens_per_s(model, opt, batches) -> tuple[float, float]:
    """(tokens per wall-clock second, tokens per CPU second of this process)."""
    model.train()
    start, cpu = time.perf_counter(), time.process_time()
    for x in batches:
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    tokens = sum(x.numel() for x in batches)
    return tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu)


def hf_generate(hf, prompt):
    return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                       do_sample=False, num_beams=1, top_k=None,
                       top_p=None, temperature=None, pad_token_id=0)


def ours_generate(model, prompt):
    return model.generate(prompt, max_new_tokens=NEW_TOKENS, eos_token_id=[])


def generate_tokens_per_s(fn, model, prompt) -> tuple[tuple[float, float], torch.Tensor]:
    """((new tokens per wall-clock second, per CPU second), output ids)."""
    model.eval()
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = fn(model, prompt)
    tokens = out.shape[1] - prompt.shape[1]
    return (tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu)), out


def linears_only_tokens_per_s(model: GPTForCausalLM, steps: int = NEW_TOKENS) -> float:
    """Tokens per CPU second of the weight matrices alone (one (1, D) row through every linear
    layer per token): the fp32 weight-streaming bound that batch-1 decoding cannot beat."""
    layers = list(model.transformer.encoder.layers)
    x = torch.randn(1, CONFIG["n_embd"])
    with torch.inference_mode():
        cpu = time.process_time()
        for _ in range(steps):
            for layer in layers:
                layer.self_attn.qkv_proj(x)
                layer.self_attn.out_proj(x)
                layer.ff.fc2(layer.ff.fc1(x))
            model.lm_head(x)
        return steps / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--train-steps", type=int, default=3, help="optimizer steps per round")
    parser.add_argument("--gen-runs", type=int, default=1, help="generations per round")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); use 1 on a shared, busy machine, "
                             "where OpenMP threads waiting for a busy core stall both libraries")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hf, ours = build_models()
    opts = {"hf": optimizer(hf), "ours": optimizer(ours)}
    models = {"hf": hf, "ours": ours}
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 65, (BATCH, CONTEXT), generator=gen)
               for _ in range(args.train_steps)]
    prompt = torch.randint(0, 65, (1, PROMPT), generator=gen)
    fns = {"hf": hf_generate, "ours": ours_generate}

    # Same tokens first (the weights are equal before training changes them).
    outputs = {name: generate_tokens_per_s(fns[name], models[name], prompt)[1]
               for name in models}
    same = torch.equal(outputs["hf"], outputs["ours"])
    for name in models:  # warm-up
        train_tokens_per_s(models[name], opts[name], batches[:1])
    # name -> list of (wall, cpu) tokens/s
    train: dict[str, list[tuple[float, float]]] = {"hf": [], "ours": []}
    generate: dict[str, list[tuple[float, float]]] = {"hf": [], "ours": []}
    for round_ in range(args.rounds):
        order = ["hf", "ours"] if round_ % 2 == 0 else ["ours", "hf"]
        for name in order:
            train[name].append(train_tokens_per_s(models[name], opts[name], batches))
        for name in order:
            for _ in range(args.gen_runs):
                generate[name].append(generate_tokens_per_s(fns[name], models[name], prompt)[0])
        print(f"round {round_ + 1}: train hf {train['hf'][-1][0]:.0f} ours "
              f"{train['ours'][-1][0]:.0f} tok/s; generate hf {generate['hf'][-1][0]:.1f} ours "
              f"{generate['ours'][-1][0]:.1f} tok/s (wall clock)", flush=True)

    def row(label: str, values: dict[str, list[tuple[float, float]]], target: float) -> str:
        cells = []
        for clock in (0, 1):
            hf_value = statistics.median(v[clock] for v in values["hf"])
            our_value = statistics.median(v[clock] for v in values["ours"])
            cells.append(f"{hf_value:,.0f} | {our_value:,.0f} | {our_value / hf_value:.2f}x")
        return f"| {label} | {' | '.join(cells)} | >= {target}x |"

    print(f"\ntorch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads, {args.rounds} interleaved rounds; greedy outputs "
          f"identical: {same}\n")
    print("| median tokens/s | HF wall | formerkit wall | ratio | HF CPU | formerkit CPU | "
          "ratio | target |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(row(f"training, batch {BATCH} x {CONTEXT}", train, 1.1))
    print(row(f"greedy generation, {PROMPT}-token prompt, {NEW_TOKENS} new", generate, 2.5))
    bound = statistics.median(linears_only_tokens_per_s(ours) for _ in range(3))
    hf_cpu = statistics.median(v[1] for v in generate["hf"])
    print(f"\nWeight-streaming bound (the linear layers alone, batch 1): {bound:,.0f} tokens per "
          f"CPU second = {bound / hf_cpu:.2f}x HF's generation.")


if __name__ == "__main__":
    main()
