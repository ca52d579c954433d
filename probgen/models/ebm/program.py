"""An EBM as a Pyro program: one unnormalised factor ``pyro.factor("energy", -E(x))``.

This is the program of ``graphs/ebm.yaml``: a single node ``x`` in a data plate whose only
term is ``exp(-E_theta(x))``; the normaliser ``Z(theta)`` is intractable, so the program has
no ``log_prob`` for Pyro's ELBOs and is trained by the score-matching, contrastive and NCE
objectives of [`score_matching`][probgen.models.ebm.score_matching] and
[`contrastive`][probgen.models.ebm.contrastive]. They read the
energy back from the program's trace with [`energy_of`][probgen.models.ebm.program.energy_of], so
any hand-written Pyro model with an ``"energy"`` factor trains the same way.

Examples:
    >>> import torch
    >>> from probgen.models.ebm.nets import QuadraticEnergy
    >>> prog = EnergyProgram(QuadraticEnergy(2))
    >>> energy_of(prog.model, torch.tensor([[1.0, 1.0]])).detach()  # |x|^2 / 2
    tensor([1.])
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor, nn

from probgen.errors import ProbgenError

__all__ = ["EnergyProgram", "energy_of", "FACTOR"]

#: the name of the factor site every EBM program carries
FACTOR = "energy"


class EnergyProgram(nn.Module):
    """Holds an energy network; ``model(x)`` is the Pyro program of ``graphs/ebm.yaml``.

    ``fit`` saves the network under ``model.energy.`` (the program is an ``nn.Module``).
    """

    def __init__(self, energy: nn.Module) -> None:
        super().__init__()
        self.energy = energy

    def model(self, x: Tensor) -> None:
        """``x`` ``(N, ...)``: one factor ``-E(x_n)`` per example inside the data plate."""
        with pyro.plate("data", x.shape[0]):
            pyro.factor(FACTOR, -self.energy(x))


def energy_of(model: Callable[..., None], x: Tensor) -> Tensor:
    """``E(x)`` ``(N,)`` read from the ``"energy"`` factor of the Pyro program ``model``.

    A program built by [`EnergyProgram`][probgen.models.ebm.program.EnergyProgram] is read
    without tracing (same value); any other callable is traced once per call.
    """
    owner = getattr(model, "__self__", None)
    if isinstance(owner, EnergyProgram) and getattr(model, "__func__", None) is \
            EnergyProgram.model:
        return owner.energy(x)
    tr = poutine.trace(model).get_trace(x)
    site = tr.nodes.get(FACTOR)
    if site is None or site["type"] != "sample":
        raise ProbgenError(f"model: has no {FACTOR!r} factor site (pyro.factor({FACTOR!r}, "
                           "-E(x))); the EBM objectives need one")
    log_factor = site["fn"].log_factor
    if log_factor.shape != (x.shape[0],):
        raise ProbgenError(f"model: the {FACTOR!r} factor has shape "
                           f"{tuple(log_factor.shape)}, expected ({x.shape[0]},)")
    return -log_factor


def energy_grad(energy: Callable[[Tensor], Tensor], x: Tensor, create_graph: bool = True
                ) -> tuple[Tensor, Tensor, Tensor]:
    """``(x, E(x), grad_x E(x))`` with ``x`` a fresh leaf requiring grad (so second
    derivatives can follow when ``create_graph``)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy(x)
        (g,) = torch.autograd.grad(e.sum(), x, create_graph=create_graph)
    return x, e, g
