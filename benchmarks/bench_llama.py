"""Benchmark formerkit's Llama against transformers' LlamaForCausalLM on CPU (or a GPU).

A SmolLM-135M-shaped random-init model (30 layers, width 576, 9 heads over 3 key/value heads,
d_ff 1536, vocab 49152, tied embeddings), saved by transformers and loaded by formerkit, so the
weights are the same; same AdamW settings. Rounds interleave the two libraries in one process
so that machine load hits both alike. Measures training tokens/s (batch x context) and greedy
batch-1 generation tokens/s, on both clocks, and prints medians and ratios. With ``--device
cuda --dtype bf16`` both run in bfloat16 with fused SDPA attention and the script also prints
model FLOP utilisation (6 N flops per trained token, 2 N per generated token, N = parameters
without embeddings, against ``--peak-tflops``).

    python benchmarks/bench_llama.py [--rounds 5] [--train-steps 1] [--batch 2] [--context 256]
        [--new-tokens 64] [--device cpu|cuda] [--dtype fp32|bf16] [--peak-tflops 989]
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

from formerkit.models.llama import LlamaForCausalLM

SMOLLM = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
              num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
              rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
PROMPT = 16


def build_models(device: str, dtype: torch.dtype) -> tuple[torch.nn.Module, LlamaForCausalLM]:
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **SMOLLM, attn_implementation="sdpa"))  # transformers' default, its fastest here
    with tempfile.TemporaryDirectory() as path:
        hf.save_pretrained(path)
        ours = LlamaForCausalLM.from_pretrained(path)
    return hf.to(device, dtype), ours.to(device, dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--train-steps", type=int, default=1, help="optimizer steps per round")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--hf-attention", default=None,
                        help="transformers attn_implementation (default sdpa)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense peak for the dtype, for model FLOP utilisation")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    hf, ours = build_models(args.device, dtype)
    if args.hf_attention:
        hf.config._attn_implementation = args.hf_attention
    models = {"hf": hf, "ours": ours}
    opts = {name: optimizer(model) for name, model in models.items()}
    gen = torch.Generator().manual_seed(0)
    vocab = SMOLLM["vocab_size"]
    batches = [torch.randint(0, vocab, (args.batch, args.context), generator=gen).to(args.device)
               for _ in range(args.train_steps)]
    prompt = torch.randint(0, vocab, (1, PROMPT), generator=gen).to(args.device)
    new = args.new_tokens

    def hf_generate(model, ids):
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                              do_sample=False, num_beams=1, top_k=None, top_p=None,
                              temperature=None, pad_token_id=0, eos_token_id=None)

    def ours_generate(model, ids):
        return model.generate(ids, max_new_tokens=new, eos_token_id=[])

    fns = {"hf": hf_generate, "ours": ours_generate}
    outputs = {name: generate_tokens_per_s(fns[name], models[name], prompt)[1] for name in models}
    same = torch.equal(outputs["hf"], outputs["ours"])
    for name in models:  # warm-up
        train_tokens_per_s(models[name], opts[name], batches[:1])
    train, generate = interleave(models, opts, fns, batches, prompt, args.rounds)

    print(f"\ntorch {torch.__version__}, transformers {transformers.__version__}, "
          f"{args.device} {args.dtype}, {torch.get_num_threads()} threads, {args.rounds} "
          f"interleaved rounds; greedy outputs identical: {same}\n")
    print(TABLE_HEADER)
    print(row(f"training, batch {args.batch} x {args.context}", train, 1.1))
    print(row(f"greedy generation, {PROMPT}-token prompt, {new} new", generate, 2.0))
    if args.device == "cpu":
        hf_generation = statistics.median(v[0] for v in generate["hf"])
        print("\n" + bounds_line(ours, 16, hf_generation))
    if args.peak_tflops:
        params = sum(p.numel() for n, p in ours.named_parameters() if "embed" not in n)
        peak = args.peak_tflops * 1e12
        for label, values, flops in (("training", train, 6), ("generation", generate, 2)):
            for name in ("hf", "ours"):
                rate = statistics.median(v[0] for v in values[name])
                print(f"MFU {label} {name}: {100 * rate * flops * params / peak:.2f}%")


if __name__ == "__main__":
    main()
