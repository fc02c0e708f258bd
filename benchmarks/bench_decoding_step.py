"""Does TorchScript still pay for the one-token decoding step? (``formerkit.nn.decoding``)

For three configurations the step covers (GPT-2: LayerNorm, fused q/k/v, GELU; a Llama: RMSNorm,
separate q/k/v, grouped-query attention, rotary, SwiGLU; the seq2seq decoder: post-norm with
cross-attention), greedy batch-1 generation runs with the layer loop compiled by TorchScript
and as plain Python, interleaved in one process, and the script prints the median milliseconds
per new token of each and their ratio. Both runners give the same tokens (checked).

    python benchmarks/bench_decoding_step.py [--rounds 5] [--new-tokens 200] [--threads N]
"""

from __future__ import annotations

import argparse
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
    "seq2seq decoder (bench_seq2seq.py shape)": (
        "transformer", dict(vocab_size=8000, d_model=256, n_heads=8, n_encoder_layers=3,
                            n_decoder_layers=3, d_ff=512, max_seq_len=256, dropout=0.0)),
}


def generate(model, prompt: torch.Tensor, new_tokens: int, runner) -> tuple[float, torch.Tensor]:
    """(ms per new token, output) with ``runner`` as the plan's layer loop."""
    original = decoding.compiled_layers_step
    decoding.compiled_layers_step = lambda: runner
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(prompt, max_new_tokens=new_tokens, eos_token_id=[])
        return (time.perf_counter() - start) * 1e3 / new_tokens, out
    finally:
        decoding.compiled_layers_step = original


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
    runners = {"torchscript": scripted, "python": decoding._layers_step}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} "
          f"interleaved rounds, {args.new_tokens} new tokens, batch 1\n")
    print("| configuration | TorchScript ms/token | Python ms/token | Python / TorchScript | "
          "same tokens |\n|---|---:|---:|---:|---|")
    for label, (name, fields) in CONFIGS.items():
        torch.manual_seed(0)
        model = formerkit.create_model(name, **fields).eval()
        prompt = torch.randint(3, fields["vocab_size"], (1, 16))
        outputs = {key: generate(model, prompt, args.new_tokens, run)[1]
                   for key, run in runners.items()}  # also the warm-up
        times: dict[str, list[float]] = {key: [] for key in runners}
        for round_ in range(args.rounds):
            order = list(runners) if round_ % 2 == 0 else list(runners)[::-1]
            for key in order:
                times[key].append(generate(model, prompt, args.new_tokens, runners[key])[0])
        ts, py = (statistics.median(times[key]) for key in runners)
        same = torch.equal(outputs["torchscript"], outputs["python"])
        print(f"| {label} | {ts:.2f} | {py:.2f} | {py / ts:.2f}x | {same} |", flush=True)


if __name__ == "__main__":
    main()
