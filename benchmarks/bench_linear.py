"""Time the dense products of training on the CPU: MKL (``F.linear`` and its autograd) against
formerkit's ``linear`` (oneDNN's kernel for large fp32 products) and oneDNN for every product.

For each (out, in) weight shape and row count it times, interleaved in one process, median of
``--rounds``: the forward product x W^T, the input gradient g W and the weight gradient g^T x,
as MKL runs them (what ``F.linear``'s autograd calls) and as oneDNN runs them (the transposed
operands as views, as ``formerkit.nn.linear`` passes them), and prints GFLOP/s and the ratio.
The default shapes are the SmolLM-135M layers at the Llama benchmark's 512 training rows,
GPT's at 2,048 rows, and small products near ``ONEDNN_MIN_MACS``.

    python benchmarks/bench_linear.py [--rounds 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from formerkit.nn.linear import ONEDNN_MIN_MACS, has_onednn_linear, onednn_linear

SHAPES = [  # ((out, in), rows)
    ((576, 576), 512), ((192, 576), 512), ((1536, 576), 512), ((576, 1536), 512),
    ((49152, 576), 512),
    ((1152, 384), 2048), ((384, 384), 2048), ((1536, 384), 2048), ((384, 1536), 2048),
    ((576, 576), 8), ((576, 576), 16), ((192, 576), 32), ((1536, 576), 8), ((256, 256), 32),
    ((128, 128), 256), ((64, 64), 128),
]


def products(weight: torch.Tensor, x: torch.Tensor, grad: torch.Tensor) -> dict[str, tuple]:
    """Each product as (MKL's call, oneDNN's call)."""
    return {
        "forward x W^T": (lambda: torch.nn.functional.linear(x, weight),
                          lambda: onednn_linear(x, weight)),
        "input grad g W": (lambda: grad.mm(weight), lambda: onednn_linear(grad, weight.t())),
        "weight grad g^T x": (lambda: grad.t().mm(x), lambda: onednn_linear(grad.t(), x.t())),
    }


def seconds(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if not has_onednn_linear():
        raise SystemExit("this PyTorch has no oneDNN linear kernel (its x86 builds do)")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, median of "
          f"{args.rounds} interleaved rounds; formerkit takes oneDNN for the forward and input "
          f"gradient from {ONEDNN_MIN_MACS:,} multiply-adds\n")
    print("| weight (out, in) | rows | multiply-adds | product | MKL GFLOP/s | oneDNN GFLOP/s "
          "| oneDNN / MKL |\n|---|---:|---:|---|---:|---:|---:|")
    with torch.inference_mode():
        for (out_features, in_features), rows in SHAPES:
            weight = torch.randn(out_features, in_features)
            x, grad = torch.randn(rows, in_features), torch.randn(rows, out_features)
            macs = rows * out_features * in_features
            repeats = max(3, int(2e8 / macs))
            for name, (mkl, onednn) in products(weight, x, grad).items():
                mkl(), onednn()  # warm-up: oneDNN prepares a kernel per shape
                times: dict[str, list[float]] = {"mkl": [], "onednn": []}
                for _ in range(args.rounds):
                    times["mkl"].append(seconds(mkl, repeats))
                    times["onednn"].append(seconds(onednn, repeats))
                mkl_s, onednn_s = (statistics.median(times[k]) for k in ("mkl", "onednn"))
                print(f"| ({out_features}, {in_features}) | {rows} | {macs / 1e6:.1f}M | {name} "
                      f"| {2 * macs / mkl_s / 1e9:.0f} | {2 * macs / onednn_s / 1e9:.0f} "
                      f"| {mkl_s / onednn_s:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
