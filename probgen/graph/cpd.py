"""Conditional distributions: the "C" in a node's CPD, one class per kind.

Every CPD names its ``variable`` and its ordered ``parents`` and turns parent values into
a ``pyro.distributions`` distribution through
[`CPD.distribution`][probgen.graph.cpd.CPD.distribution]. Three kinds ship:

- [`TabularCPD`][probgen.graph.cpd.TabularCPD] — a discrete table with state names (pgmpy's layout);
- [`LinearGaussianCPD`][probgen.graph.cpd.LinearGaussianCPD] —
  ``x ~ Normal(bias + sum_i w_i * parent_i, std)``;
- [`NeuralCPD`][probgen.graph.cpd.NeuralCPD] — any callable (usually a ``torch.nn.Module``) mapping
  parent values to a distribution; this is how VAEs, flows and ARMs plug into a graph.

Examples:
    >>> cpd = TabularCPD("Rain", [[0.8, 0.2], [0.2, 0.8]], states=["no", "yes"],
    ...                  parents=["Cloudy"], parent_states={"Cloudy": ["F", "T"]})
    >>> cpd.probs(Cloudy="T").tolist()
    [0.2, 0.8]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pyro.distributions import Categorical, Normal
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch.distributions import Distribution

from probgen.errors import CPDError, EvidenceError

__all__ = ["CPD", "TabularCPD", "LinearGaussianCPD", "NeuralCPD", "SUM_TOLERANCE"]

#: Largest deviation of a CPD column sum from 1 that is accepted (never renormalised).
SUM_TOLERANCE = 1e-3


class CPD:
    """Base class: a conditional distribution ``p(variable | parents)``."""

    variable: str
    parents: tuple[str, ...]
    discrete: bool = False

    def distribution(self, parent_values: Sequence[torch.Tensor]) -> Distribution:
        """The distribution of ``variable`` given parent values (in ``parents`` order)."""
        raise NotImplementedError

    def validate(self) -> None:
        """Raise [`CPDError`][probgen.errors.CPDError] if the CPD is malformed."""

    def describe(self) -> str:
        """A short formula for the factorisation printout, e.g. ``p(B | A)``."""
        given = f" | {', '.join(self.parents)}" if self.parents else ""
        return f"p({self.variable}{given})"


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise CPDError(f"{what} must be a non-empty string, got {name!r}")
    return name


class TabularCPD(CPD):
    """A discrete conditional probability table.

    Args:
        variable: the node's name.
        values: probabilities in pgmpy's layout, shape ``(card, prod(parent cards))``: one
            column per joint parent state, the *last* parent varying fastest. A root node may
            pass a flat list of ``card`` probabilities.
        states: the variable's state names (default ``0 .. card-1``).
        parents: parent names, in the order the columns are laid out.
        parent_states: state names of each parent (default ``0 .. k-1`` given
            ``parent_cards``).
        parent_cards: cardinality of each parent, when ``parent_states`` is not given.
        tol: accepted deviation of a column sum from 1. Columns are never renormalised.

    Raises:
        CPDError: negative or non-finite entries, a wrong shape or a column not summing to 1.

    Examples:
        >>> TabularCPD("Coin", [0.5, 0.5], states=["H", "T"]).values.shape
        (2, 1)
    """

    discrete = True

    def __init__(
        self,
        variable: str,
        values: Any,
        *,
        states: Sequence[Hashable] | None = None,
        parents: Sequence[str] = (),
        parent_states: Mapping[str, Sequence[Hashable]] | None = None,
        parent_cards: Sequence[int] | None = None,
        tol: float = SUM_TOLERANCE,
    ) -> None:
        self.variable = _check_name(variable, "variable")
        self.parents = tuple(_check_name(p, f"parent of {variable!r}") for p in parents)
        if len(set(self.parents)) != len(self.parents):
            raise CPDError(f"CPD of {variable!r} lists a parent twice: {list(self.parents)}")
        if variable in self.parents:
            raise CPDError(f"CPD of {variable!r} lists itself as a parent")
        arr = np.array(values, dtype=np.float64)  # an own copy, made read-only below
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2:
            raise CPDError(
                f"CPD of {variable!r}: values must be 2-D (card, parent configs), "
                f"got shape {arr.shape}"
            )
        card = arr.shape[0]
        self.states = list(states) if states is not None else list(range(card))
        if len(self.states) != card:
            raise CPDError(
                f"CPD of {variable!r}: {len(self.states)} state names {self.states} "
                f"for {card} rows of values"
            )
        if len(set(self.states)) != card:
            raise CPDError(f"CPD of {variable!r}: repeated state names {self.states}")
        self.parent_states = self._parent_states(parent_states, parent_cards)
        self.tol = tol
        expected_cols = math.prod(len(s) for s in self.parent_states.values())
        if arr.shape[1] != expected_cols:
            cards = [len(self.parent_states[p]) for p in self.parents]
            raise CPDError(
                f"CPD of {variable!r}: values have {arr.shape[1]} columns but parents "
                f"{list(self.parents)} with cardinalities {cards} need {expected_cols}"
            )
        arr.setflags(write=False)  # immutable, so the validation below holds for good
        self._values = arr
        self.validate()
        self._validated_tol = tol

    def _parent_states(self, parent_states, parent_cards) -> dict[str, list[Hashable]]:
        if parent_states is not None:
            missing = [p for p in self.parents if p not in parent_states]
            extra = [p for p in parent_states if p not in self.parents]
            if missing or extra:
                raise CPDError(
                    f"CPD of {self.variable!r}: parent_states must name exactly the parents "
                    f"{list(self.parents)} (missing {missing}, unexpected {extra})"
                )
            return {p: list(parent_states[p]) for p in self.parents}
        if parent_cards is None:
            if self.parents:
                raise CPDError(
                    f"CPD of {self.variable!r}: give parent_states or parent_cards for "
                    f"parents {list(self.parents)}"
                )
            return {}
        if len(parent_cards) != len(self.parents):
            raise CPDError(
                f"CPD of {self.variable!r}: {len(parent_cards)} parent_cards for "
                f"{len(self.parents)} parents"
            )
        return {p: list(range(int(k))) for p, k in zip(self.parents, parent_cards)}

    # --- views --------------------------------------------------------------------------
    @property
    def cardinality(self) -> int:
        return len(self.states)

    @property
    def parent_cards(self) -> tuple[int, ...]:
        return tuple(len(self.parent_states[p]) for p in self.parents)

    @property
    def values(self) -> np.ndarray:
        """Probabilities in pgmpy's layout ``(card, prod(parent cards))`` (a copy)."""
        return self._values.copy()

    def table(self) -> torch.Tensor:
        """Probabilities as a float64 tensor of shape ``(*parent_cards, card)``."""
        t = torch.from_numpy(self._values.T.copy())
        return t.reshape(*self.parent_cards, self.cardinality)

    def factor(self) -> np.ndarray:
        """Probabilities as an array of shape ``(card, *parent_cards)`` (variable first)."""
        return self._values.reshape(self.cardinality, *self.parent_cards)

    def state_index(self, state: Hashable) -> int:
        """Index of ``state``; raises [`EvidenceError`][probgen.errors.EvidenceError] naming the
        variable."""
        try:
            return self.states.index(state)
        except ValueError:
            # allow "1" for 1 and vice versa, since CSV readers and BIF files differ
            for i, s in enumerate(self.states):
                if str(s) == str(state):
                    return i
            raise EvidenceError(
                f"unknown state {state!r} of variable {self.variable!r}; "
                f"its states are {self.states}"
            ) from None

    def probs(self, **parent_assignment: Hashable) -> torch.Tensor:
        """The column ``p(variable | parents = assignment)`` as a tensor of length card."""
        missing = [p for p in self.parents if p not in parent_assignment]
        if missing:
            raise EvidenceError(f"CPD of {self.variable!r}: no value given for {missing}")
        idx = []
        for p in self.parents:
            states = self.parent_states[p]
            state = parent_assignment[p]
            try:
                idx.append(states.index(state))
            except ValueError:
                raise EvidenceError(
                    f"unknown state {state!r} of parent {p!r}; its states are {states}"
                ) from None
        return self.table()[tuple(idx)]

    # --- behaviour ----------------------------------------------------------------------
    def validate(self) -> None:
        v = self._values
        if not np.all(np.isfinite(v)):
            raise CPDError(f"CPD of {self.variable!r} has non-finite entries")
        if np.any(v < 0):
            raise CPDError(f"CPD of {self.variable!r} has negative entries")
        sums = v.sum(axis=0)
        bad = np.flatnonzero(np.abs(sums - 1.0) > self.tol)
        if bad.size:
            col = int(bad[0])
            raise CPDError(
                f"CPD of {self.variable!r}: column {col} "
                f"({self._describe_column(col)}) sums to {sums[col]:.6g}, not 1 "
                f"(tolerance {self.tol}); probgen never renormalises silently"
            )

    def _describe_column(self, col: int) -> str:
        if not self.parents:
            return "no parents"
        idx = np.unravel_index(col, self.parent_cards)
        return ", ".join(f"{p}={self.parent_states[p][i]}" for p, i in zip(self.parents, idx))

    def distribution(self, parent_values: Sequence[torch.Tensor]) -> Distribution:
        """``Categorical`` over state indices; parent values are integer state indices."""
        table = self.table()
        if not self.parents:
            return Categorical(probs=table)
        from pyro.ops.indexing import Vindex

        idx = tuple(torch.as_tensor(v).long() for v in parent_values)
        return Categorical(probs=Vindex(table)[idx + (slice(None),)])

    def copy_with(self, values: Any) -> TabularCPD:
        """A CPD with the same variable, states and parents but new ``values``."""
        return TabularCPD(
            self.variable,
            values,
            states=self.states,
            parents=self.parents,
            parent_states=self.parent_states,
            tol=self.tol,
        )

    def __repr__(self) -> str:
        return (
            f"TabularCPD({self.variable!r}, states={self.states}, "
            f"parents={list(self.parents)})"
        )


class LinearGaussianCPD(CPD):
    """``variable ~ Normal(bias + sum_i weights[i] * parents[i], std)``.

    Examples:
        >>> cpd = LinearGaussianCPD("y", parents=["x"], weights=[2.0], bias=1.0, std=0.5)
        >>> float(cpd.distribution([torch.tensor(3.0)]).mean)
        7.0
    """

    def __init__(
        self,
        variable: str,
        *,
        parents: Sequence[str] = (),
        weights: Sequence[float] = (),
        bias: float = 0.0,
        std: float = 1.0,
    ) -> None:
        self.variable = _check_name(variable, "variable")
        self.parents = tuple(_check_name(p, f"parent of {variable!r}") for p in parents)
        self.weights = [float(w) for w in weights]
        self.bias = float(bias)
        self.std = float(std)
        self.validate()

    def validate(self) -> None:
        if len(self.weights) != len(self.parents):
            raise CPDError(
                f"CPD of {self.variable!r}: {len(self.weights)} weights for parents "
                f"{list(self.parents)}"
            )
        if not (math.isfinite(self.std) and self.std > 0):
            raise CPDError(f"CPD of {self.variable!r}: std must be positive, got {self.std}")
        if not all(math.isfinite(w) for w in [*self.weights, self.bias]):
            raise CPDError(f"CPD of {self.variable!r}: non-finite weight or bias")

    def distribution(self, parent_values: Sequence[torch.Tensor]) -> Distribution:
        mean = torch.as_tensor(self.bias, dtype=torch.float64)
        for w, v in zip(self.weights, parent_values):
            mean = mean + w * torch.as_tensor(v, dtype=torch.float64)
        return Normal(mean, torch.as_tensor(self.std, dtype=torch.float64))

    def describe(self) -> str:
        terms = " + ".join(f"{w:g}*{p}" for w, p in zip(self.weights, self.parents))
        mean = f"{self.bias:g}" + (f" + {terms}" if terms else "")
        return f"{self.variable} ~ N({mean}, {self.std:g}^2)"

    def __repr__(self) -> str:
        return f"LinearGaussianCPD({self.variable!r}, parents={list(self.parents)})"


class NeuralCPD(CPD):
    """A neural conditional: ``module(*parent_values)`` returns a Pyro distribution.

    ``module`` is usually a ``torch.nn.Module`` (its parameters are trained by
    [`probgen.fit`][probgen.infer.fit.fit]); any callable works. ``event_dim`` is the number of
    rightmost dimensions of one draw (1 for a vector-valued node such as an image flattened to 64).

    Examples:
        >>> import pyro.distributions as dist
        >>> import torch.nn as nn
        >>> class Dec(nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.net = nn.Linear(2, 3)
        ...     def forward(self, z):
        ...         return dist.Bernoulli(logits=self.net(z)).to_event(1)
        >>> cpd = NeuralCPD("x", Dec(), parents=["z"])
        >>> cpd.distribution([torch.zeros(5, 2)]).batch_shape
        torch.Size([5])
    """

    def __init__(
        self,
        variable: str,
        module: Callable[..., Distribution],
        *,
        parents: Sequence[str] = (),
        event_dim: int | None = None,
        discrete: bool = False,
    ) -> None:
        self.variable = _check_name(variable, "variable")
        self.parents = tuple(_check_name(p, f"parent of {variable!r}") for p in parents)
        if not callable(module):
            raise CPDError(f"CPD of {variable!r}: module must be callable, got {module!r}")
        self.module = module
        self.event_dim = event_dim
        self.discrete = discrete

    def distribution(self, parent_values: Sequence[torch.Tensor]) -> Distribution:
        d = self.module(*parent_values)
        if not isinstance(d, TorchDistributionMixin):
            raise CPDError(
                f"module of NeuralCPD {self.variable!r} returned {type(d).__name__}, "
                "not a pyro.distributions distribution"
            )
        return d

    def describe(self) -> str:
        name = type(self.module).__name__
        given = f" | {', '.join(self.parents)}" if self.parents else ""
        return f"p({self.variable}{given}) [{name}]"

    def __repr__(self) -> str:
        return (
            f"NeuralCPD({self.variable!r}, {type(self.module).__name__}, "
            f"parents={list(self.parents)})"
        )
