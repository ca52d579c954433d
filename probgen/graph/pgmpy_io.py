"""Conversion between [`BayesNet`][probgen.graph.bayesnet.BayesNet] and pgmpy models, losslessly.

Two pgmpy model classes are supported:

- ``DiscreteBayesianNetwork`` with ``TabularCPD`` s: values (pgmpy's layout), the order of
  the evidence (parents) and every state name are kept exactly;
- ``LinearGaussianBayesianNetwork`` with ``LinearGaussianCPD(variable, beta, std,
  evidence)``, where ``beta = [intercept, *coefficients]`` maps to probgen's
  ``bias`` and ``weights``.

A CPD-less ``pgmpy.base.DAG`` converts to a skeleton (structure only) and back.
Latent nodes (pgmpy's ``model.latents``) become probgen nodes with ``latent=True`` and
vice versa. Anything else (NoisyOR CPDs, a neural CPD, a mix of kinds) raises an error
naming the node at fault.

Examples:
    >>> import warnings
    >>> from pgmpy.utils import get_example_model
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", FutureWarning)
    ...     asia = get_example_model("asia")
    >>> bn = from_pgmpy(asia)
    >>> bn.cpd("dysp").parents
    ('bronc', 'either')
    >>> print(to_pgmpy(bn).get_cpds("dysp").state_names["either"])
    ['yes', 'no']
"""

from __future__ import annotations

from typing import Any

from probgen.errors import CPDError, GraphError
from probgen.graph.bayesnet import BayesNet
from probgen.graph.cpd import LinearGaussianCPD, TabularCPD

__all__ = ["from_pgmpy", "to_pgmpy"]


def from_pgmpy(model: Any, *, name: str | None = None) -> BayesNet:
    """Convert a pgmpy ``DiscreteBayesianNetwork``, ``LinearGaussianBayesianNetwork`` or
    CPD-less ``DAG`` into a [`BayesNet`][probgen.graph.bayesnet.BayesNet].

    Args:
        model: the pgmpy model.
        name: the network's name (default: ``model.name`` when pgmpy set one).

    Raises:
        GraphError: ``model`` is not one of the supported pgmpy classes.
        CPDError: a CPD of an unsupported kind (e.g. NoisyOR), naming its variable.
    """
    from pgmpy.base import DAG
    from pgmpy.factors.continuous import LinearGaussianCPD as PgLG
    from pgmpy.factors.discrete import TabularCPD as PgTab
    from pgmpy.models import DiscreteBayesianNetwork, LinearGaussianBayesianNetwork

    if not isinstance(model, DAG):
        raise GraphError(
            f"cannot convert {type(model).__name__}: probgen reads pgmpy's "
            "DiscreteBayesianNetwork, LinearGaussianBayesianNetwork or DAG"
        )
    pg_name = getattr(model, "name", None)
    if name is None:
        name = pg_name if isinstance(pg_name, str) and pg_name and pg_name != "unknown" else "pgmpy"
    latents = set(getattr(model, "latents", set()) or set())
    bn = BayesNet(name=name)
    for n in model.nodes():
        if not isinstance(n, str):
            raise GraphError(f"pgmpy node {n!r} is not a string; probgen names nodes by strings")
        attrs = model.nodes[n]
        bn.add_node(n, latent=n in latents, plate=attrs.get("plate"), label=attrs.get("label"))
    for u, v in model.edges():
        bn.add_edge(u, v)

    if isinstance(model, (DiscreteBayesianNetwork, LinearGaussianBayesianNetwork)):
        cpds = model.get_cpds()
    else:
        cpds = []
    for c in cpds:
        if type(c) is PgTab:
            bn.add_cpds(_tabular_from_pgmpy(c))
        elif isinstance(c, PgLG):
            bn.add_cpds(_linear_gaussian_from_pgmpy(c))
        else:
            raise CPDError(
                f"CPD of {getattr(c, 'variable', '?')!r} is a {type(c).__name__}; probgen "
                "converts pgmpy TabularCPD and LinearGaussianCPD only"
            )
    return bn


def _tabular_from_pgmpy(c: Any) -> TabularCPD:
    var = c.variable
    parents = list(c.variables[1:])
    return TabularCPD(
        var,
        c.get_values(),
        states=list(c.state_names[var]),
        parents=parents,
        parent_states={p: list(c.state_names[p]) for p in parents},
    )


def _linear_gaussian_from_pgmpy(c: Any) -> LinearGaussianCPD:
    beta = [float(b) for b in list(c.beta)]
    parents = list(c.evidence)
    if len(beta) != len(parents) + 1:
        raise CPDError(
            f"pgmpy LinearGaussianCPD of {c.variable!r}: beta has {len(beta)} entries for "
            f"evidence {parents} (expected intercept + one coefficient per parent)"
        )
    return LinearGaussianCPD(
        c.variable, parents=parents, weights=beta[1:], bias=beta[0], std=float(c.std)
    )


def to_pgmpy(bn: BayesNet) -> Any:
    """Convert ``bn`` to the matching pgmpy model.

    All-tabular networks become a ``DiscreteBayesianNetwork``, all-linear-Gaussian ones a
    ``LinearGaussianBayesianNetwork``, CPD-less skeletons a ``pgmpy.base.DAG``. Latent flags
    go to ``model.latents``; ``plate``/``label`` attributes, when set, to the node
    attributes of the pgmpy graph.

    Raises:
        CPDError: a node without a CPD in a network that has some, a neural CPD, or a mix
            of tabular and linear-Gaussian CPDs; the node is named.
    """
    from pgmpy.base import DAG
    from pgmpy.factors.continuous import LinearGaussianCPD as PgLG
    from pgmpy.factors.discrete import TabularCPD as PgTab
    from pgmpy.models import DiscreteBayesianNetwork, LinearGaussianBayesianNetwork

    cpds = bn.cpds
    order = bn.topological_order()
    if not cpds:
        model = DAG()
    else:
        missing = [n for n in order if n not in cpds]
        if missing:
            raise CPDError(
                f"network {bn.name!r}: node {missing[0]!r} has no CPD; pgmpy models need one "
                "per node (a CPD-less skeleton converts to a pgmpy DAG)"
            )
        if all(isinstance(c, TabularCPD) for c in cpds.values()):
            model = DiscreteBayesianNetwork()
        elif all(isinstance(c, LinearGaussianCPD) for c in cpds.values()):
            model = LinearGaussianBayesianNetwork()
        else:
            odd = [n for n in order if not isinstance(cpds[n], (TabularCPD, LinearGaussianCPD))]
            culprit = (
                odd[0] if odd else next(n for n in order if isinstance(cpds[n], LinearGaussianCPD))
            )
            raise CPDError(
                f"network {bn.name!r}: CPD of {culprit!r} ({type(cpds[culprit]).__name__}) "
                "cannot go to pgmpy; it takes all-TabularCPD or all-LinearGaussianCPD networks"
            )
    model.add_nodes_from(bn.nodes)
    model.add_edges_from(bn.edges)
    if bn.latent_nodes():  # pgmpy wants the nodes in place before their roles
        model.latents = set(bn.latent_nodes())
    for n in bn.nodes:
        for key in ("plate", "label"):
            val = bn.graph.nodes[n].get(key)
            if val is not None and not (key == "label" and val == n):
                model.nodes[n][key] = val
    if bn.name:
        model.name = bn.name
    for n in order:
        c = cpds.get(n)
        if isinstance(c, TabularCPD):
            sn = {p: list(c.parent_states[p]) for p in c.parents}
            sn[n] = list(c.states)
            model.add_cpds(
                PgTab(
                    n,
                    c.cardinality,
                    c.values,
                    evidence=list(c.parents) or None,
                    evidence_card=list(c.parent_cards) or None,
                    state_names=sn,
                )
            )
        elif isinstance(c, LinearGaussianCPD):
            model.add_cpds(PgLG(n, beta=[c.bias, *c.weights], std=c.std, evidence=list(c.parents)))
    return model
