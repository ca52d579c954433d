"""Compile a BayesNet into a Pyro program: one ``pyro.sample`` per node, in topological order.

The compiled [`Program`][probgen.program.compile.Program] is a ``torch.nn.Module`` (it owns the
networks of the graph's neural CPDs) and a Pyro model: calling it runs the generative process inside
a ``pyro.plate`` over data rows. Observed values condition their sites; a value that is
missing (``NaN`` in a float column, ``None``/``NaN`` in a DataFrame, or ``-1`` in an
integer code tensor of a discrete node) is treated as latent: the node's site observes the
present rows (masked) and a ``{node}_missing`` site draws — or, for a discrete node,
enumerates — the missing ones.

``inputs`` are nodes whose values are given but not modelled — the ``x`` of a guide
``x -> z``: they are read, never sampled. So a VAE is two programs:
``Program(generative_bn, observed=["x"])`` and ``Program(inference_bn, inputs=["x"])``.

Examples:
    >>> import torch
    >>> from probgen.graph import BayesNet
    >>> bn = BayesNet.load("sprinkler")
    >>> model = bn.program()
    >>> trace = pyro.poutine.trace(model).get_trace(num_rows=4)
    >>> [n for n in trace.nodes if n in bn]
    ['Cloudy', 'Sprinkler', 'Rain', 'WetGrass']
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from torch import nn

from probgen.errors import EvidenceError
from probgen.graph.bayesnet import BayesNet
from probgen.graph.cpd import NeuralCPD, TabularCPD

__all__ = ["Program", "encode_column"]


def encode_column(bn: BayesNet, node: str, values: Any) -> torch.Tensor:
    """Turn one column of data for ``node`` into a tensor (state codes for tabular nodes).

    Missing entries become ``-1`` for discrete nodes and ``NaN`` for continuous ones. A
    node without a CPD (e.g. the input ``x`` of a guide) passes tensors through.
    """
    cpd = bn.cpds.get(node)
    if isinstance(cpd, TabularCPD):
        if isinstance(values, torch.Tensor):
            codes = values.long()
            bad = (codes < -1) | (codes >= cpd.cardinality)
            if bad.any():
                raise EvidenceError(
                    f"state code {int(codes[bad][0])} out of range for {node!r} "
                    f"(cardinality {cpd.cardinality})"
                )
            return codes
        import pandas as pd

        series = pd.Series(values)
        missing = series.isna().to_numpy()
        lookup = {str(s): i for i, s in enumerate(cpd.states)}
        out = np.full(len(series), -1, dtype=np.int64)
        for i, v in enumerate(series.to_numpy(dtype=object)):
            if missing[i]:
                continue
            key = str(int(v)) if isinstance(v, float) and float(v).is_integer() else str(v)
            if key not in lookup:
                raise EvidenceError(
                    f"unknown state {v!r} of variable {node!r} in row {i}; "
                    f"its states are {cpd.states}"
                )
            out[i] = lookup[key]
        return torch.from_numpy(out)
    tensor = torch.as_tensor(np.array(values, dtype=np.float64) if not isinstance(
        values, torch.Tensor) else values)
    return tensor


class Program(nn.Module):
    """A BayesNet compiled to a Pyro model (or guide).

    Args:
        bn: the network; every node needs a CPD.
        observed: nodes whose values may be passed as data (default: the non-latent nodes
            that are not inputs). Positional call arguments bind to them in this order.
        inputs: nodes given as values and never sampled (the conditioning side of a guide).
        plate: the name of the data plate.
        name: the prefix under which neural CPD parameters enter Pyro's param store.

    Calling conventions (all equivalent)::

        model(x_tensor)                       # positional, in ``observed`` order
        model(x=x_tensor)                     # by node name
        model(data=df)                        # a DataFrame or a dict of columns
        model(num_rows=10)                    # nothing observed: prior samples

    Returns a dict ``node -> value`` of every node's value in this run.
    """

    def __init__(
        self,
        bn: BayesNet,
        *,
        observed: Sequence[str] | None = None,
        inputs: Sequence[str] = (),
        plate: str = "data",
        name: str | None = None,
    ) -> None:
        super().__init__()
        bn.check(require_cpds=False)
        self.bn = bn
        self.inputs = list(inputs)
        for n in self.inputs:
            bn._node(n)
        if observed is None:
            observed = [n for n in bn.observed_nodes() if n not in self.inputs]
        self.observed = list(observed)
        for n in self.observed:
            bn._node(n)
        self.order = [n for n in bn.topological_order() if n not in self.inputs]
        for n in self.order:
            bn.cpd(n)  # every sampled node needs a CPD
        self.plate = plate
        self.name = name or bn.name
        self.nets = nn.ModuleDict(
            {
                n: c.module
                for n, c in bn.cpds.items()
                if isinstance(c, NeuralCPD) and isinstance(c.module, nn.Module)
            }
        )

    def _bind(self, args: tuple, data: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        names = self.inputs + self.observed if self.inputs else self.observed
        if len(args) > len(names):
            raise EvidenceError(
                f"{len(args)} positional values for the {len(names)} data nodes {names}"
            )
        values: dict[str, Any] = dict(zip(names, args))
        if data is not None:
            items = data.items() if hasattr(data, "items") else None
            if items is None:
                raise EvidenceError(f"data must be a DataFrame or a dict, got {type(data)}")
            for k, v in items:
                values[k] = v
        for k, v in kwargs.items():
            values[k] = v
        for k in values:
            if k not in self.bn:
                raise EvidenceError(f"unknown data variable {k!r} for network {self.bn.name!r}")
        for n in self.inputs:
            if values.get(n) is None:
                raise EvidenceError(f"input node {n!r} needs a value")
        return {k: encode_column(self.bn, k, v) for k, v in values.items() if v is not None}

    def forward(
        self,
        *args: Any,
        data: Any = None,
        num_rows: int | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        if self.nets:
            pyro.module(self.name, self.nets)
        values = self._bind(args, data, kwargs)
        sizes = {int(v.shape[0]) for v in values.values() if v.dim() > 0}
        if num_rows is not None:
            sizes.add(int(num_rows))
        if len(sizes) > 1:
            raise EvidenceError(f"data columns have different numbers of rows: {sorted(sizes)}")
        n_rows = sizes.pop() if sizes else 1
        out: dict[str, torch.Tensor] = {n: values[n] for n in self.inputs}
        with pyro.plate(self.plate, n_rows):
            for node in self.order:
                cpd = self.bn.cpd(node)
                d = cpd.distribution([out[p] for p in cpd.parents])
                obs = values.get(node)
                infer: dict[str, Any] = {}
                if cpd.discrete and (self.bn.is_latent(node) or obs is None):
                    infer["enumerate"] = "parallel"
                if obs is None:
                    out[node] = pyro.sample(node, d, infer=infer)
                    continue
                mask = _present(obs, cpd)
                if bool(mask.all()):
                    out[node] = pyro.sample(node, d, obs=obs)
                    continue
                # some rows miss this node: observe the others, draw (or enumerate) these
                m = mask.reshape(mask.shape + (1,) * (obs.dim() - mask.dim()))
                safe = torch.where(m, obs, torch.zeros_like(obs))
                if cpd.discrete:
                    infer["enumerate"] = "parallel"
                with poutine.mask(mask=~mask):
                    missing = pyro.sample(f"{node}_missing", d, infer=infer)
                with poutine.mask(mask=mask):
                    pyro.sample(node, d, obs=safe)
                out[node] = torch.where(m, safe, missing)
        return out

    def extra_repr(self) -> str:
        return f"bn={self.bn.name!r}, observed={self.observed}, inputs={self.inputs}"


def _present(obs: torch.Tensor, cpd: Any) -> torch.Tensor:
    """Which rows of ``obs`` are observed (reduced over the event dims)."""
    mask = obs >= 0 if cpd.discrete and not obs.is_floating_point() else ~torch.isnan(obs)
    while mask.dim() > 1:
        mask = mask.all(-1)
    return mask


def state_codes(bn: BayesNet, values: Mapping[str, Hashable]) -> dict[str, torch.Tensor]:
    """``{node: state name}`` -> ``{node: tensor(code)}`` for conditioning handlers."""
    out = {}
    for k, v in values.items():
        cpd = bn.cpd(k)
        if isinstance(cpd, TabularCPD):
            out[k] = torch.tensor(cpd.state_index(v))
        else:
            out[k] = torch.as_tensor(v, dtype=torch.float64)
    return out
