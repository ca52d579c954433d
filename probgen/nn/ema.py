"""An exponential moving average of a network's weights (Polyak averaging), the usual way
diffusion and score models are sampled (Ho et al. 2020, appendix B: decay 0.9999; Song &
Ermon 2020, sec. 3.3).

The copy's parameters do not require gradients, so an optimiser never steps them; the
number of updates is a buffer, so the average is saved and resumed with a run.

Examples:
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> ema = EMA(net, decay=0.5)
    >>> with torch.no_grad():
    ...     _ = net.weight.add_(1.0)
    >>> ema.update(net)
    >>> bool(torch.all(ema.net.weight < net.weight))
    True
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from probgen.errors import ProbgenError

__all__ = ["EMA"]


class EMA(nn.Module):
    """``ema.net`` follows ``net``: ``w <- d w + (1 - d) w_net`` with
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (a warm-up, so early
    averages do not remember the random initialisation)."""

    def __init__(self, net: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ProbgenError(f"decay: must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.net = copy.deepcopy(net)
        self.net.requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """One averaging step towards ``net``'s current weights (buffers are copied)."""
        n = int(self.updates)
        d = min(self.decay, (1 + n) / (10 + n))
        for p_ema, p in zip(self.net.parameters(), net.parameters()):
            p_ema.lerp_(p.detach(), 1 - d)
        for b_ema, b in zip(self.net.buffers(), net.buffers()):
            b_ema.copy_(b)
        self.updates += 1
