"""Exact inference checked against pgmpy's VariableElimination and brute-force enumeration."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import aligned, brute_force, joint_table, pgmpy_example, random_network

from probgen.errors import EvidenceError, QueryTooLargeError
from probgen.graph import BayesNet

TOL = 1e-9
FAST_NETWORKS = ["asia", "cancer", "earthquake", "sachs", "survey", "alarm", "child",
                 "insurance"]


def _ve(model):
    from pgmpy.inference import VariableElimination

    return VariableElimination(model)


def _pgmpy_query(ve, variables, evidence):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ve.query(variables, evidence=evidence or None, show_progress=False)


def _random_questions(bn: BayesNet, rng, n_questions, n_query=2, n_evidence=3):
    """Queries with evidence drawn from a forward sample, so it has positive probability."""
    rows = bn.sample(n_questions, seed=int(rng.integers(1 << 31)))
    out = []
    for i in range(n_questions):
        k = min(len(bn.nodes) - 1, n_query + n_evidence)
        chosen = list(rng.choice(bn.nodes, size=k, replace=False))
        q, e = chosen[:n_query], chosen[n_query:]
        out.append((q, {v: rows.iloc[i][v] for v in e}))
    return out


@pytest.mark.parametrize("name", FAST_NETWORKS)
def test_query_equals_pgmpy_on_shipped_networks(name):
    model = pgmpy_example(name)
    bn = BayesNet.from_pgmpy(model)
    ve = _ve(model)
    rng = np.random.default_rng(0)
    for q, ev in _random_questions(bn, rng, 12):
        ours = bn.query(q, evidence=ev)
        theirs = _pgmpy_query(ve, q, ev)
        assert ours.variables == q
        assert ours.state_names == {v: theirs.state_names[v] for v in q}
        np.testing.assert_allclose(ours.values, aligned(theirs, q), atol=TOL, rtol=0)


def test_query_equals_pgmpy_and_enumeration_on_500_random_networks():
    rng = np.random.default_rng(1)
    checked = 0
    for trial in range(500):
        bn = random_network(rng, int(rng.integers(2, 9)))
        ve = _ve(bn.to_pgmpy())
        n_query = int(rng.integers(1, min(3, len(bn.nodes)) + 1))
        n_evidence = int(rng.integers(0, len(bn.nodes) - n_query + 1))
        q, ev = _random_questions(bn, rng, 1, n_query, n_evidence)[0]
        ours = bn.query(q, evidence=ev)
        np.testing.assert_allclose(
            ours.values, aligned(_pgmpy_query(ve, q, ev), q), atol=TOL, rtol=0,
            err_msg=f"trial {trial}: query {q} given {ev}",
        )
        np.testing.assert_allclose(ours.values, brute_force(bn, q, ev), atol=TOL, rtol=0)
        checked += 1
    assert checked == 500


def test_marginals_with_joint_false_match_pgmpy():
    model = pgmpy_example("asia")
    bn = BayesNet.from_pgmpy(model)
    ours = bn.query(["lung", "bronc"], evidence={"dysp": "yes"}, joint=False)
    theirs = _pgmpy_query(_ve(model), ["lung", "bronc"], {"dysp": "yes"})
    for v in ("lung", "bronc"):
        other = theirs.marginalize([u for u in theirs.variables if u != v], inplace=False)
        np.testing.assert_allclose(ours[v].values, other.values, atol=TOL)


def test_query_batch_matches_single_queries_and_handles_missing():
    bn = BayesNet.from_pgmpy(pgmpy_example("alarm"))
    rng = np.random.default_rng(2)
    rows = bn.sample(60, seed=3)
    others = [n for n in bn.nodes if n not in ("HYPOVOLEMIA", "LVFAILURE")]
    records = []
    for i in range(60):
        chosen = rng.choice(others, size=3, replace=False)
        records.append({v: rows.iloc[i][v] for v in chosen})
    evidence = pd.DataFrame(records)  # NaN where a record does not observe a column
    post = bn.query_batch(["HYPOVOLEMIA", "LVFAILURE"], evidence)
    assert post.shape == (60, 2, 2) and post.dtype == torch.float64
    for i, rec in enumerate(records):
        single = bn.query(["HYPOVOLEMIA", "LVFAILURE"], evidence=rec).values
        np.testing.assert_allclose(post[i].numpy(), single, atol=TOL)


def test_query_batch_dense_and_sparse_columns_and_barren_slack_nodes():
    # hepar2 has CPDs whose columns sum to 1 only up to ~1e-8 (barren in some rows only, so
    # they must count as exactly 1 there); one column observed in every row takes the dense
    # coding path, the rest the sparse one
    model = pgmpy_example("hepar2")
    bn = BayesNet.from_pgmpy(model)
    rows = bn.sample(300, seed=1)
    rng = np.random.default_rng(1)
    dense = "sex"
    others = [n for n in bn.nodes if n not in ("Cirrhosis", dense)]
    records = []
    for i in range(300):
        rec = {v: rows.iloc[i][v] for v in rng.choice(others, size=3, replace=False)}
        rec[dense] = rows.iloc[i][dense]
        records.append(rec)
    post = bn.query_batch(["Cirrhosis"], pd.DataFrame(records))
    ve = _ve(model)
    for i in range(0, 300, 10):
        expect = _pgmpy_query(ve, ["Cirrhosis"], records[i]).values
        np.testing.assert_allclose(post[i].numpy(), expect, rtol=0, atol=1e-12)


def test_query_batch_with_none_values_and_integer_states():
    rng = np.random.default_rng(4)
    bn = random_network(rng, 5)
    ev = pd.DataFrame({"V3": ["s1", None, "s0"], "V4": [None, "s0", None]})
    post = bn.query_batch(["V0"], ev)
    for i in range(3):
        rec = {k: v for k, v in ev.iloc[i].items() if pd.notna(v)}
        np.testing.assert_allclose(post[i].numpy(), brute_force(bn, ["V0"], rec), atol=TOL)


def test_map_query_matches_enumeration():
    rng = np.random.default_rng(5)
    for _ in range(40):
        bn = random_network(rng, int(rng.integers(3, 7)))
        q, ev = _random_questions(bn, rng, 1, 2, 1)[0]
        post = brute_force(bn, q, ev)
        best = np.unravel_index(post.argmax(), post.shape)
        expect = {v: bn.states(v)[i] for v, i in zip(q, best)}
        assert bn.map_query(q, ev) == expect


def test_map_query_of_all_variables_matches_enumeration():
    # (pgmpy 1.1's map_query without variables returns the evidence variable with a state
    # that contradicts the evidence, so enumeration is the reference here.)
    bn = BayesNet.from_pgmpy(pgmpy_example("asia"))
    rest = [v for v in bn.nodes if v != "dysp"]
    post = brute_force(bn, rest, {"dysp": "yes"})
    best = np.unravel_index(post.argmax(), post.shape)
    assert bn.map_query(evidence={"dysp": "yes"}) == {
        v: bn.states(v)[i] for v, i in zip(rest, best)
    }


def test_log_prob_complete_and_missing_rows():
    rng = np.random.default_rng(6)
    bn = random_network(rng, 5)
    joint, order = joint_table(bn)
    df = bn.sample(20, seed=1)
    lp = bn.log_prob(df)
    for i in range(20):
        idx = tuple(bn.cpd(v).state_index(df.iloc[i][v]) for v in order)
        assert abs(lp[i].item() - np.log(joint[idx])) < 1e-9
    partial = df.astype(object).copy()
    partial.loc[0, "V2"] = None
    partial = partial.drop(columns=["V4"])
    lp2 = bn.log_prob(partial)
    ev = {k: v for k, v in partial.iloc[0].items() if pd.notna(v)}
    idx = tuple(bn.cpd(v).state_index(ev[v]) if v in ev else slice(None) for v in order)
    assert abs(lp2[0].item() - np.log(joint[idx].sum())) < 1e-9


# --- errors ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def asia():
    return BayesNet.from_pgmpy(pgmpy_example("asia"))


@pytest.mark.parametrize(
    "variables, evidence, culprit",
    [
        (["nope"], None, "nope"),
        (["lung"], {"nada": "yes"}, "nada"),
        (["lung"], {"smoke": "maybe"}, "maybe"),
        (["lung"], {"lung": "yes"}, "lung"),
        (["lung", "lung"], None, "lung"),
        ([], None, "at least one"),
        (["lung"], {"either": "no", "tub": "yes"}, "probability zero"),
    ],
)
def test_query_errors_name_the_culprit(asia, variables, evidence, culprit):
    with pytest.raises(EvidenceError, match=culprit):
        asia.query(variables, evidence=evidence)


def test_query_batch_errors(asia):
    with pytest.raises(EvidenceError, match="'nope'"):
        asia.query_batch(["lung"], pd.DataFrame({"nope": ["yes"]}))
    with pytest.raises(EvidenceError, match="'maybe'.*'smoke'.*row 1"):
        asia.query_batch(["lung"], pd.DataFrame({"smoke": ["yes", "maybe"]}))
    with pytest.raises(EvidenceError, match="'lung'"):
        asia.query_batch(["lung"], pd.DataFrame({"lung": ["yes"]}))
    bad = pd.DataFrame({"either": ["no", "yes"], "tub": ["yes", "yes"]})
    with pytest.raises(EvidenceError, match="row 0 .*probability zero"):
        asia.query_batch(["lung"], bad)
    with pytest.raises(EvidenceError, match="DataFrame"):
        asia.query_batch(["lung"], {"smoke": ["yes"]})


def test_too_large_query_raises_instead_of_allocating():
    from probgen.infer.exact import query

    bn = BayesNet.from_pgmpy(pgmpy_example("alarm"))
    with pytest.raises(QueryTooLargeError, match="GiB"):
        query(bn, ["HR", "CVP", "PCWP", "HRBP", "BP"], max_bytes=100)
