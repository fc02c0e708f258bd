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

import torch
import transformers
from harness import (
    TABLE_HEADER,
    bounds_line,
    generate_tokens_per_s,
    interleave,
    optimizer,
    row,
    train_tokens_per_s,
)

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


def hf_generate(hf, prompt):
    return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                       do_sample=False, num_beams=1, top_k=None,
                       top_p=None, temperature=None, pad_token_id=0)


def ours_generate(model, prompt):
    return model.generate(prompt, max_new_tokens=NEW_TOKENS, eos_token_id=[])


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
    train, generate = interleave(models, opts, fns, batches, prompt, args.rounds,
                                 args.gen_runs)

    print(f"\ntorch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads, {args.rounds} interleaved rounds; greedy outputs "
          f"identical: {same}\n")
    print(TABLE_HEADER)
    print(row(f"training, batch {BATCH} x {CONTEXT}", train, 1.1))
    print(row(f"greedy generation, {PROMPT}-token prompt, {NEW_TOKENS} new", generate, 2.5))
    hf_generation = statistics.median(v[0] for v in generate["hf"])
    print("\n" + bounds_line(ours, NEW_TOKENS, hf_generation))


if __name__ == "__main__":
    main()
