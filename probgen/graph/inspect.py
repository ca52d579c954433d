"""Questions about a network's structure: d-separation, active trails, Markov blankets and
the Markov factorisation. These read only the DAG (and CPD descriptions), never numbers.

Latent nodes are ordinary nodes here: d-separation is a property of the graph, so
[`active_trail_nodes`][probgen.graph.inspect.active_trail_nodes] returns latent nodes too (pgmpy
drops them unless asked with ``include_latents=True``).

Examples:
    >>> from probgen.graph import BayesNet
    >>> bn = BayesNet([("Cloudy", "Rain"), ("Cloudy", "Sprinkler"),
    ...                ("Rain", "Wet"), ("Sprinkler", "Wet")])
    >>> is_dseparated(bn, "Rain", "Sprinkler", given=["Cloudy"])
    True
    >>> is_dseparated(bn, "Rain", "Sprinkler", given=["Cloudy", "Wet"])
    False
    >>> sorted(markov_blanket(bn, "Rain"))
    ['Cloudy', 'Sprinkler', 'Wet']
    >>> print(factorization(bn))  # doctest: +NORMALIZE_WHITESPACE
    p(Cloudy, Rain, Sprinkler, Wet) = p(Cloudy) p(Rain | Cloudy) p(Sprinkler | Cloudy)
    p(Wet | Rain, Sprinkler)
"""

from __future__ import annotations

from collections.abc import Iterable

from probgen.errors import GraphError
from probgen.graph.bayesnet import BayesNet

__all__ = ["is_dseparated", "active_trail_nodes", "markov_blanket", "factorization"]


def _names(bn: BayesNet, nodes: str | Iterable[str], what: str) -> set[str]:
    """``nodes`` (a name or an iterable of names) as a set; unknown names raise."""
    items = [nodes] if isinstance(nodes, str) else list(nodes)
    for n in items:
        if n not in bn.graph:
            raise GraphError(f"unknown {what} node {n!r} in network {bn.name!r}")
    return set(items)


def active_trail_nodes(bn: BayesNet, x: str, observed: Iterable[str] = ()) -> set[str]:
    """Every node reachable from ``x`` by an active trail given ``observed``.

    The reachable algorithm of Koller & Friedman (2009), Algorithm 3.1: first mark the
    observed nodes and their ancestors (a v-structure ``a -> b <- c`` is open when ``b``
    or one of its descendants is observed), then search over (node, direction) pairs,
    where "up" means the trail arrived from a child and "down" from a parent. ``x`` itself
    is included unless observed; observed nodes are never included.

    Raises:
        GraphError: an unknown node name.

    Examples:
        >>> from probgen.graph import BayesNet
        >>> bn = BayesNet([("A", "C"), ("B", "C")])
        >>> sorted(active_trail_nodes(bn, "A")), sorted(active_trail_nodes(bn, "A", ["C"]))
        (['A', 'C'], ['A', 'B'])
    """
    if not isinstance(x, str):
        raise GraphError(f"active_trail_nodes takes one start node, got {x!r}")
    _names(bn, x, "start")
    obs = _names(bn, observed, "observed")
    g = bn.graph
    # phase 1: observed nodes and their ancestors
    opens_v: set[str] = set()
    frontier = list(obs)
    while frontier:
        n = frontier.pop()
        if n not in opens_v:
            opens_v.add(n)
            frontier.extend(g.predecessors(n))
    # phase 2: traverse active trails
    reachable: set[str] = set()
    visited: set[tuple[str, str]] = set()
    stack = [(x, "up")]
    while stack:
        node, direction = stack.pop()
        if (node, direction) in visited:
            continue
        visited.add((node, direction))
        if node not in obs:
            reachable.add(node)
        if direction == "up" and node not in obs:
            stack.extend((p, "up") for p in g.predecessors(node))
            stack.extend((c, "down") for c in g.successors(node))
        elif direction == "down":
            if node not in obs:
                stack.extend((c, "down") for c in g.successors(node))
            if node in opens_v:
                stack.extend((p, "up") for p in g.predecessors(node))
    return reachable


def is_dseparated(
    bn: BayesNet, x: str | Iterable[str], y: str | Iterable[str], given: Iterable[str] = ()
) -> bool:
    """True when ``x`` and ``y`` (names or sets of names) are d-separated given ``given``.

    Raises:
        GraphError: an unknown node, an empty ``x`` or ``y``, or sets that overlap (a
            variable cannot be independent of itself, nor is it asked given itself).

    Examples:
        >>> from probgen.graph import BayesNet
        >>> bn = BayesNet([("A", "B"), ("B", "C")])
        >>> is_dseparated(bn, "A", "C"), is_dseparated(bn, {"A"}, {"C"}, given=["B"])
        (False, True)
    """
    xs, ys, zs = _names(bn, x, "x"), _names(bn, y, "y"), _names(bn, given, "given")
    if not xs or not ys:
        raise GraphError("is_dseparated needs at least one node in x and in y")
    for a, b, sa, sb in ((xs, ys, "x", "y"), (xs, zs, "x", "given"), (ys, zs, "y", "given")):
        common = a & b
        if common:
            raise GraphError(
                f"{sa} and {sb} share the nodes {sorted(common)}; they must be disjoint"
            )
    return all(not (active_trail_nodes(bn, n, zs) & ys) for n in xs)


def markov_blanket(bn: BayesNet, node: str) -> set[str]:
    """Parents, children and the children's other parents of ``node``.

    Given its Markov blanket, a node is independent of every other node.

    Examples:
        >>> from probgen.graph import BayesNet
        >>> sorted(markov_blanket(BayesNet([("A", "B"), ("C", "B"), ("B", "D")]), "A"))
        ['B', 'C']
    """
    _names(bn, node, "")
    g = bn.graph
    out = set(g.predecessors(node)) | set(g.successors(node))
    for c in g.successors(node):
        out |= set(g.predecessors(c))
    out.discard(node)
    return out


def _factor(bn: BayesNet, node: str) -> str:
    parents = bn.parents(node)
    return f"p({node} | {', '.join(parents)})" if parents else f"p({node})"


def factorization(bn: BayesNet) -> str:
    """The Markov factorisation ``p(all) = prod_i p(x_i | parents(x_i))`` as text.

    The first line is the formula, in topological order with each node's parents in its
    CPD's column order. Below it comes one indented line per node whose CPD describes
    itself more precisely than ``p(x | parents)`` (a linear-Gaussian formula, a neural
    module's name) and per CPD-less node with a ``description`` attribute (skeletons).
    A network of plain tables prints one line.

    Examples:
        >>> from probgen.graph import BayesNet, LinearGaussianCPD
        >>> bn = BayesNet.from_cpds([LinearGaussianCPD("z"),
        ...     LinearGaussianCPD("x", parents=["z"], weights=[2.0], bias=1.0, std=0.5)])
        >>> print(factorization(bn))
        p(z, x) = p(z) p(x | z)
          z ~ N(0, 1^2)
          x ~ N(1 + 2*z, 0.5^2)
    """
    order = bn.topological_order()
    lines = [f"p({', '.join(order)}) = " + " ".join(_factor(bn, n) for n in order)]
    cpds = bn.cpds
    for n in order:
        cpd = cpds.get(n)
        if cpd is not None:
            text = cpd.describe()
            if text != _factor(bn, n):
                lines.append(f"  {text}")
        elif bn.graph.nodes[n].get("description"):
            lines.append(f"  {n}: {bn.graph.nodes[n]['description']}")
    return "\n".join(lines)
