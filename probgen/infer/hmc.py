"""HMC / NUTS on an energy: Pyro's kernels with ``potential_fn = E``, draws as ArviZ data.

[`energy_mcmc`][probgen.infer.hmc.energy_mcmc] runs Pyro's ``NUTS`` (Hoffman & Gelman 2014) or
``HMC`` (Neal 2011) on ``p(x) ∝ exp(-E(x))`` through the ``potential_fn`` interface (Pyro's
potential energy *is* the EBM's energy), one chain per starting point, and returns an
``arviz.InferenceData`` whose ``posterior`` group holds ``x`` with dims
``(chain, draw, x_dim_0)``; ``az.rhat``, ``az.ess`` and ``az.plot_trace`` read it directly. The
chains run one after another in this process (no multiprocessing), each seeded from ``seed``.

Examples:
    >>> import torch, arviz as az
    >>> idata = energy_mcmc(lambda x: 0.5 * (x ** 2).sum(), torch.zeros(2, 2),
    ...                     num_samples=100, warmup_steps=50, seed=0)
    >>> idata.posterior["x"].shape
    (2, 100, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyro
import torch
from torch import Tensor

from probgen.errors import ProbgenError

__all__ = ["energy_mcmc"]


def energy_mcmc(energy: Callable[[Tensor], Tensor], init: Tensor, *, kernel: str = "nuts",
                num_samples: int = 500, warmup_steps: int = 300, step_size: float = 0.1,
                num_steps: int = 10, max_tree_depth: int = 8, seed: int = 0,
                progress: bool = False) -> Any:
    """Draw from ``exp(-energy)`` with NUTS or HMC; one chain per row of ``init``.

    Args:
        energy: ``E(x)`` for a single point ``x`` of shape ``(D,)``, returning a scalar (a
            batched energy ``(N, D) -> (N,)`` works too: it is called with ``x[None]``).
        init: ``(num_chains, D)`` starting points (spread them out so R-hat means something).
        kernel: ``"nuts"`` or ``"hmc"``.
        num_samples: kept draws per chain.
        warmup_steps: adaptation steps per chain (step size and diagonal mass matrix).
        step_size: initial step size (adapted during warm-up).
        num_steps: leapfrog steps per HMC proposal (NUTS chooses its own).
        max_tree_depth: NUTS's tree depth limit.
        seed: chain ``c`` is seeded with ``seed + c``.

    Returns:
        ``arviz.InferenceData`` with ``posterior.x`` ``(chain, draw, D)`` and
        ``sample_stats.diverging`` where Pyro reports it.
    """
    import arviz as az
    from pyro.infer import HMC, MCMC, NUTS

    if kernel not in ("nuts", "hmc"):
        raise ProbgenError(f"kernel: must be 'nuts' or 'hmc', got {kernel!r}")
    if not isinstance(init, Tensor) or init.dim() != 2 or not init.is_floating_point():
        raise ProbgenError("init: must be a float tensor (num_chains, D)")
    if not torch.isfinite(init).all():
        raise ProbgenError("init: holds non-finite values (nan or inf)")
    for name, v in (("num_samples", num_samples), ("warmup_steps", warmup_steps),
                    ("num_steps", num_steps), ("max_tree_depth", max_tree_depth)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "warmup_steps"
                                                                  else 1):
            raise ProbgenError(f"{name}: must be a positive integer, got {v!r}")
    if not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise ProbgenError(f"step_size: must be a finite number > 0, got {step_size!r}")

    batched = _batched(energy, init[0].detach())

    def potential(params: dict[str, Tensor]) -> Tensor:
        x = params["x"]
        return (energy(x[None]) if batched else energy(x)).reshape(())

    draws, divergent = [], []
    for c, x0 in enumerate(init.detach()):
        pyro.set_rng_seed(seed + c)
        if kernel == "nuts":
            k = NUTS(potential_fn=potential, step_size=step_size, max_tree_depth=max_tree_depth,
                     adapt_step_size=True, adapt_mass_matrix=True)
        else:
            k = HMC(potential_fn=potential, step_size=step_size, num_steps=num_steps,
                    adapt_step_size=True, adapt_mass_matrix=True)
        mcmc = MCMC(k, num_samples=num_samples, warmup_steps=warmup_steps,
                    initial_params={"x": x0.clone()}, disable_progbar=not progress)
        mcmc.run()
        draws.append(mcmc.get_samples()["x"].detach().double().numpy())
        stats = mcmc.diagnostics()
        divergent.append(len(stats.get("divergences", {}).get("chain 0", [])))
    x = np.stack(draws)  # (chain, draw, D)
    idata = az.from_dict(posterior={"x": x})
    idata.posterior.attrs["divergences_per_chain"] = divergent
    idata.posterior.attrs["kernel"] = kernel
    return idata


def _batched(energy: Callable[[Tensor], Tensor], x: Tensor) -> bool:
    """Whether ``energy`` wants ``(N, D)`` input: it maps a single point to a non-scalar or
    fails on it."""
    try:
        e = energy(x)
    except (RuntimeError, IndexError, ValueError):
        return True
    return e.dim() != 0
