"""pgmpy's ``elimination_order`` and ``virtual_evidence`` arguments of ``query``/``map_query``,
checked against pgmpy's VariableElimination on the networks shipped in its wheel (issue 15,
finding 8)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import aligned, pgmpy_example

from probgen.errors import EvidenceError
from probgen.graph import BayesNet, TabularCPD

TOL = 1e-12
NETWORKS = ["asia", "cancer", "sachs", "survey", "alarm", "child"]
ORDERS = ["MinFill", "MinWeight", "MinNeighbors", "WeightedMinFill", "greedy", "list"]


def _soft(rng, bn, var, kind="pgmpy"):
    """Random soft evidence on ``var``: a single-variable TabularCPD (pgmpy's or probgen's)."""
    from pgmpy.factors.discrete import TabularCPD as PgmpyCPD

    states = bn.states(var)
    lam = rng.dirichlet(np.ones(len(states)))
    if kind == "probgen":
        return TabularCPD(var, lam, states=states)
    return PgmpyCPD(var, len(states), lam.reshape(-1, 1), state_names={var: list(states)})


def _questions(bn, rng, n):
    rows = bn.sample(n, seed=int(rng.integers(1 << 31)))
    out = []
    for i in range(n):
        chosen = list(rng.choice(bn.nodes, size=min(len(bn.nodes), 5), replace=False))
        q, e, s = chosen[:2], chosen[2:4], chosen[4:]
        out.append((q, {v: rows.iloc[i][v] for v in e}, s))
    return out


def _pgmpy(method, model, *args, **kwargs):
    from pgmpy.inference import VariableElimination

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a fresh engine per question: pgmpy adds virtual-evidence nodes to its model
        return getattr(VariableElimination(model), method)(*args, show_progress=False,
                                                           **kwargs)


def _order(spec, bn, q, ev):
    if spec != "list":
        return spec
    return [v for v in reversed(bn.topological_order()) if v not in q and v not in ev]


@pytest.mark.parametrize("name", NETWORKS)
def test_query_with_soft_evidence_and_every_order_equals_pgmpy(name):
    model = pgmpy_example(name)
    bn = BayesNet.from_pgmpy(model)
    rng = np.random.default_rng(0)
    for i, (q, ev, soft_vars) in enumerate(_questions(bn, rng, 6)):
        spec = ORDERS[i % len(ORDERS)]
        soft = [_soft(rng, bn, v) for v in soft_vars]
        ours = bn.query(q, evidence=ev, virtual_evidence=soft,
                        elimination_order=_order(spec, bn, q, ev))
        theirs = _pgmpy("query", model, q, evidence=ev, virtual_evidence=soft,
                        elimination_order=_order(spec, bn, q, ev))
        np.testing.assert_allclose(ours.values, aligned(theirs, q), atol=TOL, rtol=0,
                                   err_msg=f"{spec}: {q} | {ev}, soft on {soft_vars}")


@pytest.mark.parametrize("spec", ORDERS)
def test_every_order_gives_the_same_exact_answer(spec):
    model = pgmpy_example("alarm")
    bn = BayesNet.from_pgmpy(model)
    q, ev = ["HYPOVOLEMIA", "LVFAILURE"], {"HRBP": "HIGH", "BP": "LOW"}
    ours = bn.query(q, evidence=ev, elimination_order=_order(spec, bn, q, ev))
    theirs = _pgmpy("query", model, q, evidence=ev, elimination_order=_order(spec, bn, q, ev))
    np.testing.assert_allclose(ours.values, aligned(theirs, q), atol=TOL, rtol=0)


def test_probgen_cpd_as_soft_evidence_and_soft_evidence_on_a_query_variable():
    model = pgmpy_example("asia")
    bn = BayesNet.from_pgmpy(model)
    rng = np.random.default_rng(1)
    for q, soft_var in ((["lung"], "dysp"), (["lung", "bronc"], "lung")):
        ours = bn.query(q, virtual_evidence=[_soft(np.random.default_rng(2), bn, soft_var,
                                                   "probgen")])
        theirs = _pgmpy("query", model, q, virtual_evidence=[
            _soft(np.random.default_rng(2), bn, soft_var)])
        np.testing.assert_allclose(ours.values, aligned(theirs, q), atol=TOL, rtol=0)
    del rng


@pytest.mark.parametrize("name", ["asia", "cancer", "sachs", "alarm"])
def test_map_query_with_soft_evidence_and_orders_is_the_most_probable_state(name):
    model = pgmpy_example(name)
    bn = BayesNet.from_pgmpy(model)
    rng = np.random.default_rng(3)
    for i, (q, ev, soft_vars) in enumerate(_questions(bn, rng, 4)):
        spec = ORDERS[i % len(ORDERS)]
        soft = [_soft(rng, bn, v) for v in soft_vars]
        ours = bn.map_query(q, evidence=ev, virtual_evidence=soft,
                            elimination_order=_order(spec, bn, q, ev))
        theirs = _pgmpy("map_query", model, q, evidence=ev, virtual_evidence=soft,
                        elimination_order=_order(spec, bn, q, ev) if spec != "greedy"
                        else "MinFill")
        post = bn.query(q, evidence=ev, virtual_evidence=soft)
        p_ours = post.get_value(**{v: ours[v] for v in q})
        p_theirs = post.get_value(**{v: theirs[v] for v in q})
        assert abs(p_ours - p_theirs) <= TOL and p_ours >= post.values.max() - TOL


def test_soft_evidence_multiplies_the_likelihood_in():
    bn = BayesNet.from_pgmpy(pgmpy_example("cancer"))
    lam = np.array([0.2, 0.8])
    soft = TabularCPD("Xray", lam, states=bn.states("Xray"))
    prior = bn.query(["Cancer", "Xray"]).values
    expected = (prior * lam[None, :]).sum(1)
    np.testing.assert_allclose(bn.query(["Cancer"], virtual_evidence=[soft]).values,
                               expected / expected.sum(), atol=TOL)


@pytest.mark.parametrize("kwargs, match", [
    ({"elimination_order": "MaxFill"}, "unknown heuristic"),
    ({"elimination_order": ["lung", "tub"]}, "query or evidence"),
    ({"elimination_order": ["nope"]}, "unknown variable"),
    ({"elimination_order": ["tub", "tub"]}, "twice"),
    ({"virtual_evidence": ["tub"]}, "TabularCPD"),
])
def test_bad_options_raise(kwargs, match):
    bn = BayesNet.from_pgmpy(pgmpy_example("asia"))
    with pytest.raises(EvidenceError, match=match):
        bn.query(["lung"], **kwargs)


def test_bad_soft_evidence_raises():
    from pgmpy.factors.discrete import DiscreteFactor

    bn = BayesNet.from_pgmpy(pgmpy_example("asia"))
    bad = [
        (TabularCPD("nope", [0.5, 0.5]), "unknown variable"),
        (TabularCPD("tub", [0.2, 0.3, 0.5]), "has 2 states"),
        (TabularCPD("tub", [0.5, 0.5], states=["a", "b"]), "state"),
        (DiscreteFactor(["tub", "lung"], [2, 2], np.ones(4)), "several"),
    ]
    for item, match in bad:
        with pytest.raises(EvidenceError, match=match):
            bn.query(["either"], virtual_evidence=[item])
    soft = TabularCPD("tub", [0.5, 0.5], states=bn.states("tub"))
    with pytest.raises(EvidenceError, match="twice"):
        bn.query(["either"], virtual_evidence=[soft, soft])
