"""Does masked-autoencoder pre-training help the activity model on a small label budget?

Pre-trains ``har-mae`` once on the UCI HAR training windows (labels unused), then fine-tunes
``har-uci`` on each label budget (a class-stratified share of the training windows, the same
windows for both starts of one seed) from scratch and from the pre-trained encoder, three
seeds each, with one shortened schedule for every run so the comparison is like for like.
Finished runs keep their ``metrics.json`` and are skipped, an interrupted one resumes from its
last checkpoint, so a killed study goes on where it stopped.
Prints (and writes ``RESULTS.md`` in the output folder) a markdown table of the official test
subjects' window accuracy and macro F1, mean +- std over seeds. Run it alone on the machine:

    python benchmarks/har_mae_label_budgets.py --output-dir runs/har-mae-study
        [--fractions 0.05 1.0] [--seeds 0 1 2] [--fine-tune-steps 1500]
        [--pretrain-steps 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import formerkit

METRICS = ("test_accuracy", "test_macro_f1", "test_step_accuracy")


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def train_once(recipe: str, output_dir: Path, overrides: list[str]) -> dict[str, float]:
    """Train unless ``output_dir`` already holds a finished run; the run's final metrics."""
    done = output_dir / "metrics.json"
    if not done.is_file():
        start = time.perf_counter()
        formerkit.train(recipe, output_dir=output_dir, overrides=overrides)  # resumes
        seconds = time.perf_counter() - start
        (output_dir / "wall_seconds.txt").write_text(f"{seconds:.1f}\n")
        print(f"{output_dir.name}: {seconds:.0f} s", flush=True)
    return json.loads(done.read_text())


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} +- {100 * spread:.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("runs/har-mae-study"))
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fine-tune-steps", type=int, default=1500)
    parser.add_argument("--pretrain-steps", type=int, default=3000)
    args = parser.parse_args()
    print(f"load average before: {load_average()}", flush=True)
    started = time.perf_counter()
    pretrained = args.output_dir / "pretrain"
    pre = train_once("har-mae", pretrained, [f"trainer.max_steps={args.pretrain_steps}",
                                             "trainer.progress=false"])
    print(f"pre-training: test reconstruction loss {pre['test_loss']:.4f}", flush=True)

    rows = []
    for fraction in args.fractions:
        for start_from in ("scratch", "har-mae"):
            results = []
            for seed in args.seeds:
                overrides = [f"trainer.max_steps={args.fine_tune_steps}",
                             f"trainer.seed={seed}", f"data.label_fraction={fraction}",
                             f"data.label_seed={seed}", "trainer.eval_every=0",
                             "trainer.progress=false"]
                if start_from == "har-mae":
                    overrides.append(f"task.init_from={pretrained}")
                name = f"labels{fraction:g}-{start_from}-seed{seed}"
                results.append(train_once("har-uci", args.output_dir / name, overrides))
            rows.append((fraction, start_from, results))

    lines = [f"| labels | start | {' | '.join(METRICS)} |",
             "| --- | --- |" + " --- |" * len(METRICS)]
    for fraction, start_from, results in rows:
        cells = [summary([result[key] for result in results]) for key in METRICS]
        lines.append(f"| {100 * fraction:g}% | {start_from} | {' | '.join(cells)} |")
    table = "\n".join(lines)
    footer = (f"\n\n{len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}), "
              f"{args.fine_tune_steps} fine-tuning steps, {args.pretrain_steps} pre-training "
              f"steps; this invocation's wall clock {time.perf_counter() - started:.0f} s; "
              f"load average after: {load_average()}\n")
    (args.output_dir / "RESULTS.md").write_text(table + footer)
    print(table + footer)


if __name__ == "__main__":
    main()
