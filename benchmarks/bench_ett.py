"""ETT long-term forecasting benchmark: run the forecasting recipes over horizons and seeds
with ``formerkit.train`` and write a markdown table of test MSE/MAE (mean +- std over seeds)
beside the published lookback-96 figures (iTransformer paper, Liu et al. 2024, Table 10) and
the targets (published MSE + 1 %; best model's four-horizon average <= 0.450).

Usage:
    python benchmarks/bench_ett.py                                  # everything, 3 seeds
    python benchmarks/bench_ett.py --models itransformer,patchtst --horizons 96 --seeds 0

A run whose ``metrics.json`` already exists under ``--runs`` is reused, so the benchmark can be
run in pieces; the table always covers every finished run found there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

HORIZONS = (96, 192, 336, 720)
MODELS = ("transformer", "itransformer", "patchtst", "crossformer")
# Published ETTh1 MSE/MAE at lookback 96, horizons 96/192/336/720 (iTransformer, Table 10).
PUBLISHED = {
    "itransformer": {96: (0.386, 0.405), 192: (0.441, 0.436), 336: (0.487, 0.458),
                     720: (0.503, 0.491), "avg": (0.454, 0.447)},
    "patchtst": {96: (0.414, 0.419), 192: (0.460, 0.445), 336: (0.501, 0.466),
                 720: (0.500, 0.488), "avg": (0.469, 0.454)},
    "crossformer": {96: (0.423, 0.448), 192: (0.471, 0.474), 336: (0.570, 0.546),
                    720: (0.653, 0.621), "avg": (0.529, 0.522)},
}
BEST_AVERAGE_TARGET = 0.450
TOLERANCE = 1.01


def run_one(model: str, dataset: str, horizon: int, seed: int, runs: Path,
            extra: list[str]) -> dict[str, float]:
    """Train one recipe (or reuse a finished run) and return its metrics plus wall time."""
    import formerkit

    out = runs / f"{model}-{dataset.lower()}-h{horizon}-s{seed}"
    metrics_file = out / "metrics.json"
    if not metrics_file.is_file():
        start = time.time()
        overrides = [f"data.dataset={dataset}", f"data.pred_len={horizon}",
                     f"trainer.seed={seed}", "trainer.progress=false", *extra]
        formerkit.train(f"{model}-etth1", output_dir=out, overrides=overrides)
        (out / "wall_time.json").write_text(json.dumps({"seconds": time.time() - start}))
    metrics = json.loads(metrics_file.read_text())
    wall = out / "wall_time.json"
    metrics["seconds"] = json.loads(wall.read_text())["seconds"] if wall.is_file() else None
    return metrics


def collect(runs: Path, dataset: str) -> dict[tuple[str, int], list[dict[str, float]]]:
    """Every finished run under ``runs``: (model, horizon) -> list of metrics over seeds."""
    found: dict[tuple[str, int], list[dict[str, float]]] = {}
    for metrics_file in sorted(runs.glob(f"*-{dataset.lower()}-h*-s*/metrics.json")):
        stem = metrics_file.parent.name
        model, rest = stem.split(f"-{dataset.lower()}-h")
        horizon = int(rest.split("-s")[0])
        wall = metrics_file.parent / "wall_time.json"
        metrics = json.loads(metrics_file.read_text())
        metrics["seconds"] = json.loads(wall.read_text())["seconds"] if wall.is_file() else None
        found.setdefault((model, horizon), []).append(metrics)
    return found


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(found: dict[tuple[str, int], list[dict[str, float]]], dataset: str) -> str:
    """Markdown table: ours (mean ± std over seeds), published, target and verdict."""
    lines = ["| model | H | seeds | test MSE | test MAE | published MSE / MAE | "
             "target MSE | met | minutes per run (fastest, median) |",
             "|---|---|---|---|---|---|---|---|---|"]
    averages: dict[str, float] = {}
    for model in MODELS:
        means = {}
        for horizon in HORIZONS:
            rows = found.get((model, horizon))
            if not rows:
                continue
            mse = [r["test_mse"] for r in rows]
            mae = [r["test_mae"] for r in rows]
            means[horizon] = statistics.mean(mse)
            published = PUBLISHED.get(model, {}).get(horizon)
            target = published[0] * TOLERANCE if published else None
            pub = f"{published[0]:.3f} / {published[1]:.3f}" if published else "n/a"
            tgt = f"≤ {target:.3f}" if target else "(ours only)"
            met = "n/a" if target is None else ("yes" if means[horizon] <= target else "no")
            secs = [r["seconds"] for r in rows if r.get("seconds")]
            # The fastest seed is the recipe's cost; slower ones shared the CPU with other runs.
            minutes = f"{min(secs) / 60:.1f}, {statistics.median(secs) / 60:.1f}" if secs else "?"
            lines.append(f"| {model} | {horizon} | {len(rows)} | {_mean_std(mse)} | "
                         f"{_mean_std(mae)} | {pub} | {tgt} | {met} | {minutes} |")
        if len(means) == len(HORIZONS):
            averages[model] = statistics.mean(means.values())
            published = PUBLISHED.get(model, {}).get("avg")
            pub = f"{published[0]:.3f} / {published[1]:.3f}" if published else "n/a"
            lines.append(f"| {model} | avg | | {averages[model]:.3f} | | {pub} | | | |")
    summary = [f"Dataset {dataset}, lookback 96, multivariate, MSE/MAE on the scaled test set "
               "(every window), checkpoint chosen on validation MSE."]
    if averages:
        best = min(averages, key=averages.get)
        verdict = "met" if averages[best] <= BEST_AVERAGE_TARGET else "not met"
        summary.append(f"Best four-horizon average MSE: {best} {averages[best]:.3f} "
                       f"(target ≤ {BEST_AVERAGE_TARGET}: {verdict}).")
    else:
        summary.append("No model has all four horizons yet: no four-horizon average.")
    return "\n".join(lines) + "\n\n" + " ".join(summary) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help="recipes <model>-etth1 to run, comma-separated")
    parser.add_argument("--horizons", default=",".join(map(str, HORIZONS)))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--dataset", default="ETTh1", help="ETTh1, ETTh2, ETTm1 or ETTm2")
    parser.add_argument("--runs", default="runs/bench_ett", help="run directories go here")
    parser.add_argument("--output", default="benchmarks/results/ett.md",
                        help="markdown table to write")
    parser.add_argument("--table-only", action="store_true",
                        help="only rebuild the table from finished runs")
    parser.add_argument("overrides", nargs="*", help="extra recipe overrides (key=value)")
    args = parser.parse_args()
    runs = Path(args.runs)
    if not args.table_only:
        for model in args.models.split(","):
            for horizon in map(int, args.horizons.split(",")):
                for seed in map(int, args.seeds.split(",")):
                    metrics = run_one(model, args.dataset, horizon, seed, runs, args.overrides)
                    print(f"{model} H={horizon} seed={seed}: test_mse {metrics['test_mse']:.4f}"
                          f" test_mae {metrics['test_mae']:.4f}", flush=True)
    text = table(collect(runs, args.dataset), args.dataset)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
