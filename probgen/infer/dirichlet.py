"""Posterior draws of Dirichlet-distributed CPD columns with Pyro (NUTS or SVI).

The model: ``theta_node[pa] ~ Dirichlet(alpha)`` for every node and parent configuration,
and the complete-data likelihood ``sum counts * log theta`` entered as a ``pyro.factor``
(the sufficient statistics of the categorical rows, so the cost does not grow with the
number of rows). The posterior is conjugate — ``Dirichlet(alpha + counts)`` — which is what
the tests check the samplers against.

Examples:
    >>> import torch
    >>> idata, means = sample_posterior({"A": torch.tensor([3., 1.])}, {"A": 1.0},
    ...                                 inference="svi", num_samples=200, svi_steps=300)
    >>> means["A"].shape
    (2,)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from torch.distributions import constraints

__all__ = ["sample_posterior"]


def _site(node: str) -> str:
    return f"theta_{node}"


def _model(counts: dict[str, torch.Tensor], alpha: dict[str, float]) -> None:
    for node, c in counts.items():
        conc = torch.full_like(c, alpha[node])
        theta = pyro.sample(_site(node), dist.Dirichlet(conc).to_event(c.dim() - 1))
        pyro.factor(f"loglik_{node}", (c * torch.log(theta)).sum())


def _guide(counts: dict[str, torch.Tensor], alpha: dict[str, float]) -> None:
    for node, c in counts.items():
        q = pyro.param(
            f"q_{node}", torch.full_like(c, alpha[node]) + 1.0, constraint=constraints.positive
        )
        pyro.sample(_site(node), dist.Dirichlet(q).to_event(c.dim() - 1))


def sample_posterior(
    counts: dict[str, torch.Tensor],
    alpha: dict[str, float],
    *,
    inference: str = "nuts",
    num_samples: int = 500,
    warmup_steps: int = 300,
    svi_steps: int = 2000,
    seed: int = 0,
    progress: bool = False,
    max_tree_depth: int = 6,
) -> tuple[Any, dict[str, np.ndarray]]:
    """Draw CPD posteriors; returns ``(InferenceData, {node: posterior-mean table})``."""
    import arviz as az

    counts = {k: v.double() for k, v in counts.items()}
    pyro.set_rng_seed(seed)
    if inference == "nuts":
        kernel = NUTS(_model, max_tree_depth=max_tree_depth)
        mcmc = MCMC(
            kernel,
            num_samples=num_samples,
            warmup_steps=warmup_steps,
            num_chains=1,
            disable_progbar=not progress,
        )
        mcmc.run(counts, alpha)
        draws = {k: v.detach().numpy() for k, v in mcmc.get_samples().items()}
        idata = az.from_pyro(mcmc)
    elif inference == "svi":
        pyro.clear_param_store()
        svi = SVI(_model, _guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
        steps = range(svi_steps)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="svi")
        for _ in steps:
            svi.step(counts, alpha)
        with torch.no_grad():
            draws = {}
            for node in counts:
                q = pyro.param(f"q_{node}").detach()
                draws[_site(node)] = (
                    dist.Dirichlet(q).sample((num_samples,)).numpy()
                )
        idata = az.from_dict(posterior={k: v[None] for k, v in draws.items()})
    else:
        raise ValueError(f"unknown inference {inference!r}; use 'nuts' or 'svi'")
    means = {}
    for node in counts:
        means[node] = draws[_site(node)].mean(axis=0)  # a mean of simplex points
    return idata, means
