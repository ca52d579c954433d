"""Shared test utilities: random discrete networks and brute-force enumeration."""

from __future__ import annotations

import warnings

import numpy as np

from probgen.graph import BayesNet, TabularCPD


def random_network(rng: np.random.Generator, n_nodes: int, max_parents: int = 3,
                   zero_prob: float = 0.0) -> BayesNet:
    """A random DAG (nodes in index order) with random cardinalities and Dirichlet CPTs."""
    names = [f"V{i}" for i in range(n_nodes)]
    cards = {n: int(rng.integers(2, 5)) for n in names}
    states = {n: [f"s{k}" for k in range(cards[n])] for n in names}
    cpds = []
    for i, n in enumerate(names):
        k = int(rng.integers(0, min(i, max_parents) + 1))
        parents = [names[j] for j in sorted(rng.choice(i, size=k, replace=False))] if k else []
        cols = int(np.prod([cards[p] for p in parents])) if parents else 1
        values = rng.dirichlet(np.ones(cards[n]) * 0.7, size=cols).T
        if zero_prob:
            mask = rng.random(values.shape) < zero_prob
            mask[values.argmax(axis=0), np.arange(cols)] = False
            values = np.where(mask, 0.0, values)
            values /= values.sum(axis=0, keepdims=True)
        cpds.append(TabularCPD(n, values, states=states[n], parents=parents,
                               parent_states={p: states[p] for p in parents}))
    return BayesNet.from_cpds(cpds, name="random")


def joint_table(bn: BayesNet) -> tuple[np.ndarray, list[str]]:
    """The full joint distribution as one array, axes in ``bn.topological_order()``."""
    order = bn.topological_order()
    args = []
    for n in order:
        cpd = bn.cpd(n)
        args += [cpd.factor(), [order.index(v) for v in (n, *cpd.parents)]]
    return np.einsum(*args, list(range(len(order)))), order


def brute_force(bn: BayesNet, variables: list[str], evidence: dict) -> np.ndarray:
    """p(variables | evidence) by enumerating the joint (axes in ``variables`` order)."""
    joint, order = joint_table(bn)
    idx = tuple(
        bn.cpd(v).state_index(evidence[v]) if v in evidence else slice(None) for v in order
    )
    sub = joint[idx]
    rest = [v for v in order if v not in evidence]
    sub = np.moveaxis(sub, [rest.index(v) for v in variables], range(len(variables)))
    sub = sub.sum(axis=tuple(range(len(variables), sub.ndim)))
    return sub / sub.sum()


def aligned(factor, variables: list[str]) -> np.ndarray:
    """A pgmpy DiscreteFactor's values with axes in ``variables`` order."""
    return np.moveaxis(
        factor.values, [factor.variables.index(v) for v in variables], range(len(variables))
    )


def pgmpy_example(name: str):
    from pgmpy.utils import get_example_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_example_model(name)


def svi_run(model, guide, data, elbo, steps, lr, seed=0, batch_size=None):
    """Pyro's own ``SVI`` loop on the batches [`fit`][probgen.infer.fit.fit] draws (same
    sampler, seeding and parameter creation before the first step, SGD at ``lr``).

    Returns the loss of every step and the final unconstrained Pyro parameters.
    """
    import pyro
    import torch

    from probgen.infer import runs
    from probgen.infer.batches import BatchSampler, as_tensors, num_examples, take

    data = as_tensors(data)
    n = num_examples(data)
    b = n if batch_size is None else batch_size
    pyro.set_rng_seed(seed)
    sampler = BatchSampler(data, b, seed, torch.device("cpu"))
    guide = guide if guide is not None else (lambda *a, **k: None)
    state = runs.rng_state()
    with torch.no_grad():  # create the parameters first, as fit's discovery does
        elbo.loss(model, guide, *take(data, sampler.order[:b], torch.device("cpu")))
    runs.set_rng_state(*state)
    svi = pyro.infer.SVI(model, guide, pyro.optim.SGD({"lr": lr}), elbo)
    losses = [svi.step(*sampler.next()) for _ in range(steps)]
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}
    return losses, params
