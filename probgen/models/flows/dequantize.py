"""Dequantization: continuous flows on discrete data, and the discrete NLL *bound*.

A pixel with ``levels`` values ``x in {0, ..., levels-1}`` becomes ``y = (x + u) / levels`` in
``[0, 1)`` with noise ``u ~ q(u | x)`` on ``[0, 1)^D``. For any density ``p(y)``
(Theis et al. 2016, sec. 3.1; Ho et al. 2019, Flow++, eq. 11-12):

    log P(x) = log E_q[ p(y) / q_y(y|x) ]  >=  E_q[ log p(y) - log q_y(y|x) ],

with ``q_y(y|x) = q(u|x) * levels^D`` the noise density in ``y`` space. The right side is the
one-sample (ELBO) bound; ``log (1/K) sum_k p(y_k)/q_y(y_k|x)`` is the importance-weighted
bound, tighter as K grows (Burda et al. 2016). Both are *bounds* on the discrete NLL, and
[`DiscreteNLL`][probgen.models.flows.dequantize.DiscreteNLL] says so.

- [`UniformDequantization`][probgen.models.flows.dequantize.UniformDequantization]:
  ``q(u|x) = U[0, 1)^D``.
- [`VariationalDequantization`][probgen.models.flows.dequantize.VariationalDequantization]:
  ``u = sigmoid(v)``, ``v ~`` a conditional flow given ``x`` (Flow++, sec. 3.1).

Examples:
    >>> import torch
    >>> from probgen.models.flows.flows import realnvp
    >>> flow, deq = realnvp(2, num_layers=1), UniformDequantization(levels=4)
    >>> x = torch.randint(0, 4, (5, 2))
    >>> log_likelihood_bound(flow, deq, x).shape
    torch.Size([5])
    >>> discrete_nll(flow, deq, x).label
    'NLL bound (uniform dequantization, 1 sample)'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from torch import Tensor, nn

from probgen.models.flows.flows import Flow

__all__ = [
    "UniformDequantization",
    "VariationalDequantization",
    "DiscreteNLL",
    "log_likelihood_bound",
    "discrete_nll",
    "dequantized_model",
]


def _check_levels(levels: int) -> None:
    if not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an int >= 2, got {levels!r}")


def _check_x(x: Tensor, levels: int) -> None:
    if x.dim() < 2:
        raise ValueError(
            f"x must be a batch (B, ...) of discrete values, got shape {tuple(x.shape)}")
    if x.is_floating_point() and not torch.equal(x, x.round()):
        raise ValueError("x must hold integer values (discrete data)")
    if x.min() < 0 or x.max() > levels - 1:
        raise ValueError(f"x values must lie in 0..{levels - 1}")


class UniformDequantization(nn.Module):
    """``q(u|x)`` uniform on ``[0, 1)^D``; returns ``y = (x + u) / levels`` and ``log q_y``.

    Args:
        levels: number of discrete values per coordinate (17 for probgen's digits).

    Examples:
        >>> deq = UniformDequantization(17)
        >>> y, log_q = deq(torch.tensor([[0, 16]]), num_samples=3)
        >>> y.shape, log_q.shape, round(log_q[0, 0].item(), 4) == round(2 * math.log(17), 4)
        (torch.Size([3, 1, 2]), torch.Size([3, 1]), True)
    """

    name = "uniform"

    def __init__(self, levels: int) -> None:
        super().__init__()
        _check_levels(levels)
        self.levels = levels

    def sample_noise(self, x: Tensor, num_samples: int) -> tuple[Tensor, Tensor]:
        """``u ~ q(u|x)`` of shape ``(K, *x.shape)`` and ``log q(u|x)`` of shape ``(K, B)``."""
        u = torch.rand((num_samples, *x.shape), device=x.device,
                       dtype=x.dtype if x.is_floating_point() else None)
        return u, u.new_zeros(num_samples, x.shape[0])

    def forward(self, x: Tensor, num_samples: int = 1) -> tuple[Tensor, Tensor]:
        """Dequantized ``y`` ``(K, *x.shape)`` and ``log q_y(y|x)`` ``(K, B)`` in nats."""
        _check_x(x, self.levels)
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        u, log_q = self.sample_noise(x, num_samples)
        y = (x.to(u.dtype) + u) / self.levels
        d = math.prod(x.shape[1:])
        return y, log_q + d * math.log(self.levels)


class VariationalDequantization(UniformDequantization):
    """Learned noise ``u = sigmoid(v)``, ``v ~ flow_q(context = x scaled to [-1, 1])``.

    ``flow_q`` is a conditional [`Flow`][probgen.models.flows.flows.Flow] over ``x.shape[1:]`` whose
    ``context_dim`` is ``prod(x.shape[1:])``; pick one that samples in one pass (coupling or
    ``fast="sample"``), since training samples it every step.

    Examples:
        >>> from probgen.models.flows.flows import realnvp
        >>> deq = VariationalDequantization(4, realnvp(2, num_layers=2, context_dim=2))
        >>> y, log_q = deq(torch.randint(0, 4, (6, 2)), num_samples=2)
        >>> bool(((y >= 0) & (y < 1)).all()), log_q.shape
        (True, torch.Size([2, 6]))
    """

    name = "variational"

    def __init__(self, levels: int, flow_q: Flow) -> None:
        super().__init__(levels)
        if not isinstance(flow_q, Flow) or not flow_q.is_conditional:
            raise ValueError("flow_q must be a conditional probgen Flow (built with context_dim)")
        self.flow_q = flow_q

    def sample_noise(self, x: Tensor, num_samples: int) -> tuple[Tensor, Tensor]:
        if tuple(x.shape[1:]) != self.flow_q.event_shape:
            raise ValueError(f"x: event shape {tuple(x.shape[1:])} does not match flow_q's "
                             f"{self.flow_q.event_shape}")
        dtype = self.flow_q.base_loc.dtype
        context = (x.reshape(x.shape[0], -1).to(dtype) / (self.levels - 1)) * 2 - 1  # (B, D)
        q = self.flow_q(context)
        v = q.rsample((num_samples,))  # (K, B, ...)
        log_qv = q.log_prob(v)  # (K, B), uses the transforms' cache: no inversion
        # u = sigmoid(v): log|du/dv| = log sigmoid(v) + log sigmoid(-v)
        log_det = (nn.functional.logsigmoid(v) + nn.functional.logsigmoid(-v)).flatten(2).sum(-1)
        u = torch.sigmoid(v).clamp(max=1 - 1e-6)
        return u, log_qv - log_det


def log_likelihood_bound(flow: Flow, dequantizer: UniformDequantization, x: Tensor,
                         num_samples: int = 1, context: Tensor | None = None) -> Tensor:
    """Lower bound on ``log P(x)`` per example ``(B,)`` in nats (differentiable).

    ``num_samples=1`` gives the one-sample bound ``log p(y) - log q_y(y|x)``; ``K > 1`` the
    importance-weighted bound ``logsumexp_k(...) - log K``.

    Examples:
        >>> from probgen.models.flows.flows import maf
        >>> x = torch.randint(0, 17, (4, 3))
        >>> b = log_likelihood_bound(maf(3), UniformDequantization(17), x, num_samples=8)
        >>> b.shape
        torch.Size([4])
    """
    y, log_q = dequantizer(x, num_samples)  # (K, B, ...), (K, B)
    log_p = flow(context).log_prob(y)  # (K, B)
    log_w = log_p - log_q
    if num_samples == 1:
        return log_w[0]
    return torch.logsumexp(log_w, dim=0) - math.log(num_samples)


@dataclass(frozen=True)
class DiscreteNLL:
    """A discrete negative log-likelihood *upper bound* (nats per example, and bits/dim).

    Examples:
        >>> r = DiscreteNLL(nats=100.0, dims=64, num_samples=1, dequantization="uniform")
        >>> r.label, round(r.bits_per_dim, 3)
        ('NLL bound (uniform dequantization, 1 sample)', 2.254)
    """

    nats: float
    dims: int
    num_samples: int
    dequantization: str
    kind: str = "bound"

    @property
    def bits_per_dim(self) -> float:
        return self.nats / (self.dims * math.log(2))

    @property
    def label(self) -> str:
        k = self.num_samples
        samples = "1 sample" if k == 1 else f"importance-weighted, K={k}"
        return f"NLL {self.kind} ({self.dequantization} dequantization, {samples})"


@torch.no_grad()
def discrete_nll(flow: Flow, dequantizer: UniformDequantization, data: Tensor,
                 num_samples: int = 1, batch_size: int = 256,
                 context: Tensor | None = None) -> DiscreteNLL:
    """Average discrete NLL bound over ``data`` (nats per example), evaluated in eval mode.

    Examples:
        >>> from probgen.models.flows.flows import realnvp
        >>> r = discrete_nll(realnvp(2), UniformDequantization(4), torch.randint(0, 4, (9, 2)), 4)
        >>> r.kind, r.num_samples
        ('bound', 4)
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    modes = [(m, m.training) for m in (flow, dequantizer)]
    for m, _ in modes:
        m.eval()
    try:
        total = 0.0
        for i in range(0, data.shape[0], batch_size):
            ctx = None if context is None else context[i : i + batch_size]
            b = log_likelihood_bound(flow, dequantizer, data[i : i + batch_size], num_samples, ctx)
            total -= b.sum().item()
    finally:
        for m, mode in modes:
            m.train(mode)
    return DiscreteNLL(total / data.shape[0], math.prod(data.shape[1:]), num_samples,
                       dequantizer.name)


def dequantized_model(flow: Flow, dequantizer: UniformDequantization, num_samples: int = 1,
                      name: str = "flow") -> Callable[..., None]:
    """A Pyro model ``model(x, context=None)`` whose log joint is the bound, via ``pyro.factor``.

    Train it with an empty guide (the engine's "likelihood" objective): the loss is
    ``-sum log_likelihood_bound``; a variational dequantizer's flow trains jointly.

    Examples:
        >>> from probgen.models.flows.flows import realnvp
        >>> model = dequantized_model(realnvp(2), UniformDequantization(4))
        >>> tr = pyro.poutine.trace(model).get_trace(torch.randint(0, 4, (3, 2)))
        >>> tr.nodes["log_likelihood_bound"]["fn"].batch_shape
        torch.Size([3])
    """
    if not isinstance(flow, Flow):
        raise ValueError(f"flow must be a probgen Flow, got {type(flow).__name__}")
    if not isinstance(dequantizer, UniformDequantization):
        raise ValueError(f"dequantizer must be a dequantization module, got {type(dequantizer)}")

    def model(x: Tensor, context: Tensor | None = None) -> None:
        pyro.module(name, flow)
        pyro.module(f"{name}_dequantizer", dequantizer)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.factor("log_likelihood_bound",
                        log_likelihood_bound(flow, dequantizer, x, num_samples, context))

    return model
