"""The BayesNet: a DAG (networkx) whose nodes carry conditional distributions.

The class stores structure and CPDs and validates them. Questions about the graph live in
[`probgen.graph.inspect`][probgen.graph.inspect], drawing in
[`probgen.graph.draw`][probgen.graph.draw], file I/O in [`probgen.graph.io`][probgen.graph.io];
inference, learning and sampling live in the layers above and are reached through thin methods
(``query``, ``fit``, ``sample``, ``log_prob``) so that users can write ``bn.query(...)`` as they
would with pgmpy.

Examples:
    >>> from probgen.graph import BayesNet, TabularCPD
    >>> bn = BayesNet([("Rain", "Wet")])
    >>> bn.add_cpds(
    ...     TabularCPD("Rain", [0.8, 0.2], states=["no", "yes"]),
    ...     TabularCPD("Wet", [[0.9, 0.1], [0.1, 0.9]], states=["no", "yes"],
    ...                parents=["Rain"], parent_states={"Rain": ["no", "yes"]}))
    >>> bn.check()
    >>> print(bn.factorization())
    p(Rain, Wet) = p(Rain) p(Wet | Rain)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import networkx as nx

from probgen.errors import CPDError, EvidenceError, GraphError
from probgen.graph.cpd import CPD, TabularCPD

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

__all__ = ["BayesNet"]


class BayesNet:
    """A Bayesian network: nodes, directed edges, one CPD per node, optional plates.

    Args:
        edges: ``(parent, child)`` pairs.
        nodes: extra nodes (e.g. isolated roots).
        name: a label used in drawings and messages.

    Node attributes (set with [`add_node`][probgen.graph.bayesnet.BayesNet.add_node]): ``latent``
    (shaded differently when drawn; missing from data), ``plate`` (the name of a plate the node sits
    in) and ``label`` (a display name).
    """

    def __init__(
        self,
        edges: Iterable[tuple[str, str]] = (),
        *,
        nodes: Iterable[str] = (),
        name: str = "bayesnet",
    ) -> None:
        self.name = name
        self.graph = nx.DiGraph()
        self._cpds: dict[str, CPD] = {}
        for n in nodes:
            self.add_node(n)
        for u, v in edges:
            self.add_edge(u, v)

    # --- structure ----------------------------------------------------------------------
    def add_node(
        self,
        node: str,
        *,
        latent: bool = False,
        plate: str | None = None,
        label: str | None = None,
    ) -> None:
        """Add ``node`` (or update its attributes if present)."""
        if not isinstance(node, str) or not node:
            raise GraphError(f"node names must be non-empty strings, got {node!r}")
        attrs = {"latent": bool(latent), "plate": plate, "label": label or node}
        if node in self.graph:
            self.graph.nodes[node].update(attrs)
        else:
            self.graph.add_node(node, **attrs)

    def add_edge(self, parent: str, child: str) -> None:
        """Add ``parent -> child``; raises [`GraphError`][probgen.errors.GraphError] if it closes a
        cycle."""
        for n in (parent, child):
            if n not in self.graph:
                self.add_node(n)
        if parent == child:
            raise GraphError(f"self-loop on {parent!r}: a Bayesian network is acyclic")
        if nx.has_path(self.graph, child, parent):
            path = nx.shortest_path(self.graph, child, parent)
            cycle = " -> ".join([parent, *path])
            raise GraphError(f"edge {parent!r} -> {child!r} closes the cycle {cycle}")
        self.graph.add_edge(parent, child)

    def add_cpds(self, *cpds: CPD) -> None:
        """Attach CPDs. The CPD's parents must be exactly the node's parents in the graph.

        A CPD for a node not yet in the graph adds the node and its parent edges.
        """
        for cpd in cpds:
            if not isinstance(cpd, CPD):
                raise CPDError(f"expected a CPD, got {type(cpd).__name__}")
            v = cpd.variable
            if v not in self.graph:
                self.add_node(v)
                for p in cpd.parents:
                    self.add_edge(p, v)
            graph_parents = set(self.graph.predecessors(v))
            if graph_parents != set(cpd.parents):
                raise GraphError(
                    f"CPD of {v!r} has parents {sorted(cpd.parents)} but the graph gives "
                    f"{v!r} the parents {sorted(graph_parents)}"
                )
            self._cpds[v] = cpd

    @classmethod
    def from_cpds(cls, cpds: Iterable[CPD], *, name: str = "bayesnet") -> BayesNet:
        """Build a network whose edges are read off the CPDs' parents."""
        cpds = list(cpds)
        bn = cls(name=name)
        for c in cpds:
            bn.add_node(c.variable)
        for c in cpds:
            for p in c.parents:
                bn.add_edge(p, c.variable)
        bn.add_cpds(*cpds)
        return bn

    def remove_cpds(self, *nodes: str) -> None:
        for n in nodes:
            self._cpds.pop(self._node(n), None)

    # --- views --------------------------------------------------------------------------
    @property
    def nodes(self) -> list[str]:
        return list(self.graph.nodes)

    @property
    def edges(self) -> list[tuple[str, str]]:
        return list(self.graph.edges)

    @property
    def cpds(self) -> dict[str, CPD]:
        return dict(self._cpds)

    def _node(self, node: str) -> str:
        if node not in self.graph:
            raise GraphError(f"unknown node {node!r} in network {self.name!r}")
        return node

    def cpd(self, node: str) -> CPD:
        """The CPD of ``node``; raises [`CPDError`][probgen.errors.CPDError] when it has none."""
        self._node(node)
        try:
            return self._cpds[node]
        except KeyError:
            raise CPDError(f"node {node!r} has no CPD") from None

    def parents(self, node: str) -> list[str]:
        """Parents of ``node`` (in its CPD's order when it has one)."""
        self._node(node)
        if node in self._cpds:
            return list(self._cpds[node].parents)
        return sorted(self.graph.predecessors(node), key=self.nodes.index)

    def children(self, node: str) -> list[str]:
        return list(self.graph.successors(self._node(node)))

    def ancestors(self, nodes: str | Iterable[str]) -> set[str]:
        """``nodes`` and all their ancestors."""
        nodes = [nodes] if isinstance(nodes, str) else list(nodes)
        out: set[str] = set()
        for n in nodes:
            out |= nx.ancestors(self.graph, self._node(n)) | {n}
        return out

    def topological_order(self) -> list[str]:
        """Nodes, parents before children (stable for a given insertion order)."""
        rank = {n: i for i, n in enumerate(self.graph.nodes)}
        return list(nx.lexicographical_topological_sort(self.graph, key=rank.__getitem__))

    def is_latent(self, node: str) -> bool:
        return bool(self.graph.nodes[self._node(node)].get("latent", False))

    def latent_nodes(self) -> list[str]:
        return [n for n in self.nodes if self.is_latent(n)]

    def observed_nodes(self) -> list[str]:
        return [n for n in self.nodes if not self.is_latent(n)]

    def plate_of(self, node: str) -> str | None:
        return self.graph.nodes[self._node(node)].get("plate")

    def states(self, node: str) -> list[Hashable]:
        """State names of a discrete (tabular) node."""
        cpd = self.cpd(node)
        if not isinstance(cpd, TabularCPD):
            raise CPDError(f"node {node!r} is not discrete (its CPD is {type(cpd).__name__})")
        return list(cpd.states)

    def cardinality(self, node: str) -> int:
        return len(self.states(node))

    @property
    def is_discrete(self) -> bool:
        """True when every node has a [`TabularCPD`][probgen.graph.cpd.TabularCPD]."""
        return bool(self._cpds) and len(self._cpds) == len(self.graph) and all(
            isinstance(c, TabularCPD) for c in self._cpds.values()
        )

    def copy(self) -> BayesNet:
        out = BayesNet(name=self.name)
        out.graph = self.graph.copy()
        out._cpds = dict(self._cpds)
        return out

    # --- validation ---------------------------------------------------------------------
    def check(self, *, require_cpds: bool = True) -> None:
        """Validate the whole network.

        Checks acyclicity, that every node has a CPD (``require_cpds``), that each CPD's
        parents equal the graph's, that each tabular CPD's parent state names equal the
        parents' own states, and that each CPD is itself valid.
        """
        if not nx.is_directed_acyclic_graph(self.graph):
            cycle = nx.find_cycle(self.graph)
            raise GraphError(f"network {self.name!r} has a cycle: {cycle}")
        for n in self.topological_order():
            cpd = self._cpds.get(n)
            if cpd is None:
                if require_cpds:
                    raise CPDError(f"node {n!r} of network {self.name!r} has no CPD")
                continue
            if set(cpd.parents) != set(self.graph.predecessors(n)):
                raise GraphError(
                    f"CPD of {n!r} has parents {sorted(cpd.parents)} but the graph gives "
                    f"{sorted(self.graph.predecessors(n))}"
                )
            # a tabular CPD's values are read-only and validated when it is built: validate
            # again only CPDs without that mark or whose tolerance changed since
            mark = getattr(cpd, "_validated_tol", None)
            if mark is None or mark != cpd.tol:
                cpd.validate()
            if isinstance(cpd, TabularCPD):
                for p in cpd.parents:
                    pc = self._cpds.get(p)
                    if pc is None:
                        continue
                    if not isinstance(pc, TabularCPD):
                        raise CPDError(
                            f"tabular CPD of {n!r} has parent {p!r}, which is not discrete"
                        )
                    if [str(s) for s in pc.states] != [str(s) for s in cpd.parent_states[p]]:
                        raise CPDError(
                            f"CPD of {n!r} expects parent {p!r} to have states "
                            f"{cpd.parent_states[p]} (cardinality {len(cpd.parent_states[p])})"
                            f", but {p!r} has states {pc.states} "
                            f"(cardinality {len(pc.states)})"
                        )

    # --- inspection (probgen.graph.inspect) ---------------------------------------------
    def is_dseparated(self, x: Any, y: Any, given: Iterable[str] = ()) -> bool:
        """True when ``x`` and ``y`` (names or sets) are d-separated given ``given``."""
        from probgen.graph.inspect import is_dseparated

        return is_dseparated(self, x, y, given)

    def active_trail_nodes(self, x: str, observed: Iterable[str] = ()) -> set[str]:
        """Nodes reachable from ``x`` by an active trail given ``observed``."""
        from probgen.graph.inspect import active_trail_nodes

        return active_trail_nodes(self, x, observed)

    def markov_blanket(self, node: str) -> set[str]:
        """Parents, children and the children's other parents of ``node``."""
        from probgen.graph.inspect import markov_blanket

        return markov_blanket(self, node)

    def factorization(self) -> str:
        """The Markov factorisation as a formula, e.g. ``p(A, B) = p(A) p(B | A)``."""
        from probgen.graph.inspect import factorization

        return factorization(self)

    def draw(self, path: str | None = None, **kwargs: Any) -> Any:
        """Draw with matplotlib (latent nodes shaded, plates boxed); PNG if ``path``."""
        from probgen.graph.draw import draw

        return draw(self, path, **kwargs)

    def to_dot(self) -> str:
        """The graph in Graphviz DOT syntax (text only; no binary needed)."""
        from probgen.graph.draw import to_dot

        return to_dot(self)

    # --- interop and files --------------------------------------------------------------
    @classmethod
    def from_pgmpy(cls, model: Any) -> BayesNet:
        """Convert a pgmpy ``DiscreteBayesianNetwork`` or ``LinearGaussianBayesianNetwork``."""
        from probgen.graph.pgmpy_io import from_pgmpy

        return from_pgmpy(model)

    def to_pgmpy(self) -> Any:
        """Convert to the matching pgmpy model (lossless, state names included)."""
        from probgen.graph.pgmpy_io import to_pgmpy

        return to_pgmpy(self)

    @classmethod
    def load(cls, name_or_path: str) -> BayesNet:
        """Load a shipped graph by name (``"asia"``, ``"vae"``, ...) or a YAML/BIF path."""
        from probgen.graph.io import load

        return load(name_or_path)

    def save(self, path: str) -> None:
        """Write the network to a YAML (``.yaml``) or BIF (``.bif``) file."""
        from probgen.graph.io import save

        save(self, path)

    # --- layers above: inference, learning, sampling, programs --------------------------
    def query(
        self,
        variables: Sequence[str],
        evidence: Mapping[str, Hashable] | None = None,
        joint: bool = True,
        *,
        virtual_evidence: Sequence[Any] | None = None,
        elimination_order: str | Sequence[str] | None = None,
    ) -> Any:
        """Exact posterior, as pgmpy's ``VariableElimination.query`` (a DiscreteFactor).

        With ``joint=False`` a dict of one marginal factor per variable is returned.
        ``virtual_evidence`` (soft evidence: single-variable TabularCPDs) and
        ``elimination_order`` (a pgmpy heuristic name or a list) are as in pgmpy; see
        [`probgen.infer.exact.query`][probgen.infer.exact.query].
        """
        from probgen.infer.exact import query

        return query(self, variables, evidence, joint=joint, virtual_evidence=virtual_evidence,
                     elimination_order=elimination_order)

    def map_query(
        self,
        variables: Sequence[str] | None = None,
        evidence: Mapping[str, Hashable] | None = None,
        *,
        virtual_evidence: Sequence[Any] | None = None,
        elimination_order: str | Sequence[str] | None = None,
    ) -> dict[str, Hashable]:
        """The most probable joint state of ``variables`` (default: all unobserved), with
        ``virtual_evidence`` and ``elimination_order`` as in
        [`query`][probgen.graph.bayesnet.BayesNet.query]."""
        from probgen.infer.exact import map_query

        return map_query(self, variables, evidence, virtual_evidence=virtual_evidence,
                         elimination_order=elimination_order)

    def query_batch(self, variables: Sequence[str], evidence: pd.DataFrame) -> torch.Tensor:
        """Posteriors of ``variables`` for each row of ``evidence`` (NaN = unobserved)."""
        from probgen.infer.exact import query_batch

        return query_batch(self, variables, evidence)

    def fit(self, data: pd.DataFrame, **kwargs: Any) -> Any:
        """Learn the CPDs from data; see
        [`probgen.infer.learn.fit_bayesnet`][probgen.infer.learn.fit_bayesnet]."""
        from probgen.infer.learn import fit_bayesnet

        return fit_bayesnet(self, data, **kwargs)

    def sample(
        self, n: int, evidence: Mapping[str, Hashable] | None = None, **kwargs: Any
    ) -> pd.DataFrame:
        """Draw ``n`` rows (ancestral; rejection or likelihood weighting with evidence)."""
        from probgen.infer.sampling import sample_bayesnet

        return sample_bayesnet(self, n, evidence, **kwargs)

    def log_prob(self, data: pd.DataFrame) -> torch.Tensor:
        """Log-probability of each row (missing entries are summed out exactly)."""
        from probgen.infer.exact import log_prob

        return log_prob(self, data)

    def program(self, **kwargs: Any) -> Any:
        """Compile to a Pyro program; see
        [`probgen.program.Program`][probgen.program.compile.Program]."""
        from probgen.program.compile import Program

        return Program(self, **kwargs)

    def __repr__(self) -> str:
        return (
            f"BayesNet({self.name!r}, {len(self.graph)} nodes, "
            f"{self.graph.number_of_edges()} edges)"
        )

    def __contains__(self, node: object) -> bool:
        return node in self.graph

    def _check_evidence_names(self, names: Iterable[str], what: str) -> None:
        for n in names:
            if n not in self.graph:
                raise EvidenceError(f"unknown {what} variable {n!r} in network {self.name!r}")
