"""Evidence and intervention as effect handlers over a compiled program.

``condition`` fixes the *observed* value of nodes (Pyro's ``condition``): the rest of the
program is unchanged, so downstream and upstream inference both see the evidence.
``do`` *intervenes* (Pyro's ``do``): the node is set and cut from its parents, so its
ancestors no longer learn from it. Both accept state names for discrete nodes.

Examples:
    >>> from probgen.graph import BayesNet
    >>> bn = BayesNet.load("sprinkler")
    >>> model = bn.program()
    >>> wet = condition(model, {"WetGrass": "T"})
    >>> forced = do(model, {"Sprinkler": "T"})
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import pyro.poutine as poutine

from probgen.graph.bayesnet import BayesNet
from probgen.program.compile import Program, state_codes

__all__ = ["condition", "do"]


def _network(model: Any, bn: BayesNet | None) -> BayesNet | None:
    if bn is not None:
        return bn
    return model.bn if isinstance(model, Program) else None


def _encode(model: Any, values: Mapping[str, Hashable], bn: BayesNet | None) -> dict:
    net = _network(model, bn)
    if net is None:
        return dict(values)
    for k in values:
        net._check_evidence_names([k], "evidence")
    return state_codes(net, values)


def condition(
    model: Callable[..., Any], values: Mapping[str, Hashable], *, bn: BayesNet | None = None
) -> Callable[..., Any]:
    """``model`` with ``values`` observed (state names allowed for a Program or ``bn``)."""
    return poutine.condition(model, data=_encode(model, values, bn))


def do(
    model: Callable[..., Any], values: Mapping[str, Hashable], *, bn: BayesNet | None = None
) -> Callable[..., Any]:
    """``model`` under the intervention ``do(values)``: nodes set, cut from their parents."""
    return poutine.do(model, data=_encode(model, values, bn))
