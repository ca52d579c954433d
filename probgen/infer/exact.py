"""Exact inference on discrete Bayesian networks by tensor contraction.

``query`` answers one question the way pgmpy's ``VariableElimination.query`` does and
returns a pgmpy ``DiscreteFactor`` (same variables, state names and values), so switching
from pgmpy is a one-line change. ``query_batch`` answers one question for many evidence
records at once and returns a tensor. Both work on the relevant part of the network only:

1. barren-node pruning — only ancestors of the query and evidence variables matter;
2. evidence reduction — every table is sliced at the observed states (the observed
   variable disappears from the tables);
3. the rest is a sum of products of small tables, eliminated one variable at a time in a
   greedy min-weight order computed for the query at hand (smallest new table first).
   ``query_batch`` eliminates the same way with one more, never-eliminated variable: the
   record index, carried by one-hot evidence indicators (all ones where a record does not
   observe a variable).

Every contraction is sized before it runs: one that would exceed ``max_bytes`` raises
[`QueryTooLargeError`][probgen.errors.QueryTooLargeError] instead of exhausting memory.

Examples:
    >>> from probgen.graph import BayesNet
    >>> bn = BayesNet.load("asia")
    >>> print(bn.query(["lung"], evidence={"smoke": "yes"}).values.round(3))
    [0.1 0.9]
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probgen.errors import CPDError, EvidenceError, QueryTooLargeError
from probgen.graph.bayesnet import BayesNet
from probgen.graph.cpd import TabularCPD
from probgen.infer.elimination import elimination_order, greedy_order, resolve_order

__all__ = ["query", "query_batch", "map_query", "log_prob", "DEFAULT_MAX_BYTES"]

#: Largest intermediate table (in bytes, float64) an exact query may build.
DEFAULT_MAX_BYTES = 2 * 1024**3

Factor = tuple[np.ndarray, tuple[str, ...]]


@dataclass
class _Compiled:
    """Per-network tables and orders, built once and reused by every query."""

    key: tuple
    nodes: list[str]
    states: dict[str, list[Hashable]]
    lookup: dict[str, dict[str, int]]
    card: dict[str, int]
    factors: dict[str, Factor]
    ancestors: dict[str, frozenset[str]]
    descendants: dict[str, frozenset[str]]  # each node and its descendants
    # for nodes whose columns sum to 1 only up to rounding: (column sums, table / sums)
    sums: dict[str, tuple[np.ndarray, np.ndarray]]
    _rank: dict[str, int] | None = None

    @property
    def rank(self) -> dict[str, int]:
        """Position of each variable in the global elimination order (built on first use:
        only ``map_query`` needs it)."""
        if self._rank is None:
            order = greedy_order([f[1] for f in self.factors.values()], self.card)[0]
            self._rank = {v: i for i, v in enumerate(order)}
        return self._rank


def _compile(bn: BayesNet) -> _Compiled:
    key = tuple((n, id(c)) for n, c in bn.cpds.items()) + (tuple(bn.edges),)
    cached = getattr(bn, "_exact_cache", None)
    if cached is not None and cached.key == key:
        return cached
    bn.check()
    if not bn.is_discrete:
        bad = [n for n, c in bn.cpds.items() if not isinstance(c, TabularCPD)]
        raise CPDError(
            f"exact inference needs tabular CPDs on every node; not tabular: {bad[:5]}"
        )
    order = bn.topological_order()
    states, lookup, card, factors = {}, {}, {}, {}
    for n in order:
        cpd = bn.cpd(n)
        assert isinstance(cpd, TabularCPD)
        states[n] = list(cpd.states)
        lookup[n] = {str(s): i for i, s in enumerate(cpd.states)}
        card[n] = cpd.cardinality
        factors[n] = (cpd.factor(), (n, *cpd.parents))
    ancestors: dict[str, frozenset[str]] = {}
    for n in order:
        acc = {n}
        for p in bn.graph.predecessors(n):
            acc |= ancestors[p]
        ancestors[n] = frozenset(acc)
    descendants: dict[str, frozenset[str]] = {}
    for n in reversed(order):
        acc = {n}
        for ch in bn.graph.successors(n):
            acc |= descendants[ch]
        descendants[n] = frozenset(acc)
    sums = {}
    for n, (arr, _) in factors.items():
        s = arr.sum(axis=0)
        if np.abs(s - 1.0).max() > 1e-13:
            sums[n] = (s, arr / s)
    compiled = _Compiled(key, order, states, lookup, card, factors, ancestors, descendants,
                         sums)
    bn._exact_cache = compiled  # type: ignore[attr-defined]
    return compiled


# --- input checks ---------------------------------------------------------------------
def _known(c: _Compiled) -> str:
    """The network's variables, for error messages (the first 30 of a large network)."""
    names = sorted(c.card)
    more = f", ... ({len(names)} in all)" if len(names) > 30 else ""
    return f"; the network's variables are {', '.join(names[:30])}{more}"


def _check_query(c: _Compiled, variables: Sequence[str], evidence: Mapping[str, Any]) -> None:
    if isinstance(variables, str):
        raise EvidenceError(f"variables must be a list of names, got the string {variables!r}")
    if len(variables) == 0:
        raise EvidenceError("query needs at least one variable")
    if len(set(variables)) != len(variables):
        raise EvidenceError(f"a query variable is repeated: {list(variables)}")
    for v in variables:
        if v not in c.card:
            raise EvidenceError(f"unknown query variable {v!r}{_known(c)}")
    for v in evidence:
        if v not in c.card:
            raise EvidenceError(f"unknown evidence variable {v!r}{_known(c)}")
    both = [v for v in variables if v in evidence]
    if both:
        raise EvidenceError(f"variable {both[0]!r} is both queried and given as evidence")


def _state_index(c: _Compiled, var: str, state: Any) -> int:
    try:
        return c.lookup[var][str(state)]
    except KeyError:
        raise EvidenceError(
            f"unknown state {state!r} of variable {var!r}; its states are {c.states[var]}"
        ) from None


# --- variable elimination ---------------------------------------------------------------
def _reduce(c: _Compiled, nodes: Sequence[str], evidence: Mapping[str, int]) -> list[Factor]:
    """The CPD tables of ``nodes``, sliced at the evidence."""
    out = []
    for n in nodes:
        arr, scope = c.factors[n]
        if any(v in evidence for v in scope):
            idx = tuple(evidence[v] if v in evidence else slice(None) for v in scope)
            arr = arr[idx]
            scope = tuple(v for v in scope if v not in evidence)
        out.append((arr, scope))
    return out


def _einsum(factors: Sequence[Factor], out_scope: Sequence[str]) -> np.ndarray:
    letters: dict[str, int] = {}
    args: list[Any] = []
    for arr, scope in factors:
        args.append(arr)
        args.append([letters.setdefault(v, len(letters)) for v in scope])
    args.append([letters[v] for v in out_scope])
    return np.einsum(*args, optimize=len(factors) > 2)


def _eliminate(
    c: _Compiled,
    factors: list[Factor],
    keep: set[str],
    max_bytes: float,
    op: str = "sum",
    card: Mapping[str, int] | None = None,
    order: Sequence[str] | None = None,
) -> list[Factor]:
    """Sum (or max) out every variable not in ``keep`` (in ``order``, default the greedy
    one); returns the remaining factors."""
    card = c.card if card is None else card
    bucket: dict[str, list[int]] = {}
    live: dict[int, Factor] = {}
    for i, f in enumerate(factors):
        live[i] = f
        for v in f[1]:
            bucket.setdefault(v, []).append(i)
    next_id = len(factors)
    if order is None:
        order = elimination_order([f[1] for f in factors], card, keep)
    for v in order:
        ids = [i for i in bucket[v] if i in live]
        if not ids:
            continue
        involved = [live.pop(i) for i in ids]
        scope: list[str] = []
        for _, s in involved:
            scope.extend(u for u in s if u != v and u not in scope)
        size = 8 * card[v] * math.prod(card[u] for u in scope)
        if size > max_bytes:
            raise QueryTooLargeError(
                f"eliminating {v!r} needs a table of {size / 2**30:.1f} GiB over "
                f"{len(scope) + 1} variables (limit {max_bytes / 2**30:.1f} GiB); "
                "query fewer variables or give more evidence"
            )
        if op == "sum":
            new = _einsum(involved, scope)
        else:
            joint = _einsum(involved, [v, *scope])
            new = joint.max(axis=0)
        live[next_id] = (new, tuple(scope))
        for u in scope:
            bucket[u].append(next_id)
        next_id += 1
    return list(live.values())


def _soft_evidence(c: _Compiled, item: Any) -> tuple[str, np.ndarray]:
    """One virtual-evidence item -> (variable, likelihood per state in the network's order)."""
    if hasattr(item, "variable") and hasattr(item, "parents"):  # probgen's TabularCPD
        if item.parents:
            raise EvidenceError(f"virtual_evidence: the CPD of {item.variable!r} has parents; "
                                "soft evidence is a table over one variable")
        var, states, lam = item.variable, list(item.states), item.values[:, 0]
    elif hasattr(item, "variables") and hasattr(item, "state_names"):  # pgmpy's CPD / factor
        if len(item.variables) != 1:
            raise EvidenceError(f"virtual_evidence: {list(item.variables)} is over several "
                                "variables; soft evidence is a table over one variable")
        var = item.variables[0]
        states, lam = list(item.state_names[var]), np.asarray(item.values, dtype=float).ravel()
    else:
        raise EvidenceError(f"virtual_evidence: expected TabularCPD or DiscreteFactor items, "
                            f"got {type(item).__name__}")
    if var not in c.card:
        raise EvidenceError(f"virtual_evidence: unknown variable {var!r}{_known(c)}")
    if len(lam) != c.card[var] or len(states) != c.card[var]:
        raise EvidenceError(f"virtual_evidence: {var!r} has {c.card[var]} states, the soft "
                            f"evidence gives {len(lam)}")
    idx = [_state_index(c, var, st) for st in states]
    if sorted(idx) != list(range(c.card[var])):
        raise EvidenceError(f"virtual_evidence: the states of {var!r} {states} are not the "
                            f"network's {c.states[var]}")
    if not (np.isfinite(lam).all() and (lam >= 0).all() and lam.sum() > 0):
        raise EvidenceError(f"virtual_evidence: the likelihoods of {var!r} must be finite, "
                            ">= 0 and not all 0")
    out = np.empty(c.card[var])
    out[idx] = lam
    return var, out


def _virtual_factors(c: _Compiled, virtual_evidence: Sequence[Any] | None) -> list[Factor]:
    """Soft evidence as one likelihood factor per variable (Mrad et al. 2012: a virtual child
    observed in state 0, which is what pgmpy adds)."""
    out: list[Factor] = []
    for item in virtual_evidence or ():
        var, lam = _soft_evidence(c, item)
        if any(scope == (var,) for _, scope in out):
            raise EvidenceError(f"virtual_evidence: {var!r} is given twice")
        out.append((lam, (var,)))
    return out


def _prepared(
    bn: BayesNet,
    variables: Sequence[str],
    evidence: Mapping[str, Hashable],
    virtual_evidence: Sequence[Any] | None,
    order_spec: str | Sequence[str] | None,
) -> tuple[_Compiled, list[Factor], list[str]]:
    """The evidence-reduced factors of the relevant nodes (soft evidence included) and the
    order in which to eliminate the non-query variables."""
    c = _compile(bn)
    _check_query(c, variables, evidence)
    ev = {v: _state_index(c, v, s) for v, s in evidence.items()}
    soft = _virtual_factors(c, virtual_evidence)
    relevant: set[str] = set()
    for v in (*variables, *ev, *(scope[0] for _, scope in soft)):
        relevant |= c.ancestors[v]
    factors = _reduce(c, [n for n in c.nodes if n in relevant], ev)
    factors += _reduce_soft(soft, ev)
    keep = set(variables)
    order = resolve_order(order_spec, [f[1] for f in factors], c.card, keep, given=ev,
                          nodes=c.nodes)
    return c, factors, order


def _reduce_soft(soft: list[Factor], ev: Mapping[str, int]) -> list[Factor]:
    return [(lam[ev[v]], ()) if v in ev else (lam, (v,)) for lam, (v,) in soft]


def _posterior(
    bn: BayesNet,
    variables: Sequence[str],
    evidence: Mapping[str, Hashable] | None,
    max_bytes: float,
    virtual_evidence: Sequence[Any] | None = None,
    order_spec: str | Sequence[str] | None = None,
) -> tuple[_Compiled, np.ndarray]:
    """Normalised joint posterior over ``variables`` (axes in that order)."""
    evidence = dict(evidence or {})
    c, factors, order = _prepared(bn, variables, evidence, virtual_evidence, order_spec)
    rest = _eliminate(c, factors, set(variables), max_bytes, order=order)
    table = _einsum(rest, list(variables)) if rest else np.ones([c.card[v] for v in variables])
    z = table.sum()
    if not z > 0:
        raise EvidenceError(f"the evidence {evidence} has probability zero")
    return c, table / z


def query(
    bn: BayesNet,
    variables: Sequence[str],
    evidence: Mapping[str, Hashable] | None = None,
    *,
    joint: bool = True,
    max_bytes: float = DEFAULT_MAX_BYTES,
    elimination_order: str | Sequence[str] | None = None,
    virtual_evidence: Sequence[Any] | None = None,
) -> Any:
    """Posterior over ``variables`` given ``evidence``, as a pgmpy ``DiscreteFactor``.

    With ``joint=False`` returns ``{variable: DiscreteFactor}`` marginals, as pgmpy does.

    Args:
        elimination_order: as pgmpy's ``VariableElimination.query``: a heuristic name
            (``"MinFill"``, ``"MinWeight"``, ``"MinNeighbors"``, ``"WeightedMinFill"``,
            ``"greedy"``, the default) or an explicit list of the variables to sum out (see
            [`resolve_order`][probgen.infer.elimination.resolve_order]). Exact either way;
            the order only changes the cost.
        virtual_evidence: soft evidence, as pgmpy: one single-variable ``TabularCPD``
            (probgen's or pgmpy's) or ``DiscreteFactor`` per variable whose values are the
            likelihoods ``p(observation | state)`` (Mrad et al. 2012, "Uncertain evidence in
            Bayesian networks").

    Raises:
        EvidenceError: unknown variable or state, a variable in both query and evidence,
            or evidence of probability zero.
        QueryTooLargeError: the contraction would exceed ``max_bytes``.
    """
    from pgmpy.factors.discrete import DiscreteFactor

    variables = list(variables) if not isinstance(variables, str) else variables
    c, table = _posterior(bn, variables, evidence, max_bytes, virtual_evidence,
                          elimination_order)

    def factor(vs: list[str], values: np.ndarray) -> Any:
        return DiscreteFactor(
            vs, [c.card[v] for v in vs], values, state_names={v: c.states[v] for v in vs}
        )

    if joint:
        return factor(list(variables), table)
    out = {}
    for i, v in enumerate(variables):
        axes = tuple(j for j in range(len(variables)) if j != i)
        out[v] = factor([v], table.sum(axis=axes))
    return out


def map_query(
    bn: BayesNet,
    variables: Sequence[str] | None = None,
    evidence: Mapping[str, Hashable] | None = None,
    *,
    max_bytes: float = DEFAULT_MAX_BYTES,
    elimination_order: str | Sequence[str] | None = None,
    virtual_evidence: Sequence[Any] | None = None,
) -> dict[str, Hashable]:
    """Most probable joint state of ``variables`` (default: all unobserved) given evidence.

    Non-query variables are summed out first (in ``elimination_order``), then the query
    variables are maxed out with a traceback (marginal MAP), so the joint table over
    ``variables`` is never built. ``elimination_order`` and ``virtual_evidence`` are as in
    [`query`][probgen.infer.exact.query].
    """
    c = _compile(bn)
    evidence = dict(evidence or {})
    if variables is None:
        variables = [n for n in c.nodes if n not in evidence]
    variables = list(variables)
    c, factors, order = _prepared(bn, variables, evidence, virtual_evidence, elimination_order)
    factors = _eliminate(c, factors, set(variables), max_bytes, order=order)
    # max-product over the query variables, remembering each argmax table
    order = sorted(variables, key=c.rank.__getitem__)
    traces: list[tuple[str, list[str], np.ndarray]] = []
    live = list(factors)
    for v in order:
        involved = [f for f in live if v in f[1]]
        live = [f for f in live if v not in f[1]]
        scope: list[str] = []
        for _, s in involved:
            scope.extend(u for u in s if u != v and u not in scope)
        size = 8 * c.card[v] * math.prod(c.card[u] for u in scope)
        if size > max_bytes:
            raise QueryTooLargeError(f"maxing out {v!r} needs {size / 2**30:.1f} GiB")
        joint = _einsum(involved, [v, *scope]) if involved else np.ones(c.card[v])
        traces.append((v, scope, joint.argmax(axis=0)))
        live.append((joint.max(axis=0), tuple(scope)))
    best = math.prod(float(np.asarray(a)) for a, _ in live)
    if not best > 0:
        raise EvidenceError(f"the evidence {evidence} has probability zero")
    assignment: dict[str, int] = {}
    for v, scope, arg in reversed(traces):
        assignment[v] = int(arg[tuple(assignment[u] for u in scope)])
    return {v: c.states[v][assignment[v]] for v in variables}


# --- batched queries -------------------------------------------------------------------
def _code_of(c: _Compiled, var: str, value: Any) -> int:
    """State index of one observed value (``str`` key; ``1.0`` counts as ``"1"``), -2 if none."""
    if not isinstance(value, str):
        if isinstance(value, float | np.floating) and float(value).is_integer():
            value = int(value)  # 1.0 -> "1" when NaN made the column float
        value = str(value)
    return c.lookup[var].get(value, -2)


def _evidence_codes(c: _Compiled, evidence: Any) -> dict[str, np.ndarray]:
    """Column -> integer state codes, -1 where unobserved (None/NaN).

    Sparse evidence (each record observes a few variables) is read from one object array:
    the observed values of all the columns with few of them are coded in one pass of
    dictionary look-ups, a dense column by pandas' hashing (``get_indexer``); per-column
    pandas calls, not the look-ups, are what costs on a wide table.
    """
    import pandas as pd

    if not isinstance(evidence, pd.DataFrame):
        raise EvidenceError(
            f"evidence must be a pandas DataFrame, got {type(evidence).__name__}"
        )
    for col in evidence.columns:
        if col not in c.card:
            raise EvidenceError(f"unknown evidence variable {col!r} (a DataFrame column)"
                                f"{_known(c)}")
    columns = list(evidence.columns)
    values = evidence.to_numpy(dtype=object)  # (rows, columns)
    seen = ~pd.isna(values)
    sparse = seen.sum(axis=0) <= _SPARSE_COLUMN
    codes = np.full((len(columns), len(evidence)), -1, dtype=np.int64)  # (columns, rows)
    # the sparse columns together: one dictionary look-up per observed value
    rows, cols = np.nonzero(seen & sparse)
    lookups = [c.lookup[col] for col in columns]
    codes[cols, rows] = [
        lookups[j].get(v, -2) if type(v) is str else _code_of(c, columns[j], v)
        for v, j in zip(values[rows, cols].tolist(), cols.tolist())
    ]
    for j in np.flatnonzero(~sparse):  # dense columns: pandas' hashing
        col = columns[j]
        where = np.flatnonzero(seen[:, j])
        present = pd.Series(values[where, j])
        if not all(isinstance(v, str) for v in present.iloc[:1]):
            if present.map(lambda v: isinstance(v, float | np.floating)).all() and \
                    np.all(np.mod(present.to_numpy(dtype=float), 1) == 0):
                present = present.astype(np.int64)  # 1.0 -> "1" when NaN made it float
            present = present.astype(str)
        found = pd.Index([str(st) for st in c.states[col]]).get_indexer(present)
        codes[j, where] = np.where(found < 0, -2, found)
    if (codes == -2).any():
        j = int(np.flatnonzero((codes == -2).any(axis=1))[0])
        row = int(np.flatnonzero(codes[j] == -2)[0])
        col = columns[j]
        raise EvidenceError(
            f"unknown state {evidence[col].iloc[row]!r} of variable {col!r} in row {row}; "
            f"its states are {c.states[col]}"
        )
    return {col: codes[j] for j, col in enumerate(columns)}


#: Columns with at most this many observed values are coded value by value.
_SPARSE_COLUMN = 256


#: A factor of a batched query: (array, scope, batched); a batched array has one more,
#: last axis, the record index.
_BFactor = tuple[np.ndarray, tuple[str, ...], bool]


def _views(factors: Sequence[_BFactor], axes: Sequence[str], n_rows: int) -> list[np.ndarray]:
    """Each factor as a view over ``axes`` (+ the record axis, last, when any factor is
    batched): its axes permuted into ``axes`` order, unit axes for the variables it lacks."""
    pos = {u: i for i, u in enumerate(axes)}
    batched = any(f[2] for f in factors)
    out = []
    for arr, scope, b in factors:
        perm = sorted(range(len(scope)), key=lambda i: pos[scope[i]])
        shape = [1] * len(axes)
        for i in perm:
            shape[pos[scope[i]]] = arr.shape[i]
        if b:
            perm.append(len(scope))
            shape.append(n_rows)
        elif batched:
            shape.append(1)
        out.append(arr.transpose(perm).reshape(shape))
    return out


def _multiply(views: Sequence[np.ndarray]) -> np.ndarray:
    """Broadcast product, smallest operands first (so small partial products stay small)."""
    views = sorted(views, key=lambda a: a.size)
    out = views[0]
    for w in views[1:]:
        out = out * w
    return out


def _sum_product(factors: Sequence[_BFactor], v: str, scope: Sequence[str],
                 n_rows: int) -> np.ndarray:
    """``sum_v prod(factors)`` over ``scope`` (+ the record axis, last, when batched).

    The batched factors are multiplied together, the unbatched (small) ones together, and
    the two partial products meet in one multiply-add per state of ``v``, so the product
    over all the variables is never stored whole."""
    views = _views(factors, [v, *scope], n_rows)
    rows = [w for w, f in zip(views, factors) if f[2]]
    small = [w for w, f in zip(views, factors) if not f[2]]
    if not small:
        rows.sort(key=lambda a: a.size)
        small = rows[-1:]
        rows = rows[:-1]
    if not rows:
        return _multiply(small).sum(axis=0)
    a, b = _multiply(rows), _multiply(small)
    if a.shape[0] == 1:
        return a[0] * b.sum(axis=0)
    if b.shape[0] == 1:
        return a.sum(axis=0) * b[0]
    out = a[0] * b[0]
    for s in range(1, a.shape[0]):
        out += a[s] * b[s]
    return out


def _eliminate_batched(
    c: _Compiled, factors: list[_BFactor], keep: set[str], n_rows: int, max_bytes: float
) -> list[_BFactor]:
    """Sum out every variable not in ``keep`` from batched factors (the greedy order, the
    record axis counted as a variable of ``n_rows`` states); returns the remaining factors."""
    batch = "__row__"
    card = {**c.card, batch: n_rows}
    scopes = [(*s, batch) if b else s for _, s, b in factors]
    order = elimination_order(scopes, card, keep | {batch})
    bucket: dict[str, list[int]] = {}
    live: dict[int, _BFactor] = {}
    for i, f in enumerate(factors):
        live[i] = f
        for v in f[1]:
            bucket.setdefault(v, []).append(i)
    next_id = len(factors)
    for v in order:
        ids = [i for i in bucket.get(v, ()) if i in live]
        if not ids:
            continue
        involved = [live.pop(i) for i in ids]
        scope: list[str] = []
        for _, s, _ in involved:
            scope.extend(u for u in s if u != v and u not in scope)
        batched = any(f[2] for f in involved)
        size = 8 * card[v] * math.prod(card[u] for u in scope) * (n_rows if batched else 1)
        if size > max_bytes:
            raise QueryTooLargeError(
                f"eliminating {v!r} needs a table of {size / 2**30:.1f} GiB over "
                f"{len(scope) + 1 + batched} variables (limit {max_bytes / 2**30:.1f} GiB); "
                "query fewer variables or give more evidence"
            )
        new = _sum_product(involved, v, scope, n_rows)
        live[next_id] = (new, tuple(scope), batched)
        for u in scope:
            bucket[u].append(next_id)
        next_id += 1
    return list(live.values())



def _batch_table(
    bn: BayesNet, variables: Sequence[str], evidence: Any, max_bytes: float
) -> tuple[_Compiled, np.ndarray]:
    """Unnormalised ``p(variables, e_b)`` for each row b: shape ``(B, *cards)``."""
    c = _compile(bn)
    codes = _evidence_codes(c, evidence)
    n_rows = len(evidence)
    observed = {v: x for v, x in codes.items() if (x >= 0).any()}
    for v in variables:
        if v not in c.card:
            raise EvidenceError(f"unknown query variable {v!r}{_known(c)}")
        if v in observed:
            raise EvidenceError(
                f"variable {v!r} is both queried and observed in the evidence column {v!r}"
            )
    relevant: set[str] = set()
    for v in (*variables, *observed):
        relevant |= c.ancestors[v]
    # Batched factors carry the record axis last (contiguous), so every product below is a
    # broadcast multiply whose inner loop runs over the records.
    factors: list[_BFactor] = []
    for n in c.nodes:
        if n not in relevant:
            continue
        arr, scope = c.factors[n]
        if n not in c.sums:
            factors.append((arr, scope, False))
            continue
        # A node none of whose descendants is queried or observed in a row is barren for
        # that row: single queries prune it, so it must count as exactly 1 there even when
        # the CPD's columns sum to 1 only up to rounding (e.g. BIF tables with 1e-7 slack).
        active = np.zeros(n_rows, dtype=bool)
        if c.descendants[n] & set(variables):
            active[:] = True
        else:
            for v in c.descendants[n] & set(observed):
                active |= codes[v] >= 0
        colsum, normalised = c.sums[n]
        if active.all():
            factors.append((arr, scope, False))
        elif not active.any():
            factors.append((normalised, scope, False))
        else:
            factors.append((normalised, scope, False))
            weight = np.where(active, colsum[..., None], 1.0)  # (*parent cards, rows)
            factors.append((weight, scope[1:], True))
    for v, x in observed.items():
        # column s of [identity, ones] is the indicator of state s; code -1 (unobserved)
        # picks the last column, all ones
        table = np.ones((c.card[v], c.card[v] + 1))
        table[:, :-1] = np.eye(c.card[v])
        factors.append((table[:, x], (v,), True))
    rest = _eliminate_batched(c, factors, set(variables), n_rows, max_bytes)
    rest.append((np.ones(n_rows), (), True))
    table = _multiply(_views(rest, list(variables), n_rows))
    table = np.ascontiguousarray(np.moveaxis(table, -1, 0))  # (rows, *cards)
    return c, table


def query_batch(
    bn: BayesNet,
    variables: Sequence[str],
    evidence: Any,
    *,
    max_bytes: float = DEFAULT_MAX_BYTES,
) -> torch.Tensor:
    """Posteriors of ``variables`` for every record of ``evidence``.

    Args:
        variables: query variables.
        evidence: a pandas DataFrame, one column per observed variable, one row per
            record; ``None``/``NaN`` marks a value that is not observed in that record.

    Returns:
        A float64 tensor of shape ``(n_records, *cardinalities)``; row ``b`` is
        ``p(variables | evidence row b)``.
    """
    if isinstance(variables, str):
        raise EvidenceError(f"variables must be a list of names, got {variables!r}")
    variables = list(variables)
    if not variables:
        raise EvidenceError("query_batch needs at least one variable")
    c, table = _batch_table(bn, variables, evidence, max_bytes)
    z = table.reshape(table.shape[0], -1).sum(axis=1)
    bad = np.flatnonzero(~(z > 0))
    if bad.size:
        row = int(bad[0])
        record = {k: v for k, v in evidence.iloc[row].items() if v is not None and v == v}
        raise EvidenceError(f"evidence row {row} {record} has probability zero")
    return torch.from_numpy(table / z.reshape(-1, *([1] * len(variables))))


def log_prob(bn: BayesNet, data: Any, *, max_bytes: float = DEFAULT_MAX_BYTES) -> torch.Tensor:
    """``log p(row)`` for each row of a DataFrame; missing entries are summed out exactly.

    Columns must name network variables; variables without a column count as missing.
    """
    c = _compile(bn)
    codes = _evidence_codes(c, data)
    n_rows = len(data)
    complete = all(v in codes for v in c.nodes) and all((codes[v] >= 0).all() for v in c.nodes)
    if complete:
        total = np.zeros(n_rows)
        with np.errstate(divide="ignore"):
            for n in c.nodes:
                arr, scope = c.factors[n]
                total += np.log(arr[tuple(codes[v] for v in scope)])
        return torch.from_numpy(total)
    _, table = _batch_table(bn, [], data, max_bytes)
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(table.reshape(n_rows)))
