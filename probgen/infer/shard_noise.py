"""Random numbers that belong to examples, not to processes: the noise of data-parallel runs.

When [`fit`][probgen.infer.fit.fit] runs on several processes, each rank computes the loss on
its shard (a contiguous block of rows) of the global batch. For the run to follow the same
trajectory as one process with the same global batch, and to resume under any world size,
example ``i`` of the global batch must see the same random numbers whichever rank holds it.
[`ShardNoise`][probgen.infer.shard_noise.ShardNoise] achieves that for Pyro sample sites:

- every rank keeps torch's generator in lockstep (same seed, same draws: the state a single
  process would have);
- a latent site inside the data plate is drawn for the *whole* global batch from that shared
  state (its distribution padded along the plate with this rank's own rows, so every draw is
  valid) and only this rank's rows are kept: for samplers that use a fixed amount of noise
  per element (``rsample`` of normals and other location-scale families, Bernoulli,
  categorical) those rows are exactly what one process draws for them;
- a site outside the data plate (a global latent) is drawn from the shared state as is, so
  it takes the same value on every rank;
- anything else a program draws directly (``torch.randn`` in a network, dropout, a diffusion
  time step) comes from a per-rank stream seeded from the shared state and the rank, so the
  shards get independent noise; the shared state then advances by one draw so that the next
  call gets fresh numbers. Such direct draws make a run depend on the world size (as in any
  data-parallel trainer), but each run stays exactly resumable at its own world size.

The cost is the noise of ``W`` shards per site on each rank, small next to the networks.

Examples:
    >>> import pyro, pyro.distributions as dist
    >>> def guide(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         return pyro.sample("z", dist.Normal(x, 1.0))
    >>> _ = torch.manual_seed(0); full = guide(torch.zeros(4))
    >>> _ = torch.manual_seed(0)
    >>> with rank_streams(torch.device("cpu"), rank=1):
    ...     with ShardNoise(offset=2, size=2, total=4, device=torch.device("cpu")):
    ...         part = guide(torch.zeros(2))
    >>> torch.equal(part, full[2:])
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from pyro.distributions import Independent
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

from probgen.errors import ProbgenError

__all__ = ["ShardNoise", "rank_streams", "pad_distribution"]


def _generator(device: torch.device) -> torch.Generator:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.default_generators[index]
    return torch.default_generator


class _Streams:
    """The shared generator state and this rank's own stream, swapped on one generator."""

    def __init__(self, device: torch.device, rank: int) -> None:
        self.gen = _generator(device)
        self.rank = rank
        self.shared = self.gen.get_state()
        digest = hashlib.blake2b(self.shared.numpy().tobytes() + rank.to_bytes(4, "little"),
                                 digest_size=8).digest()
        self.gen.manual_seed(int.from_bytes(digest, "little") >> 1)
        self.own_start = self.gen.get_state()

    @contextlib.contextmanager
    def shared_state(self) -> Iterator[None]:
        own = self.gen.get_state()
        self.gen.set_state(self.shared)
        try:
            yield
        finally:
            self.shared = self.gen.get_state()
            self.gen.set_state(own)

    def close(self) -> None:
        used_own = not torch.equal(self.gen.get_state(), self.own_start)
        self.gen.set_state(self.shared)
        if used_own:  # fresh per-rank numbers for the next call
            torch.empty(1, device=self.gen.device).random_(generator=self.gen)


_ACTIVE: list[_Streams] = []


@contextlib.contextmanager
def rank_streams(device: torch.device, rank: int) -> Iterator[None]:
    """Run a block with this rank's own stream as torch's generator (direct draws), the shared
    state kept aside for [`ShardNoise`][probgen.infer.shard_noise.ShardNoise]; on exit the
    generator holds the shared state again (see the module docstring)."""
    streams = _Streams(device, rank)
    _ACTIVE.append(streams)
    try:
        yield
    finally:
        _ACTIVE.pop()
        streams.close()


def _index_param(p: torch.Tensor, pos: int, size: int, index: torch.Tensor) -> torch.Tensor:
    if p.dim() > pos and p.shape[pos] == size:
        return p.index_select(pos, index.to(p.device))
    return p


def pad_distribution(fn: Any, dim: int, index: torch.Tensor) -> Any | None:
    """``fn`` with batch dimension ``dim`` (negative) re-indexed by ``index`` (rows of ``fn``),
    or ``None`` when the distribution's parameters cannot be found.

    Examples:
        >>> import pyro.distributions as dist
        >>> d = dist.Normal(torch.tensor([0.0, 1.0]), 1.0).to_event(0)
        >>> pad_distribution(d, -1, torch.tensor([0, 1, 1, 0])).mean.tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    size = fn.batch_shape[dim]
    if isinstance(fn, Independent):
        base = pad_distribution(fn.base_dist, dim - fn.reinterpreted_batch_ndims, index)
        return None if base is None else Independent(base, fn.reinterpreted_batch_ndims)
    if isinstance(fn, MaskedDistribution):
        base = pad_distribution(fn.base_dist, dim, index)
        if base is None:
            return None
        mask = fn._mask
        if isinstance(mask, torch.Tensor) and mask.dim() >= -dim:
            mask = mask.expand(fn.batch_shape)
            mask = _index_param(mask, len(fn.batch_shape) + dim, size, index)
        return MaskedDistribution(base, mask)
    arg_names = [k for k in getattr(fn, "arg_constraints", {}) if k in vars(fn)]
    if "probs" in arg_names and "logits" in arg_names:
        arg_names.remove("probs")
    if not arg_names:
        return None
    pos = len(fn.batch_shape) + dim
    kwargs = {k: _index_param(vars(fn)[k], pos, size, index) for k in arg_names}
    try:
        out = type(fn)(**kwargs, validate_args=False)
    except (TypeError, ValueError, RuntimeError):
        return None
    expected = fn.batch_shape[:pos] + (len(index),) + fn.batch_shape[pos + 1:]
    return out if out.batch_shape == expected and out.event_shape == fn.event_shape else None


class ShardNoise(Messenger):
    """Draw latent sites of the data plate for the global batch and keep this rank's rows.

    ``offset`` and ``size`` are this rank's rows within a global batch of ``total``; the data
    plate is the plate whose size is ``size``. Used inside
    [`rank_streams`][probgen.infer.shard_noise.rank_streams]; outside it, draws use torch's
    generator as it stands.
    """

    def __init__(self, offset: int, size: int, total: int, device: torch.device) -> None:
        super().__init__()
        self.offset, self.size, self.total = int(offset), int(size), int(total)
        rows = torch.arange(self.total) - self.offset
        self.index = rows.clamp(0, max(self.size - 1, 0))
        self._warned: set[str] = set()

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or msg["value"] is not None or msg["done"]:
            return
        fn = msg["fn"]
        if type(fn) is _Subsample or msg["infer"].get("enumerate"):
            return
        frames = {f.name: f for f in msg["cond_indep_stack"]
                  if f.vectorized and f.dim is not None and f.size == self.size}
        if not frames:  # a global site: the shared state gives every rank the same value
            if _ACTIVE:
                with _ACTIVE[-1].shared_state():
                    msg["value"] = self._draw(fn, msg)
            return
        if len(frames) > 1:
            raise ProbgenError(
                f"site {msg['name']!r}: plates {sorted(frames)} all have this rank's batch size "
                f"{self.size}; the data plate is ambiguous under data-parallel training "
                "(choose a batch size that differs from the other plate sizes)")
        frame = next(iter(frames.values()))
        padded = pad_distribution(fn, frame.dim, self.index) if self.total != self.size else fn
        if padded is None:
            if msg["name"] not in self._warned:
                self._warned.add(msg["name"])
                warnings.warn(f"site {msg['name']!r}: cannot draw the noise of a "
                              f"{type(fn).__name__} for the global batch; each rank draws its "
                              "own, so this run depends on the world size", stacklevel=2)
            return
        if _ACTIVE:
            with _ACTIVE[-1].shared_state():
                value = self._draw(padded, msg)
        else:
            value = self._draw(padded, msg)
        if padded is not fn:
            value = value.narrow(frame.dim - len(fn.event_shape), self.offset, self.size)
        msg["value"] = value

    @staticmethod
    def _draw(fn: Any, msg: dict) -> torch.Tensor:
        shape = msg["kwargs"].get("sample_shape", torch.Size())
        return fn.rsample(shape) if fn.has_rsample else fn.sample(shape)
