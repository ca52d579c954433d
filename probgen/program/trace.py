"""Trace any Pyro program back to its Bayesian-network skeleton.

``graph_of(model, *args, **kwargs)`` runs ``model`` once under Pyro's tracer, reads the
direct dependencies between sample sites (``pyro.infer.inspect.get_dependencies``) and
returns a [`BayesNet`][probgen.graph.bayesnet.BayesNet] with one node per sample site: observed
sites as observed nodes, the rest latent, and each node's innermost plate. The result has no
CPDs (a skeleton): draw it, print its factorisation, ask d-separation questions.

Examples:
    >>> import pyro, pyro.distributions as dist, torch
    >>> def model(x):
    ...     z = pyro.sample("z", dist.Normal(0., 1.))
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("x", dist.Normal(z, 1.), obs=x)
    >>> graph_of(model, torch.zeros(3)).edges
    [('z', 'x')]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.poutine as poutine
from pyro.infer.inspect import get_dependencies
from pyro.poutine.util import site_is_subsample

from probgen.graph.bayesnet import BayesNet

__all__ = ["graph_of"]


def graph_of(model: Callable[..., Any], *args: Any, **kwargs: Any) -> BayesNet:
    """The BayesNet skeleton of the Pyro program ``model(*args, **kwargs)``."""
    trace = poutine.trace(model).get_trace(*args, **kwargs)
    sites = {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    }
    deps = get_dependencies(model, args, kwargs)["prior_dependencies"]
    bn = BayesNet(name=getattr(model, "__name__", type(model).__name__))
    for name, site in sites.items():
        frames = [f.name for f in site["cond_indep_stack"] if f.vectorized]
        bn.add_node(
            name,
            latent=not site["is_observed"],
            plate=frames[-1] if frames else None,
        )
        bn.graph.nodes[name]["dist"] = type(site["fn"]).__name__
    for child, parents in deps.items():
        if child not in sites:
            continue
        for parent in parents:
            if parent != child and parent in sites:
                bn.add_edge(parent, child)
    return bn
