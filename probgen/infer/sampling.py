"""Forward (ancestral) sampling of a BayesNet, with rejection or likelihood weighting.

Nodes are drawn parents-first, all rows at once: a tabular node picks each row's column of
its table and draws by inverse CDF; a linear-Gaussian node draws a normal; a neural node
asks its module for a distribution and samples it.

With evidence, ``method="rejection"`` keeps only rows that agree with it (exact samples
from the posterior, wasteful when the evidence is rare); ``method="likelihood_weighting"``
clamps evidence nodes and returns a ``_weight`` column equal to the likelihood of the
evidence for each row (weights sum to one).

Examples:
    >>> from probgen.graph import BayesNet
    >>> bn = BayesNet.load("sprinkler")
    >>> df = bn.sample(1000, seed=0)
    >>> sorted(df.columns)
    ['Cloudy', 'Rain', 'Sprinkler', 'WetGrass']
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch

from probgen.errors import EvidenceError
from probgen.graph.bayesnet import BayesNet
from probgen.graph.cpd import LinearGaussianCPD, TabularCPD

__all__ = ["sample_bayesnet", "forward_codes"]


def forward_codes(
    bn: BayesNet,
    n: int,
    rng: np.random.Generator,
    clamp: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Draw ``n`` rows; returns raw values (state codes for tabular nodes) and log-weights.

    ``clamp`` fixes nodes to given values (codes for tabular nodes); the log-likelihood of
    the clamped values accumulates into the returned log-weights.
    """
    clamp = dict(clamp or {})
    values: dict[str, Any] = {}
    logw = np.zeros(n)
    for node in bn.topological_order():
        cpd = bn.cpd(node)
        parents = [values[p] for p in cpd.parents]
        if isinstance(cpd, TabularCPD):
            table = cpd.table().numpy()
            probs = table[tuple(parents)] if parents else np.broadcast_to(table, (n, len(table)))
            if node in clamp:
                code = np.full(n, clamp[node], dtype=np.int64)
                with np.errstate(divide="ignore"):
                    logw += np.log(probs[np.arange(n), code])
                values[node] = code
            else:
                u = rng.random((n, 1))
                code = (probs.cumsum(axis=1) < u).sum(axis=1)
                values[node] = np.minimum(code, probs.shape[1] - 1)
        elif isinstance(cpd, LinearGaussianCPD):
            mean = cpd.bias + sum(w * p for w, p in zip(cpd.weights, parents))
            mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), (n,))
            if node in clamp:
                x = np.full(n, float(clamp[node]))
                logw += -0.5 * ((x - mean) / cpd.std) ** 2 - np.log(cpd.std * np.sqrt(2 * np.pi))
                values[node] = x
            else:
                values[node] = mean + cpd.std * rng.standard_normal(n)
        else:
            tparents = [torch.as_tensor(p) for p in parents]
            d = cpd.distribution(tparents)
            if not parents and d.batch_shape != (n,):
                d = d.expand((n, *d.batch_shape)) if d.batch_shape == () else d
            if node in clamp:
                x = torch.as_tensor(clamp[node]).expand(d.batch_shape + d.event_shape)
                logw += d.log_prob(x).detach().double().numpy()
                values[node] = x
            else:
                seed = int(rng.integers(2**62))
                with torch.random.fork_rng():
                    torch.manual_seed(seed)
                    values[node] = d.sample().detach()
    return values, logw


def _to_frame(bn: BayesNet, values: dict[str, Any]) -> Any:
    import pandas as pd

    cols = {}
    for node in bn.topological_order():
        cpd = bn.cpd(node)
        v = values[node]
        if isinstance(cpd, TabularCPD):
            cols[node] = pd.Categorical.from_codes(v, categories=pd.Index(cpd.states))
            cols[node] = np.asarray(cols[node], dtype=object)
        elif isinstance(v, torch.Tensor) and v.dim() > 1:
            cols[node] = list(v.numpy())
        else:
            cols[node] = np.asarray(v)
    return pd.DataFrame(cols)


def sample_bayesnet(
    bn: BayesNet,
    n: int,
    evidence: Mapping[str, Hashable] | None = None,
    *,
    method: str = "rejection",
    seed: int | None = None,
    max_draws: int = 10_000_000,
) -> Any:
    """``n`` samples as a DataFrame with state names (see the module docstring)."""
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if method not in ("rejection", "likelihood_weighting"):
        raise ValueError(
            f"unknown method {method!r}; use 'rejection' or 'likelihood_weighting'"
        )
    bn.check()
    rng = np.random.default_rng(seed)
    evidence = dict(evidence or {})
    bn._check_evidence_names(evidence, "evidence")
    codes = {}
    for k, v in evidence.items():
        cpd = bn.cpd(k)
        codes[k] = cpd.state_index(v) if isinstance(cpd, TabularCPD) else float(v)
    if not evidence:
        return _to_frame(bn, forward_codes(bn, n, rng)[0])
    if method == "likelihood_weighting":
        values, logw = forward_codes(bn, n, rng, clamp=codes)
        if not np.isfinite(logw).any():
            raise EvidenceError(f"the evidence {evidence} has probability zero")
        w = np.exp(logw - logw.max())
        df = _to_frame(bn, values)
        df["_weight"] = w / w.sum()
        return df
    for k in codes:
        if not isinstance(bn.cpd(k), TabularCPD):
            raise EvidenceError(
                f"rejection sampling needs discrete evidence; {k!r} is continuous "
                "(use method='likelihood_weighting')"
            )
    kept: list[Any] = []
    total, drawn = 0, 0
    batch = max(n, 1000)
    while total < n:
        if drawn >= max_draws:
            raise EvidenceError(
                f"rejection sampling accepted {total} of {drawn} draws for evidence "
                f"{evidence}; it is too rare (use method='likelihood_weighting')"
            )
        values, _ = forward_codes(bn, batch, rng)
        drawn += batch
        ok = np.ones(batch, dtype=bool)
        for k, c in codes.items():
            ok &= values[k] == c
        if ok.any():
            df = _to_frame(bn, values)[ok]
            kept.append(df)
            total += len(df)
    import pandas as pd

    return pd.concat(kept, ignore_index=True).iloc[:n].reset_index(drop=True)
