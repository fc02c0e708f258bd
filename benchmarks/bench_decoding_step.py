"""What the one-token decoding step's speed-ups pay (``formerkit.nn.decoding``): TorchScript for
its layer loop, and its few-row products (``step_linear``): a batched product over row blocks of
each weight, the blocks as its left operand.

For the configurations the step covers (GPT-2: LayerNorm, fused q/k/v, GELU; a Llama: RMSNorm,
separate q/k/v, grouped-query attention, rotary, SwiGLU, small and SmolLM-135M-sized; the
seq2seq decoder: post-norm with cross-attention), greedy batch-1 generation runs four ways,
interleaved in one process: as shipped (TorchScript, weight-left row blocks), with exact products
(``FORMERKIT_EXACT_PRODUCTS=1``: the row blocks on the right, F.linear's bits), with plain
``F.linear`` for every product, and as plain Python. The script prints the median milliseconds
per new token of each, the ratios, and whether all four gave the same tokens.

    python benchmarks/bench_decoding_step.py [--rounds 5] [--new-tokens 200] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import formerkit
from formerkit.nn import decoding

CONFIGS = {
    "gpt (bench_gpt.py shape)": ("gpt", dict(vocab_size=65, d_model=384, n_heads=6, n_layers=6,
                                              d_ff=1536, max_seq_len=256, dropout=0.0)),
    "llama (GQA 6/2, rotary, SwiGLU)": ("llama", dict(vocab_size=256, d_model=384, n_heads=6,
                                                       n_kv_heads=2, n_layers=6, d_ff=1024,
                                                       max_seq_len=256)),
    "llama (SmolLM-135M shape)": ("llama", dict(vocab_size=49152, d_model=576, n_heads=9,
                                                 n_kv_heads=3, n_layers=30, d_ff=1536,
                                                 max_seq_len=2048)),
    "seq2seq decoder (bench_seq2seq.py shape)": (
        "transformer", dict(vocab_size=8000, d_model=256, n_heads=8, n_encoder_layers=3,
                            n_decoder_layers=3, d_ff=512, max_seq_len=256, dropout=0.0)),
}


def generate(model, prompt: torch.Tensor, new_tokens: int, runner, blocks: int, exact: bool
             ) -> tuple[float, torch.Tensor]:
    """(ms per new token, output) with ``runner`` as the plan's layer loop, ``blocks`` row
    blocks per weight and exact products or not."""
    original, original_blocks = decoding.compiled_layers_step, decoding.step_blocks
    original_exact = os.environ.get("FORMERKIT_EXACT_PRODUCTS")
    decoding.compiled_layers_step = lambda: runner
    decoding.step_blocks = lambda: blocks
    os.environ["FORMERKIT_EXACT_PRODUCTS"] = "1" if exact else "0"
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(prompt, max_new_tokens=new_tokens, eos_token_id=[])
        return (time.perf_counter() - start) * 1e3 / new_tokens, out
    finally:
        decoding.compiled_layers_step, decoding.step_blocks = original, original_blocks
        if original_exact is None:
            del os.environ["FORMERKIT_EXACT_PRODUCTS"]
        else:
            os.environ["FORMERKIT_EXACT_PRODUCTS"] = original_exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    scripted = decoding.compiled_layers_step()
    if scripted is decoding._layers_step:
        raise SystemExit("TorchScript is unavailable or turned off (FORMERKIT_TORCHSCRIPT=0)")
    blocks = decoding.step_blocks()
    variants = {"shipped": (scripted, blocks, False), "exact": (scripted, blocks, True),
                "F.linear": (scripted, 1, True), "python": (decoding._layers_step, blocks, False)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads ({blocks} row blocks), "
          f"{args.rounds} interleaved rounds, {args.new_tokens} new tokens, batch 1\n")
    print("| configuration | shipped ms/token | exact | / shipped | F.linear | / shipped | "
          "Python | / shipped | same tokens |\n|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for label, (name, fields) in CONFIGS.items():
        torch.manual_seed(0)
        model = formerkit.create_model(name, **fields).eval()
        prompt = torch.randint(3, fields["vocab_size"], (1, 16))
        outputs = {key: generate(model, prompt, args.new_tokens, *variant)[1]
                   for key, variant in variants.items()}  # also the warm-up
        times: dict[str, list[float]] = {key: [] for key in variants}
        for round_ in range(args.rounds):
            order = list(variants) if round_ % 2 == 0 else list(variants)[::-1]
            for key in order:
                times[key].append(generate(model, prompt, args.new_tokens, *variants[key])[0])
        shipped, *others = (statistics.median(times[key]) for key in variants)
        same = all(torch.equal(out, outputs["shipped"]) for out in outputs.values())
        cells = " | ".join(f"{other:.2f} | {other / shipped:.2f}x" for other in others)
        print(f"| {label} | {shipped:.2f} | {cells} | {same} |", flush=True)


if __name__ == "__main__":
    main()
