"""Learning a BayesNet's parameters from a table of complete data.

- Maximum likelihood: each tabular CPD column is the normalised counts of the child's
  states among rows with that parent configuration; each linear-Gaussian CPD is the
  least-squares regression on its parents, with the ML residual standard deviation.
- Bayesian: a Dirichlet prior on every CPD column (a constant pseudo-count, or BDeu with an
  equivalent sample size). The posterior is conjugate and known in closed form; probgen
  also samples it with Pyro — NUTS, or SVI with a Dirichlet guide — and returns the draws as
  ArviZ ``InferenceData`` so the usual diagnostics (``az.summary``, ``az.plot_posterior``)
  apply. The CPDs are set to the posterior mean of the draws.

Examples:
    >>> from probgen.graph import BayesNet
    >>> bn = BayesNet.load("sprinkler")
    >>> df = bn.sample(2000, seed=0)
    >>> result = bn.fit(df)
    >>> result.method
    'mle'
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probgen.errors import EvidenceError
from probgen.graph.bayesnet import BayesNet
from probgen.graph.cpd import LinearGaussianCPD, TabularCPD
from probgen.program.compile import encode_column

__all__ = ["BayesNetFit", "fit_bayesnet", "state_counts"]


@dataclass
class BayesNetFit:
    """What [`BayesNet.fit`][probgen.graph.bayesnet.BayesNet.fit] returns: the (updated) network
    and, if Bayesian, draws."""

    bayesnet: BayesNet
    method: str
    idata: Any = None  # arviz.InferenceData for Bayesian fits
    log_likelihood: float = float("nan")


def _codes(bn: BayesNet, data: Any) -> dict[str, np.ndarray]:
    import pandas as pd

    if not isinstance(data, pd.DataFrame):
        raise EvidenceError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if len(data) == 0:
        raise EvidenceError("data has no rows")
    missing_cols = [n for n in bn.nodes if n not in data.columns]
    if missing_cols:
        raise EvidenceError(f"data has no column for node(s) {missing_cols}")
    extra = [c for c in data.columns if c not in bn]
    if extra:
        raise EvidenceError(f"data column(s) {extra} are not nodes of {bn.name!r}")
    out = {}
    for n in bn.nodes:
        col = encode_column(bn, n, data[n]).numpy()
        bad = (col < 0) if isinstance(bn.cpd(n), TabularCPD) else np.isnan(col)
        if bad.any():
            raise EvidenceError(
                f"column {n!r} has {int(bad.sum())} missing values (first in row "
                f"{int(np.flatnonzero(bad)[0])}); fitting needs complete data"
            )
        out[n] = col
    return out


def state_counts(bn: BayesNet, node: str, codes: dict[str, np.ndarray]) -> np.ndarray:
    """Counts of ``node``'s states per parent configuration, shape ``(*parent_cards, card)``."""
    cpd = bn.cpd(node)
    assert isinstance(cpd, TabularCPD)
    counts = np.zeros((*cpd.parent_cards, cpd.cardinality))
    np.add.at(counts, tuple(codes[p] for p in cpd.parents) + (codes[node],), 1.0)
    return counts


def _pgmpy_layout(table: np.ndarray, card: int) -> np.ndarray:
    return table.reshape(-1, card).T


def _prior(cpd: TabularCPD, prior: Any, ess: float) -> float:
    if prior == "BDeu":
        return ess / (cpd.cardinality * math.prod(cpd.parent_cards))
    alpha = float(prior)
    if not alpha > 0:
        raise ValueError(f"prior pseudo-count must be positive, got {prior!r}")
    return alpha


def fit_bayesnet(
    bn: BayesNet,
    data: Any,
    *,
    prior: float | str | None = None,
    equivalent_sample_size: float = 10.0,
    inference: str = "nuts",
    num_samples: int = 500,
    warmup_steps: int = 300,
    svi_steps: int = 2000,
    seed: int = 0,
    progress: bool = False,
    max_tree_depth: int = 6,
) -> BayesNetFit:
    """Fit every CPD of ``bn`` in place from a complete DataFrame.

    Args:
        prior: ``None`` for maximum likelihood; a positive pseudo-count or ``"BDeu"`` for
            a Bayesian fit of the tabular CPDs.
        equivalent_sample_size: BDeu's equivalent sample size.
        inference: ``"nuts"`` or ``"svi"`` (Bayesian fits only).
        num_samples: posterior draws to keep.
        warmup_steps: NUTS warm-up iterations.
        svi_steps: SVI optimisation steps.
        seed: random seed.
        progress: show a progress bar.
        max_tree_depth: NUTS tree depth (NUTS is exact but slow on large tables; SVI is
            fast).
    """
    if inference not in ("nuts", "svi"):
        raise ValueError(f"unknown inference {inference!r}; use 'nuts' or 'svi'")
    bn.check()
    codes = _codes(bn, data)
    new = []
    for n in bn.topological_order():
        cpd = bn.cpd(n)
        if isinstance(cpd, LinearGaussianCPD):
            new.append(_fit_linear_gaussian(cpd, codes))
        elif not isinstance(cpd, TabularCPD):
            raise ValueError(f"fit supports tabular and linear-Gaussian CPDs; {n!r} is neither")
    if prior is None:
        for n in bn.topological_order():
            cpd = bn.cpd(n)
            if isinstance(cpd, TabularCPD):
                counts = state_counts(bn, n, codes)
                totals = counts.sum(-1, keepdims=True)
                unseen = int((totals == 0).sum())
                if unseen:
                    warnings.warn(
                        f"{n!r}: {unseen} parent configuration(s) never occur in the data; "
                        "their CPD columns are set to uniform",
                        stacklevel=3,
                    )
                table = np.where(totals > 0, counts / np.maximum(totals, 1), 1 / cpd.cardinality)
                new.append(cpd.copy_with(_pgmpy_layout(table, cpd.cardinality)))
        bn.add_cpds(*new)
        ll = float(bn.log_prob(data).sum()) if bn.is_discrete else float("nan")
        return BayesNetFit(bn, "mle", None, ll)
    tabular = [n for n in bn.topological_order() if isinstance(bn.cpd(n), TabularCPD)]
    counts = {n: torch.from_numpy(state_counts(bn, n, codes)) for n in tabular}
    alpha = {n: _prior(bn.cpd(n), prior, equivalent_sample_size) for n in tabular}
    from probgen.infer.dirichlet import sample_posterior

    idata, means = sample_posterior(
        counts, alpha, inference=inference, num_samples=num_samples,
        warmup_steps=warmup_steps, svi_steps=svi_steps, seed=seed, progress=progress,
        max_tree_depth=max_tree_depth,
    )
    for n in tabular:
        cpd = bn.cpd(n)
        assert isinstance(cpd, TabularCPD)
        new.append(cpd.copy_with(_pgmpy_layout(means[n], cpd.cardinality)))
    bn.add_cpds(*new)
    ll = float(bn.log_prob(data).sum()) if bn.is_discrete else float("nan")
    return BayesNetFit(bn, f"bayes-{inference}", idata, ll)


def _fit_linear_gaussian(cpd: LinearGaussianCPD, codes: dict[str, np.ndarray]) -> Any:
    y = codes[cpd.variable].astype(np.float64)
    X = np.column_stack([np.ones_like(y)] + [codes[p].astype(np.float64) for p in cpd.parents])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    std = float(np.sqrt(np.mean(resid**2)))
    if not std > 0:
        raise ValueError(f"{cpd.variable!r} is an exact linear function of its parents")
    return LinearGaussianCPD(
        cpd.variable, parents=cpd.parents, weights=beta[1:], bias=beta[0], std=std
    )
