"""Global batches that are the same samples whatever the number of processes.

Each epoch's order is drawn from a generator seeded by ``(seed, epoch)`` (or taken from the
task's ``batch_sampler(epoch)``), cut into global batches, and only then split into one
micro-batch per process and accumulation step. The data position of a run is therefore just
``(epoch, batch index)``, which is what checkpoints store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import default_collate

Batch = dict[str, torch.Tensor]


class GlobalBatches:
    """Index lists of the global batches of every epoch.

    Args:
        dataset_size: ``len(train_dataset)``.
        batch_size: samples per global batch (ignored with ``batch_sampler``).
        seed: seeds the per-epoch permutation.
        shuffle: permute each epoch (otherwise take samples in order).
        batch_sampler: ``batch_sampler(epoch) -> iterable of index lists`` forming the
            global batches itself (must be deterministic for a given epoch).
    """

    def __init__(self, dataset_size: int, batch_size: int, *, seed: int, shuffle: bool = True,
                 batch_sampler: Callable[[int], Iterable[list[int]]] | None = None) -> None:
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.batch_sampler = batch_sampler
        self._cache: tuple[int, list[list[int]]] | None = None
        if batch_sampler is None and dataset_size < batch_size:
            raise ValueError(f"the training set has {dataset_size} samples, fewer than "
                             f"trainer.batch_size={batch_size}")

    def epoch(self, epoch: int) -> list[list[int]]:
        """The global batches of ``epoch`` (the last incomplete batch is dropped)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        if self.batch_sampler is not None:
            batches = [list(map(int, b)) for b in self.batch_sampler(epoch)]
            batches = [b for b in batches if b]
            if not batches:
                raise ValueError(f"the task's batch_sampler gave no batches for epoch {epoch}")
        else:
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                order = torch.randperm(self.dataset_size, generator=generator).tolist()
            else:
                order = list(range(self.dataset_size))
            n = self.dataset_size // self.batch_size
            batches = [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(n)]
        self._cache = (epoch, batches)
        return batches

    def steps_per_epoch(self) -> int:
        return len(self.epoch(0))


def shard(batch: list[int], rank: int, world_size: int, grad_accum: int
          ) -> list[tuple[list[int], float]]:
    """This process's micro-batches of one global batch, with their share of the batch.

    Micro-batch ``m`` of rank ``r`` is the ``(m * world_size + r)``-th of ``world_size *
    grad_accum`` near-equal contiguous slices. Its weight is its fraction of the global batch,
    so the weighted sum of per-micro-batch mean losses over all processes is the global-batch
    mean. An empty slice (a tiny global batch) reuses the first sample with weight 0 so that
    every process still runs forward and backward.
    """
    parts = world_size * grad_accum
    total = len(batch)
    out = []
    for m in range(grad_accum):
        k = m * world_size + rank
        start, stop = (k * total) // parts, ((k + 1) * total) // parts
        if stop > start:
            out.append((batch[start:stop], (stop - start) / total))
        else:
            out.append((batch[:1], 0.0))
    return out


def check_divisible(batch_size: int, world_size: int, grad_accum: int) -> None:
    if batch_size % (world_size * grad_accum) != 0:
        raise ValueError(f"trainer.batch_size={batch_size} must be divisible by the number of "
                         f"processes ({world_size}) times trainer.grad_accum ({grad_accum})")


def fetch(dataset: Any, indices: list[int],
          collate_fn: Callable[[list[Any]], Batch] | None) -> Batch:
    """Collate ``dataset[i]`` for ``indices`` (using ``__getitems__`` where the dataset has it)."""
    getitems = getattr(dataset, "__getitems__", None)
    items = getitems(indices) if getitems is not None else [dataset[i] for i in indices]
    return (collate_fn or default_collate)(items)


class MicroBatchLoader:
    """Iterates ``(batch, weight)`` micro-batches from a data position onwards.

    With ``num_workers > 0`` a ``DataLoader`` with its own generator loads ahead (so the global
    RNG, which drives dropout, is never touched by data loading).
    """

    def __init__(self, dataset: Any, batches: GlobalBatches, *, rank: int, world_size: int,
                 grad_accum: int, collate_fn: Callable | None, num_workers: int = 0) -> None:
        self.dataset = dataset
        self.batches = batches
        self.rank, self.world_size, self.grad_accum = rank, world_size, grad_accum
        self.collate_fn = collate_fn
        self.num_workers = num_workers

    def iterate(self, epoch: int, index: int
                ) -> Iterator[tuple[int, int, list[tuple[Any, float]], int]]:
        """Yield ``(epoch, index, micro_batches, global_batch_size)`` for each global batch
        from the position ``(epoch, index)`` on, forever (epochs roll over)."""
        while True:
            global_batches = self.batches.epoch(epoch)[index:]
            plan = [shard(b, self.rank, self.world_size, self.grad_accum)
                    for b in global_batches]
            for offset, micro in enumerate(self._load(plan)):
                yield epoch, index + offset, micro, len(global_batches[offset])
            epoch, index = epoch + 1, 0

    def _load(self, plan: list[list[tuple[list[int], float]]]
              ) -> Iterator[list[tuple[Any, float]]]:
        if self.num_workers == 0:
            for micro in plan:
                yield [(fetch(self.dataset, idx, self.collate_fn), w) for idx, w in micro]
            return
        from torch.utils.data import DataLoader

        flat = [idx for micro in plan for idx, _ in micro]
        loader = DataLoader(self.dataset, batch_sampler=flat, collate_fn=self.collate_fn
                            or default_collate, num_workers=self.num_workers,
                            generator=torch.Generator().manual_seed(0),
                            persistent_workers=False)
        it = iter(loader)
        for micro in plan:
            yield [(next(it), w) for _, w in micro]
