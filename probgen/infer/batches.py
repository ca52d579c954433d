"""Training data for [`probgen.infer.fit.fit`][probgen.infer.fit.fit]: validation and minibatches.

[`as_tensors`][probgen.infer.batches.as_tensors] checks what a user passes as ``data`` (a tensor, a
tuple of tensors sharing their first dimension, or a ``torch`` Dataset);
[`BatchSampler`][probgen.infer.batches.BatchSampler] draws minibatches epoch after epoch from a
generator whose state goes into checkpoints, so that a resumed run sees the same batches.

Examples:
    >>> s = BatchSampler(as_tensors(torch.arange(6.0)), 2, seed=0, device=torch.device("cpu"))
    >>> [len(s.next()[0]) for _ in range(4)]
    [2, 2, 2, 2]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from probgen.errors import ProbgenError

__all__ = ["as_tensors", "BatchSampler", "num_examples", "take"]


def as_tensors(data: Any, name: str = "data") -> tuple[torch.Tensor, ...] | Any:
    """Validate training data: a tensor, a tuple of tensors, or a ``torch`` Dataset.

    Tensors must share their first dimension, be real or integer, and be finite.

    Examples:
        >>> [t.shape for t in as_tensors(torch.zeros(5, 2))]
        [torch.Size([5, 2])]
    """
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.Tensor):
        if len(data) == 0:  # type: ignore[arg-type]
            raise ProbgenError(f"{name}: the dataset is empty")
        return data
    items = data if isinstance(data, (tuple, list)) else (data,)
    if not items:
        raise ProbgenError(f"{name}: no tensors given")
    out = []
    for i, t in enumerate(items):
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(t)
        if not isinstance(t, torch.Tensor):
            raise ProbgenError(f"{name}[{i}]: expected a tensor, got {type(t).__name__}")
        if t.dim() == 0 or t.shape[0] == 0:
            raise ProbgenError(
                f"{name}[{i}]: needs a leading example dimension, shape {tuple(t.shape)}")
        if t.is_complex() or t.dtype == torch.bool:
            raise ProbgenError(f"{name}[{i}]: dtype {t.dtype} is not supported (real or integer)")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ProbgenError(f"{name}[{i}]: contains NaN or infinite values")
        out.append(t)
    if len({t.shape[0] for t in out}) != 1:
        raise ProbgenError(f"{name}: tensors disagree on the number of examples")
    return tuple(out)


def num_examples(data: Any) -> int:
    return data[0].shape[0] if isinstance(data, tuple) else len(data)


def take(data: Any, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
    if isinstance(data, tuple):
        if len(data) == 1 and data[0].device == device:
            return (data[0][idx],)
        return tuple(t[idx] if t.device == device else t[idx].to(device) for t in data)
    rows = [data[int(i)] for i in idx]
    rows = [r if isinstance(r, (tuple, list)) else (r,) for r in rows]
    return tuple(torch.stack([torch.as_tensor(r[j]) for r in rows]).to(device)
                 for j in range(len(rows[0])))


class BatchSampler:
    """Draws minibatches without replacement, one shuffled pass (epoch) after another.

    The last incomplete batch of an epoch is skipped. Its state (generator, order, position)
    is saved in checkpoints so that a resumed run sees the same batches.

    Examples:
        >>> s = BatchSampler((torch.arange(10),), 4, seed=0, device=torch.device("cpu"))
        >>> s.next()[0].shape
        torch.Size([4])
    """

    def __init__(self, data: Any, batch_size: int, seed: int, device: torch.device):
        self.data = data
        self.n = num_examples(data)
        self.batch_size = batch_size
        self.device = device
        self.gen = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(self.n, generator=self.gen)
        self.pos = 0

    def next(self) -> tuple[torch.Tensor, ...]:
        if self.pos + self.batch_size > self.n:
            self.order = torch.randperm(self.n, generator=self.gen)
            self.pos = 0
        idx = self.order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return take(self.data, idx, self.device)

    def state(self) -> tuple[dict[str, torch.Tensor], int]:
        return {"sampler_gen": self.gen.get_state(), "sampler_order": self.order}, self.pos

    def load(self, tensors: dict[str, torch.Tensor], pos: int) -> None:
        self.gen.set_state(tensors["sampler_gen"])
        self.order = tensors["sampler_order"]
        self.pos = int(pos)
