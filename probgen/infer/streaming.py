"""Batches read from disk while training: ``fit`` on data that does not fit in memory.

[`LoaderBatches`][probgen.infer.streaming.LoaderBatches] draws exactly the batches of
[`BatchSampler`][probgen.infer.batches.BatchSampler] (the same generator, epoch order and
checkpoint state, so a streamed run equals the in-memory run bit for bit and resumes the
same way) but reads their rows through a ``torch.utils.data.DataLoader`` with worker
processes that prefetch the next batches while the current one trains. Under torchrun each
rank reads only the rows of its own shard of the global batch (the rows
[`ShardedObjective`][probgen.infer.distributed.ShardedObjective] will keep; the others are
zero placeholders), so the ranks share the reading as they share the compute.

Why not ``torch.utils.data.DistributedSampler``: it deals each rank an interleaved slice of
a per-epoch permutation seeded by ``seed + epoch``; a batch then depends on the world size
and an epoch cannot be resumed in its middle. Here the global batch is the one a single
process draws, and its shards are contiguous blocks, the layout the objective and the noise
([`probgen.infer.shard_noise`][probgen.infer.shard_noise]) expect.

Examples:
    >>> import torch
    >>> from probgen.data.stream import ArrayRows
    >>> import tempfile, os, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "x.npy"); np.save(p, np.arange(20.0).reshape(10, 2))
    >>> b = make_batches(ArrayRows(p), 4, seed=0, device=torch.device("cpu"), workers=0)
    >>> b.next()[0].shape
    torch.Size([4, 2])
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from probgen.data.stream import StreamRows
from probgen.infer import distributed
from probgen.infer.batches import BatchSampler

__all__ = ["LoaderBatches", "make_batches"]


def make_batches(data: Any, batch_size: int, seed: int, device: torch.device,
                 workers: int | None = None) -> BatchSampler:
    """A [`LoaderBatches`][probgen.infer.streaming.LoaderBatches] for on-demand datasets
    ([`probgen.data.stream`][probgen.data.stream]), a plain
    [`BatchSampler`][probgen.infer.batches.BatchSampler] for everything else."""
    if isinstance(data, StreamRows):
        return LoaderBatches(data, batch_size, seed, device,
                             data.workers if workers is None else workers)
    return BatchSampler(data, batch_size, seed, device)


class _Batches:
    """The index lists of the coming batches, replayed from a copy of the sampler's state."""

    def __init__(self, gen: torch.Generator, order: torch.Tensor, pos: int, n: int,
                 batch_size: int) -> None:
        self.gen = torch.Generator()
        self.gen.set_state(gen.get_state())
        self.order, self.pos, self.n, self.batch_size = order.clone(), pos, n, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            if self.pos + self.batch_size > self.n:
                self.order = torch.randperm(self.n, generator=self.gen)
                self.pos = 0
            yield self.order[self.pos:self.pos + self.batch_size].tolist()
            self.pos += self.batch_size


class _RankRows(torch.utils.data.Dataset):
    """Reads, of each global batch, the rows of one rank's shard; zeros stand for the rest."""

    def __init__(self, data: Any, rank: int, world: int) -> None:
        self.data, self.rank, self.world = data, rank, world

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        return self.data[i]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        offset, size = distributed.shard_bounds(len(indices), self.world, self.rank)
        mine = self.data.__getitems__(indices[offset:offset + size]) \
            if hasattr(self.data, "__getitems__") else [self.data[i] for i in
                                                        indices[offset:offset + size]]
        blank = torch.zeros_like(mine[0])
        return [blank] * offset + list(mine) + [blank] * (len(indices) - offset - size)


def _stack(rows: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (torch.stack(rows),)


class LoaderBatches(BatchSampler):
    """[`BatchSampler`][probgen.infer.batches.BatchSampler]'s batches, read by a ``DataLoader``
    with ``workers`` processes (0: in this process); see the module docstring."""

    def __init__(self, data: Any, batch_size: int, seed: int, device: torch.device,
                 workers: int = 0) -> None:
        super().__init__(data, batch_size, seed, device)
        self.workers = int(workers)
        self._it: Iterator[tuple[torch.Tensor, ...]] | None = None

    def _loader(self) -> Iterator[tuple[torch.Tensor, ...]]:
        rows = _RankRows(self.data, distributed.rank(), distributed.world_size())
        loader = torch.utils.data.DataLoader(
            rows, batch_sampler=_Batches(self.gen, self.order, self.pos, self.n,
                                         self.batch_size),
            num_workers=self.workers, collate_fn=_stack,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.workers > 0,
            prefetch_factor=2 if self.workers > 0 else None)
        return iter(loader)

    def next(self) -> tuple[torch.Tensor, ...]:
        if self._it is None:
            self._it = self._loader()  # replays from the state before this batch
        if self.pos + self.batch_size > self.n:
            self.order = torch.randperm(self.n, generator=self.gen)
            self.pos = 0
        self.pos += self.batch_size
        return tuple(t.to(self.device, non_blocking=True) for t in next(self._it))

    def load(self, tensors: dict[str, torch.Tensor], pos: int) -> None:
        super().load(tensors, pos)
        self._it = None  # the loader restarts from the restored state
