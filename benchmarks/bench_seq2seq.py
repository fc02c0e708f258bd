"""Benchmark formerkit's encoder-decoder Transformer against transformers' MarianMTModel on CPU.

The transformer-multi30k recipe's shape (3 + 3 layers, width 256, 8 heads, d_ff 512, a shared
8,000-token vocabulary, sinusoidal positions, post-norm), random-init in transformers, saved and
loaded by formerkit, so the weights are the same. Rounds interleave the two libraries in one
process. Measures greedy (batch 1) and beam search (4 beams) translation of a 20-token source
into 40 new tokens (end-of-sequence off, so both produce every token), on both clocks, checks
that the outputs are token-for-token identical and prints medians and ratios.

    python benchmarks/bench_seq2seq.py [--rounds 5] [--new-tokens 40] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
import transformers
from harness import generate_tokens_per_s

from formerkit.models.transformer import TransformerForSeq2Seq

VOCAB, PAD = 8000, 1
CONFIG = dict(vocab_size=VOCAB, d_model=256, encoder_layers=3, decoder_layers=3,
              encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=512,
              decoder_ffn_dim=512, max_position_embeddings=256, activation_function="relu",
              pad_token_id=PAD, eos_token_id=2, decoder_start_token_id=PAD,
              scale_embedding=True, forced_eos_token_id=None, dropout=0.0)


def build_models() -> tuple[torch.nn.Module, TransformerForSeq2Seq]:
    torch.manual_seed(0)
    hf = transformers.MarianMTModel(transformers.MarianConfig(**CONFIG)).eval()
    with tempfile.TemporaryDirectory() as path:
        hf.save_pretrained(path)
        ours = TransformerForSeq2Seq.from_pretrained(path)
    hf.generation_config.eos_token_id = None  # every row runs the full length
    return hf, ours.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hf, ours = build_models()
    models = {"hf": hf, "ours": ours}
    source = torch.randint(3, VOCAB, (1, 20), generator=torch.Generator().manual_seed(0))
    new = args.new_tokens

    def runner(beams: int):
        def hf_fn(model, ids):
            return model.generate(ids, attention_mask=torch.ones_like(ids), num_beams=beams,
                                  max_new_tokens=new, do_sample=False, early_stopping=False,
                                  length_penalty=1.0, pad_token_id=PAD)

        def ours_fn(model, ids):
            return model.generate(ids, torch.ones_like(ids), num_beams=beams,
                                  max_new_tokens=new, eos_token_id=[], length_penalty=1.0)

        return {"hf": hf_fn, "ours": ours_fn}

    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    identical = {}
    for label, beams in (("greedy", 1), ("beam 4", 4)):
        fns = runner(beams)
        outputs = {name: generate_tokens_per_s(fns[name], models[name], source, start_len=1)[1]
                   for name in models}
        identical[label] = torch.equal(outputs["hf"], outputs["ours"])
        timings: dict[str, list[tuple[float, float]]] = {"hf": [], "ours": []}
        for round_ in range(args.rounds):
            order = ["hf", "ours"] if round_ % 2 == 0 else ["ours", "hf"]
            for name in order:
                timings[name].append(generate_tokens_per_s(fns[name], models[name], source,
                                                            start_len=1)[0])
            print(f"{label} round {round_ + 1}: hf {timings['hf'][-1][0]:.1f} ours "
                  f"{timings['ours'][-1][0]:.1f} tok/s (wall clock)", flush=True)
        results[label] = timings

    print(f"\ntorch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads, {args.rounds} interleaved rounds; outputs "
          f"identical: {identical}\n")
    print("| median new tokens/s (batch 1) | HF wall | formerkit wall | ratio | HF CPU | "
          "formerkit CPU | ratio | target |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, timings in results.items():
        cells = []
        for clock in (0, 1):
            theirs = statistics.median(t[clock] for t in timings["hf"])
            mine = statistics.median(t[clock] for t in timings["ours"])
            cells.append(f"{theirs:,.0f} | {mine:,.0f} | {mine / theirs:.2f}x")
        print(f"| {label}, 20-token source, {new} new | {' | '.join(cells)} | >= 2x |")


if __name__ == "__main__":
    main()
