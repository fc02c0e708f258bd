"""What a run shows while it trains: a tqdm bar with loss, learning rate and throughput on a
terminal, or a line every ~5% of the run otherwise; only the main process prints. Evaluation
shows a second bar that counts the model's calls (batches, decoding steps)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from torch import nn


@contextlib.contextmanager
def evaluation_bar(module: nn.Module, split: str, *, enabled: bool = True) -> Iterator[Any]:
    """While the block runs, a tqdm bar (on a terminal, when ``enabled``) that ticks at each
    forward call of ``module``: any task's evaluation shows that it moves and how fast,
    without the task counting its batches. Yields the bar, or ``None``."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(desc=f"eval {split}", unit=" calls", leave=False, dynamic_ncols=True,
               file=sys.stderr)
    handle = module.register_forward_hook(lambda *_: bar.update(1))
    try:
        yield bar
    finally:
        handle.remove()
        bar.close()


class Progress:
    """Progress display of one run.

    Args:
        total: steps of the run; ``initial``: steps already done (resuming).
        enabled: show progress at all (``trainer.progress``).
        is_main: only the main process prints.
        interval: without a terminal, print a training line about every this many steps
            (at the first logged step past each multiple, and at the end).
    """

    def __init__(self, *, total: int, initial: int, enabled: bool, is_main: bool,
                 interval: int) -> None:
        self.is_main = is_main
        self.enabled = enabled and is_main
        self.interval = max(interval, 1)
        self.total = total
        self.next_line = initial + self.interval
        self.bar: Any = None
        if self.enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True,
                            file=sys.stderr)

    def evaluating(self, module: nn.Module, split: str) -> contextlib.AbstractContextManager:
        """``evaluation_bar`` for this run (also after ``close``: final evaluations)."""
        return evaluation_bar(module, split, enabled=self.enabled)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def train(self, step: int, loss: float, lr: float, rate: float, unit: str) -> None:
        """Show a logged training window (``unit``: ``tokens/s`` or ``samples/s``)."""
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", **{unit: f"{rate:.0f}"})
        elif self.enabled and (step >= self.next_line or step == self.total):
            self.print(f"step {step}/{self.total} loss {loss:.4f} lr {lr:.2e} {rate:.0f} {unit}")
            self.next_line = (step // self.interval + 1) * self.interval

    def print(self, message: str) -> None:
        if not self.is_main:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
