"""Test log-likelihood, labelled by how it was obtained: exact, importance-sampled, or ELBO.

Every estimator returns a [`LogLikelihood`][probgen.infer.likelihood.LogLikelihood]: the *negative*
log-likelihood in nats per example (``nll``), its standard error over examples, bits per dimension
(``nll / (D ln 2)``, D = values per example), and ``kind``:

- ``"exact"``: ``-log p(x)`` of a fully observed model (no guide);
- ``"importance"``: ``-log (1/K) sum_k p(x, z_k) / q(z_k | x)``, ``z_k ~ q`` (K samples);
  an upper bound on the NLL that tightens as K grows (Burda et al. 2016);
- ``"elbo"``: ``-E_q[log p(x, z) - log q(z | x)]``, the loosest upper bound.

The K guide samples are drawn in chunks, not one by one: each chunk of ``k`` samples is one
guide call and one model call on the batch repeated ``k`` times (rows ``j * B + i`` hold
example ``i``, sample ``j``), so the K log-weights of a batch cost ``K / k`` program runs
instead of K. Every site is inside the data plate (required anyway for per-example terms), so
the rows are independent and the result is, draw for draw, the loop's. ``chunk_size``
bounds the rows of one call (default: about `CHUNK_ROWS`); ``chunk_size=1`` is the loop.

Per-example terms need every model/guide site inside the data plate (``plate=``, found
automatically when one plate has the batch's size). For discrete data (e.g. 17-level
digits) these are true probabilities; for continuous data they are densities (no
dequantisation correction is applied).

Examples:
    >>> import pyro, pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("x", dist.Bernoulli(0.5).expand([4]).to_event(1), obs=x)
    >>> ll = exact_nll(model, torch.ones(10, 4))
    >>> ll.kind, round(ll.bits_per_dim, 6)
    ('exact', 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from probgen.errors import ProbgenError
from probgen.infer.objectives import per_example_log_weights
from probgen.infer.sites import find_data_plate, run_guide, run_model

__all__ = ["LogLikelihood", "CHUNK_ROWS", "exact_nll", "importance_nll", "elbo_nll",
           "evaluate_nll", "chunked_log_weights"]

#: Default rows (examples x guide samples) of one batched guide/model call.
CHUNK_ROWS = 4096


@dataclass(frozen=True)
class LogLikelihood:
    """A labelled NLL estimate (nats per example) with bits/dim and a standard error."""

    kind: str
    nll: float
    stderr: float
    bits_per_dim: float
    num_examples: int
    dims: int
    num_samples: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batches(data: Any, batch_size: int) -> tuple[list[tuple[torch.Tensor, ...]], int, int]:
    items = data if isinstance(data, (tuple, list)) else (data,)
    if not items or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in items):
        raise ProbgenError("data must be a tensor or a tuple of tensors with an example dimension")
    n = items[0].shape[0]
    if n == 0 or any(t.shape[0] != n for t in items):
        raise ProbgenError("data: tensors must be non-empty and agree on the number of examples")
    if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in items):
        raise ProbgenError("data contains NaN or infinite values")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ProbgenError(f"batch_size must be a positive integer, got {batch_size!r}")
    dims = items[0][0].numel()
    return [tuple(t[i : i + batch_size] for t in items) for i in range(0, n, batch_size)], n, dims


def _summarise(kind: str, per_example: torch.Tensor, dims: int, k: int) -> LogLikelihood:
    nll = -per_example.double()
    n = nll.numel()
    stderr = float(nll.std() / math.sqrt(n)) if n > 1 else float("nan")
    mean = float(nll.mean())
    return LogLikelihood(kind, mean, stderr, mean / (dims * math.log(2)), n, dims, k)


@torch.no_grad()
def exact_nll(model: Callable, data: Any, batch_size: int = 512,
              plate: str | None = None) -> LogLikelihood:
    """Exact NLL of a fully observed model (autoregressive, flow, Bayesian network)."""
    batches, _, dims = _batches(data, batch_size)
    rows = [per_example_log_weights(model, None, b, 1, plate)[0] for b in batches]
    return _summarise("exact", torch.cat(rows), dims, 0)


@torch.no_grad()
def importance_nll(model: Callable, guide: Callable, data: Any, num_samples: int = 100,
                   batch_size: int = 128, plate: str | None = None, seed: int = 0,
                   chunk_size: int | None = None) -> LogLikelihood:
    """Importance-sampled NLL with ``num_samples`` guide samples per example (an upper bound).

    ``chunk_size`` guide samples are drawn per batched call (default: enough to fill about
    `CHUNK_ROWS` rows; see the module docs).

    Examples:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):  # z ~ N(0, 1), x ~ N(z, 1)  =>  x ~ N(0, 2)
        ...     with pyro.plate("data", x.shape[0]):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):  # the exact posterior N(x/2, 1/2)
        ...     with pyro.plate("data", x.shape[0]):
        ...         pyro.sample("z", dist.Normal(x / 2, 0.5**0.5))
        >>> x = torch.tensor([0.0, 1.0])
        >>> exact = -dist.Normal(0.0, 2**0.5).log_prob(x).mean()
        >>> abs(importance_nll(model, guide, x, 5).nll - float(exact)) < 1e-5
        True
    """
    def reduce(logw: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(logw, 0) - math.log(num_samples)

    rows, dims = _per_example(model, guide, data, num_samples, batch_size, plate, seed, reduce,
                              chunk_size)
    return _summarise("importance", rows, dims, num_samples)


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ProbgenError(f"{name} must be a positive integer, got {value!r}")


def chunked_log_weights(model: Callable, guide: Callable, batch: tuple[torch.Tensor, ...],
                        num_samples: int, plate: str | None = None,
                        chunk_size: int | None = None) -> torch.Tensor:
    """``log p(x_i, z_ik) - log q(z_ik | x_i)``, shape ``(num_samples, B)``, drawn in chunks.

    Each chunk of ``k`` samples runs the guide once and the model once on the batch repeated
    ``k`` times (see the module docs); ``chunk_size=1`` is one run per sample, as
    [`per_example_log_weights`][probgen.infer.sites.per_example_log_weights] does.

    Examples:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         pyro.sample("z", dist.Normal(x / 2, 1.0))
        >>> chunked_log_weights(model, guide, (torch.zeros(3),), 10, chunk_size=4).shape
        torch.Size([10, 3])
    """
    _positive("num_samples", num_samples)
    if not batch:
        raise ProbgenError("batch: needs at least one data tensor")
    n = len(batch[0])
    if chunk_size is None:
        chunk_size = max(1, CHUNK_ROWS // n)
    _positive("chunk_size", chunk_size)
    plate = plate or find_data_plate(model, guide, batch)
    out = []
    for start in range(0, num_samples, chunk_size):
        k = min(chunk_size, num_samples - start)
        rep = batch if k == 1 else tuple(t.repeat(k, *[1] * (t.dim() - 1)) for t in batch)
        g = run_guide(guide, rep, plate, False)
        m = run_model(model, rep, g.values, plate, False)
        logw = torch.as_tensor(m.latent_log_prob + m.observed_log_prob - g.latent_log_prob)
        if logw.shape != (k * n,):
            raise ProbgenError(
                f"plate {plate!r}: a run on {k * n} rows ({k} guide samples x {n} examples) "
                f"gave log-weights of shape {tuple(logw.shape)}; the data plate must take its "
                "size from the data (or pass chunk_size=1)"
            )
        out.append(logw.reshape(k, n))
    return torch.cat(out)


def _per_example(model: Callable, guide: Callable, data: Any, num_samples: int,
                 batch_size: int, plate: str | None, seed: int,
                 reduce: Callable[[torch.Tensor], torch.Tensor],
                 chunk_size: int | None = None) -> tuple[torch.Tensor, int]:
    """``reduce`` over the K log-weights of every example, batch by batch, under ``seed``
    without touching the global RNG; returns the per-example values and the data's dims."""
    _positive("num_samples", num_samples)
    if chunk_size is not None:
        _positive("chunk_size", chunk_size)
    batches, _, dims = _batches(data, batch_size)
    rows = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for b in batches:
            rows.append(reduce(chunked_log_weights(model, guide, b, num_samples, plate,
                                                   chunk_size)))
    return torch.cat(rows), dims


@torch.no_grad()
def elbo_nll(model: Callable, guide: Callable, data: Any, num_samples: int = 1,
             batch_size: int = 128, plate: str | None = None, seed: int = 0,
             chunk_size: int | None = None) -> LogLikelihood:
    """Negative ELBO per example, averaged over ``num_samples`` guide samples (drawn in
    chunks, as [`importance_nll`][probgen.infer.likelihood.importance_nll] does)."""
    rows, dims = _per_example(model, guide, data, num_samples, batch_size, plate, seed,
                              lambda logw: logw.mean(0), chunk_size)
    return _summarise("elbo", rows, dims, num_samples)


def evaluate_nll(model: Callable, guide: Callable | None, data: Any, kind: str = "auto",
                 num_samples: int = 100, **kwargs: Any) -> LogLikelihood:
    """Dispatch by ``kind``: ``"auto"`` is exact without a guide, importance-sampled with one.

    Examples:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)
        >>> evaluate_nll(model, None, torch.zeros(3)).kind
        'exact'
    """
    if kind == "auto":
        kind = "exact" if guide is None else "importance"
    if kind == "exact":
        if guide is not None:
            raise ProbgenError("guide: the exact likelihood takes no guide")
        return exact_nll(model, data, **kwargs)
    if guide is None:
        raise ProbgenError(f"guide: kind={kind!r} needs a guide")
    if kind == "importance":
        return importance_nll(model, guide, data, num_samples, **kwargs)
    if kind == "elbo":
        return elbo_nll(model, guide, data, **kwargs)
    raise ProbgenError(f"kind: unknown {kind!r}; choose 'auto', 'exact', 'importance' or 'elbo'")
