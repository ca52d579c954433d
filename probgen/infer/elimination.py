"""Elimination orders for exact inference: which variable to sum out next.

The cost of variable elimination is the size of the largest table it builds, which depends
only on the order. Finding the best order is NP-hard; the two classic greedy heuristics
(Koller & Friedman, Probabilistic Graphical Models, Section 9.4.3) work on the
*interaction graph* (an edge between two variables that share a factor):

- min-weight: next, the variable whose new table (it and its neighbours) is smallest;
- min-fill: next, the variable whose elimination adds the fewest new edges;
- min-neighbours: next, the variable with the fewest neighbours;
- weighted min-fill: next, the variable whose new edges weigh least (an edge weighs the
  product of its two cardinalities).

[`resolve_order`][probgen.infer.elimination.resolve_order] turns what a user passes as
``elimination_order`` (pgmpy's names ``"MinFill"``, ``"MinWeight"``, ``"MinNeighbors"``,
``"WeightedMinFill"``, ``"greedy"``, or an explicit list) into an order.

[`elimination_order`][probgen.infer.elimination.elimination_order] uses min-weight and, when that
order would build a large table, also tries min-fill and keeps the smaller (the diabetes network
needs it).

Examples:
    >>> order, log_size = greedy_order([("a", "b"), ("b", "c"), ("c", "d")],
    ...                                {"a": 2, "b": 2, "c": 2, "d": 2})
    >>> order
    ['a', 'b', 'c', 'd']
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from probgen.errors import EvidenceError

__all__ = ["greedy_order", "elimination_order", "resolve_order", "HEURISTICS"]

#: pgmpy's heuristic names (case-insensitive) -> the ``criterion`` of ``greedy_order``;
#: ``"greedy"`` is probgen's default order.
HEURISTICS = {"minfill": "fill", "minweight": "weight", "minneighbors": "neighbors",
              "weightedminfill": "weighted_fill", "greedy": "default"}


def greedy_order(
    scopes: Iterable[Sequence[str]],
    card: Mapping[str, int],
    keep: Iterable[str] = (),
    criterion: str = "weight",
) -> tuple[list[str], float]:
    """Greedy elimination order of the variables not in ``keep`` on the interaction graph.

    ``criterion="weight"`` eliminates first the variable whose new table is smallest
    (min-weight); ``"fill"`` the one adding the fewest new edges (min-fill, ties by weight);
    ``"neighbors"`` the one with the fewest neighbours; ``"weighted_fill"`` the one whose
    new edges have the smallest summed weight (product of the two cardinalities).
    Returns the order and the log of the largest table it builds.

    Examples:
        >>> greedy_order([("a", "b"), ("b", "c")], {"a": 2, "b": 3, "c": 2})
        (['a', 'b', 'c'], 1.791759469228055)
    """
    nbrs: dict[str, set[str]] = {}
    for scope in scopes:
        for v in scope:
            nbrs.setdefault(v, set()).update(u for u in scope if u != v)
    log_card = {v: math.log(card[v]) for v in nbrs}

    def weight(v: str) -> float:
        return log_card[v] + sum(log_card[u] for u in nbrs[v])

    def fill(v: str) -> int:
        ns = list(nbrs[v])
        return sum(1 for i, a in enumerate(ns) for b in ns[i + 1:] if b not in nbrs[a])

    def weighted_fill(v: str) -> float:
        ns = list(nbrs[v])
        return sum(card[a] * card[b] for i, a in enumerate(ns) for b in ns[i + 1:]
                   if b not in nbrs[a])

    def cost(v: str) -> tuple:
        if criterion == "fill":
            return (fill(v), weight(v))
        if criterion == "weighted_fill":
            return (weighted_fill(v), weight(v))
        if criterion == "neighbors":
            return (len(nbrs[v]), weight(v))
        return (weight(v),)

    if criterion not in ("weight", "fill", "weighted_fill", "neighbors"):
        raise ValueError(f"criterion: unknown {criterion!r}")

    keep = set(keep)
    remaining = {v for v in nbrs if v not in keep}
    costs = {v: cost(v) for v in remaining}
    order: list[str] = []
    largest = 0.0
    while remaining:
        v = min(remaining, key=lambda u: (costs[u], u))
        largest = max(largest, weight(v))
        order.append(v)
        remaining.discard(v)
        ns = nbrs.pop(v)
        for u in ns:
            nbrs[u].discard(v)
            nbrs[u].update(w for w in ns if w != u)
        touched = set(ns)
        if criterion in ("fill", "weighted_fill"):  # fill counts change two steps away
            for u in ns:
                touched |= nbrs[u]
        for u in touched:
            if u in remaining:
                costs[u] = cost(u)
    return order, largest


#: Above this many table entries (log), the min-fill order is tried beside min-weight.
_TRY_MIN_FILL_ABOVE = math.log(2**22)


def elimination_order(
    scopes: list[Sequence[str]], card: Mapping[str, int], keep: Iterable[str] = ()
) -> list[str]:
    """Min-weight order; for hard queries, min-fill instead when it builds smaller tables.

    Examples:
        >>> elimination_order([("a", "b"), ("b", "c")], {"a": 2, "b": 3, "c": 2}, keep=["c"])
        ['a', 'b']
    """
    order, largest = greedy_order(scopes, card, keep, "weight")
    if largest > _TRY_MIN_FILL_ABOVE:
        other, other_largest = greedy_order(scopes, card, keep, "fill")
        if other_largest < largest:
            return other
    return order


def resolve_order(
    spec: str | Sequence[str] | None,
    scopes: list[Sequence[str]],
    card: Mapping[str, int],
    keep: Iterable[str],
    given: Iterable[str] = (),
    nodes: Iterable[str] = (),
) -> list[str]:
    """The order in which to eliminate every variable of ``scopes`` not in ``keep``.

    ``spec`` is ``None`` or ``"greedy"`` (the default
    [`elimination_order`][probgen.infer.elimination.elimination_order]), one of pgmpy's
    heuristic names (case-insensitive), or an explicit list of variables. A list must not
    name query or evidence variables (``given``) or unknown ones (``nodes`` are the
    network's) and must not repeat; the variables it leaves out (e.g. barren ones pruned
    here) are skipped when not needed, or eliminated after the list in the default order.

    Raises:
        EvidenceError: an unknown heuristic, or a list that breaks the rules above.

    Examples:
        >>> resolve_order("MinNeighbors", [("a", "b"), ("b", "c")], {"a": 2, "b": 2, "c": 2},
        ...               keep=["c"])
        ['a', 'b']
        >>> resolve_order(["b", "a"], [("a", "b"), ("b", "c")], {"a": 2, "b": 2, "c": 2},
        ...               keep=["c"])
        ['b', 'a']
    """
    keep = set(keep)
    if spec is None or isinstance(spec, str):
        name = "greedy" if spec is None else spec.lower()
        if name not in HEURISTICS:
            raise EvidenceError(
                f"elimination_order: unknown heuristic {spec!r}; choose one of "
                "'MinFill', 'MinWeight', 'MinNeighbors', 'WeightedMinFill', 'greedy' or a list")
        if HEURISTICS[name] == "default":
            return elimination_order(scopes, card, keep)
        return greedy_order(scopes, card, keep, HEURISTICS[name])[0]
    order = list(spec)
    known, fixed = set(nodes), set(keep) | set(given)
    for v in order:
        if v in fixed:
            raise EvidenceError(
                f"elimination_order: {v!r} is a query or evidence variable, not one to eliminate")
        if known and v not in known:
            raise EvidenceError(f"elimination_order: unknown variable {v!r}")
    if len(set(order)) != len(order):
        raise EvidenceError("elimination_order: a variable is listed twice")
    present = {v for scope in scopes for v in scope} - keep
    listed = [v for v in order if v in present]
    rest = [v for v in elimination_order(scopes, card, keep) if v not in set(listed)]
    return listed + rest
