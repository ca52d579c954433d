"""Data-parallel training: [`fit`][probgen.infer.fit.fit] under ``torchrun``.

Launched as ``torchrun --standalone --nproc_per_node N -m probgen train ...`` (or any script
calling ``fit``), each process finds ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` in its
environment; [`setup`][probgen.infer.distributed.setup] joins PyTorch's process group (gloo
on CPU, NCCL on CUDA, each rank on ``cuda:LOCAL_RANK``). Without those variables everything
here is a no-op and ``fit`` runs as one process, unchanged.

What a step does on ``W`` ranks:

1. every rank draws the same *global* batch (same generator, same order: the state a single
   process has), and [`ShardedObjective`][probgen.infer.distributed.ShardedObjective] keeps
   rank ``r``'s contiguous block of rows (``torch.tensor_split`` sizes: equal shards when
   ``W`` divides the batch);
2. the local loss is computed with the noise of those rows
   ([`probgen.infer.shard_noise`][probgen.infer.shard_noise]: example ``i`` sees the same
   random numbers on whichever rank holds it), weighted so that the ranks' losses *add up* to
   the loss of the global batch (weight 1 for ``reduction="sum"``, the objective's batch sum;
   ``size / B`` for ``"mean"``, a loss normalised by the examples it sees); the loss value
   every rank reports is that global sum (one all-reduce), so logging, the NaN check,
   validation and early stopping agree on every rank;
3. after ``backward``, [`sync_gradients`][probgen.infer.distributed.sync_gradients] sums
   the gradients of every trainable tensor over the ranks in one flat all-reduce: the
   gradient of the global loss, i.e. what one process computes for the same global batch
   (up to the order of floating-point additions);
4. every rank takes the same optimizer step, so parameters stay equal without broadcasts.

Why not ``DistributedDataParallel``? DDP wraps one ``nn.Module`` and prepares its gradient
buckets in that module's ``forward``; Pyro programs are functions and methods (``vae.model``,
``vae.guide``) that never call the wrapper's ``forward``, their parameters may live in Pyro's
global param store (``pyro.param``, ``pyro.module``) outside any module, and objectives own
further modules stepped by their own optimizers. One explicit all-reduce over the tensors
``fit`` already collects covers all three with the arithmetic DDP does (a sum of the ranks'
gradients; DDP averages because its per-rank losses are means, which is our weighting of
``"mean"``). What it gives up is DDP's overlap of communication with the backward pass, which
``benchmarks/scaling.py`` measures.

Objectives that own modules and optimizers (a GAN's discriminator) are handled through their
protocol hooks only: their ``before_step`` runs on the shard like the loss, and a step
pre-hook on each optimizer of ``optimizers()`` sums its gradients over the ranks before it
steps (weighted by the objective's ``reduction`` attribute, default the main one). Numbers
``before_step`` returns are averaged over the ranks, weighted by their shard sizes.

Rank 0 alone writes (run folder, TensorBoard, samples); every rank reads a checkpoint when
resuming. Because the batch order, the generator state and the parameters are those of one
process, a checkpoint resumes under any world size. Requirements (as for DDP): the global
batch holds at least ``W`` examples, and every rank gives gradients to the same tensors.

Examples:
    >>> world_size(), rank(), is_main()  # one process: no process group
    (1, 0, True)
    >>> shard_bounds(10, world=4, rank=1)  # rows 3..5 of a global batch of 10
    (3, 3)
"""

from __future__ import annotations

import atexit
import os
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist

from probgen.errors import ProbgenError
from probgen.infer.objectives import Objective
from probgen.infer.shard_noise import ShardNoise, rank_streams

__all__ = ["setup", "finish", "world_size", "rank", "env_rank", "local_rank", "is_main", "barrier",
           "device_for_rank", "shard_bounds", "ShardedObjective", "wrap_objective",
           "sync_gradients", "broadcast_tensors", "all_sum", "REDUCTIONS"]

#: how an objective's loss scales with the examples it sees
REDUCTIONS = ("sum", "mean")
_ENV = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def world_size() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; 0 without a group)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if world_size() > 1 else 0


def is_main() -> bool:
    """Whether this process writes files (rank 0)."""
    return rank() == 0


def env_rank() -> int:
    """The ``RANK`` torchrun gives this process (0 without one), known before
    [`setup`][probgen.infer.distributed.setup]."""
    text = os.environ.get("RANK", "0") if _env_world() > 1 else "0"
    try:
        return int(text)
    except ValueError:
        raise ProbgenError(f"RANK: expected an integer, got {text!r}") from None


def barrier() -> None:
    """Wait for every rank (nothing without a group)."""
    if world_size() > 1:
        dist.barrier()


def _env_world() -> int:
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        value = int(text)
    except ValueError:
        raise ProbgenError(f"WORLD_SIZE: expected an integer, got {text!r}") from None
    if value < 1:
        raise ProbgenError(f"WORLD_SIZE: must be >= 1, got {value}")
    return value


def device_for_rank(device: str | torch.device) -> torch.device:
    """``device``, with a bare ``cuda`` turned into ``cuda:LOCAL_RANK`` under torchrun.

    Examples:
        >>> device_for_rank("cpu")
        device(type='cpu')
    """
    device = torch.device(device)
    if device.type != "cuda" or _env_world() == 1:
        return device
    if not torch.cuda.is_available():
        raise ProbgenError(f"device: {str(device)!r} requested but this machine has no CUDA")
    if device.index is None:
        index = int(os.environ.get("LOCAL_RANK", "0"))
        if index >= torch.cuda.device_count():
            raise ProbgenError(f"device: LOCAL_RANK {index} but only {torch.cuda.device_count()}"
                               " CUDA device(s); start at most that many processes per machine")
        device = torch.device("cuda", index)
    return device


def setup(device: str | torch.device = "cpu") -> torch.device:
    """Join the process group torchrun describes; return this rank's device.

    Idempotent; without ``WORLD_SIZE > 1`` in the environment nothing happens. The backend
    is NCCL for CUDA devices and gloo otherwise.
    """
    device = device_for_rank(device)
    world = _env_world()
    if world == 1 or (dist.is_available() and dist.is_initialized()):
        return device
    if not dist.is_available():
        raise ProbgenError("WORLD_SIZE: this torch build has no torch.distributed")
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise ProbgenError(f"WORLD_SIZE is {world} but {', '.join(missing)} are not set; "
                           "launch with torchrun (torchrun --standalone --nproc_per_node N ...)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        raise ProbgenError(f"device: {device} needs NCCL, which this torch build lacks")
    if backend == "gloo" and not dist.is_gloo_available():
        raise ProbgenError("device: cpu training on several processes needs gloo, which this "
                           "torch build lacks")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend, device_id=device)
    else:
        dist.init_process_group(backend)
    atexit.register(_teardown)
    return device


def finish() -> None:
    """Leave the process group together: wait for every rank, then destroy the group.

    Called at the end of [`train`][probgen.models.family.train] and by the CLI, so that no
    rank tears its connections down while another (rank 0 evaluating and writing the run
    folder) still holds them; a rank that exits alone from a gloo group can abort in the
    C++ teardown ("terminate called without an active exception"). Nothing without a group;
    calling it twice is harmless. An ``atexit`` hook destroys a group left open.
    """
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def _teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(total: int, world: int, rank: int) -> tuple[int, int]:
    """``(offset, size)`` of ``rank``'s rows in a global batch of ``total`` (the sizes of
    ``torch.tensor_split``: the first ``total % world`` ranks hold one more)."""
    base, extra = divmod(int(total), int(world))
    return rank * base + min(rank, extra), base + (1 if rank < extra else 0)


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over the ranks (``value`` itself without a group)."""
    if world_size() == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out


def _flat_groups(tensors: Iterable[torch.Tensor]) -> dict[tuple, list[torch.Tensor]]:
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return groups


def sync_gradients(params: Iterable[torch.Tensor]) -> None:
    """Sum the gradients of ``params`` over the ranks, in one flat all-reduce per device and
    dtype (nothing without a group). Tensors without a gradient are left without one."""
    if world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    for group in _flat_groups(grads).values():
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat)
        start = 0
        for g in group:
            g.copy_(flat[start:start + g.numel()].view_as(g))
            start += g.numel()


def broadcast_tensors(tensors: Iterable[torch.Tensor]) -> None:
    """Copy rank 0's values of ``tensors`` to every rank (parameters, buffers)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for group in _flat_groups(tensors).values():
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            dist.broadcast(flat, src=0)
            start = 0
            for t in group:
                t.copy_(flat[start:start + t.numel()].view_as(t))
                start += t.numel()


_SYNCED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _check_reduction(reduction: str, name: str) -> str:
    if reduction not in REDUCTIONS:
        raise ProbgenError(f"{name}: {reduction!r} is not one of {', '.join(REDUCTIONS)}")
    return reduction


class ShardedObjective:
    """An objective run on this rank's shard of each global batch (see the module docstring).

    ``loss`` and ``before_step`` receive the global batch, compute on this rank's rows and
    return what the global batch gives; every other attribute is the wrapped objective's.
    """

    def __init__(self, objective: Any, device: torch.device, reduction: str = "sum") -> None:
        self.objective = objective
        self.device = torch.device(device)
        self.reduction = _check_reduction(reduction, "reduction")
        own = getattr(objective, "reduction", reduction)
        self._own_reduction = _check_reduction(own, "objective.reduction")
        self._weight = 1.0
        for opt in (getattr(objective, "optimizers", dict)() or {}).values():
            if opt not in _SYNCED:
                opt.register_step_pre_hook(_sync_before_step)
            _SYNCED[opt] = self

    def __getattr__(self, name: str) -> Any:
        return getattr(self.objective, name)

    def _run(self, fn: Callable, model: Callable, guide: Callable | None,
             batch: tuple) -> tuple[Any, int, int]:
        total = len(batch[0])
        offset, size = shard_bounds(total, world_size(), rank())
        if size == 0:
            return None, 0, total
        local = tuple(t.narrow(0, offset, size) for t in batch)
        with rank_streams(self.device, rank()), ShardNoise(offset, size, total, self.device):
            return fn(model, guide, *local), size, total

    def loss(self, model: Callable, guide: Callable | None, *batch: torch.Tensor
             ) -> torch.Tensor:
        value, size, total = self._run(self.objective.loss, model, guide, batch)
        if value is None:
            if torch.is_grad_enabled():
                raise ProbgenError(f"batch_size: {total} examples cannot be shared by "
                                   f"{world_size()} processes (at least one each)")
            value = torch.zeros((), device=self.device)
        if self.reduction == "mean":
            value = value * (size / total)
        reduced = all_sum(value)
        if not torch.is_grad_enabled():
            return reduced
        return value + (reduced - value).detach()  # the global value, this shard's gradient

    def before_step(self, model: Callable, guide: Callable | None, *batch: torch.Tensor
                    ) -> dict[str, float]:
        hook = getattr(self.objective, "before_step", None)
        if hook is None or (isinstance(self.objective, Objective)
                            and type(self.objective).before_step is Objective.before_step):
            return {}
        total = len(batch[0])
        _, size = shard_bounds(total, world_size(), rank())
        self._weight = 1.0 if self._own_reduction == "sum" else size / total
        logs, size, total = self._run(hook, model, guide, batch)
        logs = dict(logs or {})
        keys = sorted(logs)
        if not keys or world_size() == 1:
            return logs
        # every rank returns the same keys (the same code runs on each)
        vec = torch.tensor([float(logs[k]) * size / total for k in keys], dtype=torch.float64,
                           device=self.device)  # NCCL reduces device tensors only
        dist.all_reduce(vec)
        return dict(zip(keys, vec.tolist()))


def _sync_before_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Step pre-hook of an objective's own optimizer: its gradients summed over the ranks."""
    owner = _SYNCED.get(optimizer)
    if owner is None or world_size() == 1:
        return
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if owner._weight != 1.0:
        for p in params:
            p.grad.mul_(owner._weight)
    sync_gradients(params)


def wrap_objective(objective: Any, device: torch.device, reduction: str = "sum") -> Any:
    """``objective`` itself on one process, a
    [`ShardedObjective`][probgen.infer.distributed.ShardedObjective] under torchrun.

    Examples:
        >>> from probgen.infer.objectives import ELBO
        >>> obj = ELBO()
        >>> wrap_objective(obj, torch.device("cpu")) is obj
        True
    """
    _check_reduction(reduction, "reduction")
    if world_size() == 1:
        return objective
    return ShardedObjective(objective, device, reduction)
