"""Graph files and pgmpy interop: shipped graphs, YAML/BIF round trips, pgmpy round trips."""

from __future__ import annotations

import functools
import itertools
import os
import warnings

import numpy as np
import pytest

from probgen.errors import CPDError, GraphError
from probgen.graph.bayesnet import BayesNet
from probgen.graph.cpd import LinearGaussianCPD, NeuralCPD, TabularCPD
from probgen.graph.io import PGMPY_NETWORKS, available, load, save
from probgen.graph.pgmpy_io import from_pgmpy, to_pgmpy

SHIPPED = ["sprinkler", "asia", "naive_bayes", "gaussian_mixture", "hmm",
           "vae", "arm", "flow", "diffusion", "gan", "ebm"]  # fmt: skip
DISCRETE_SHIPPED = ["sprinkler", "asia", "naive_bayes", "hmm"]
# pgmpy networks that parse in about a second; PROBGEN_SLOW=1 runs all 24 (~2 min)
FAST_PGMPY = ["asia", "cancer", "earthquake", "sachs", "survey", "alarm", "child",
              "insurance", "water", "hailfinder", "hepar2", "win95pts"]  # fmt: skip
PGMPY_UNDER_TEST = list(PGMPY_NETWORKS) if os.environ.get("PROBGEN_SLOW") else FAST_PGMPY


@functools.cache
def pgmpy_model(name: str):
    from pgmpy.utils import get_example_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return get_example_model(name)


def assert_same_pgmpy_cpds(a, b) -> None:
    """Every CPD equal: variable, evidence order, state names (order too), values."""
    assert set(a.nodes()) == set(b.nodes())
    assert set(a.edges()) == set(b.edges())
    for ca in a.get_cpds():
        cb = b.get_cpds(ca.variable)
        assert list(cb.variables) == list(ca.variables), ca.variable
        assert {k: list(v) for k, v in cb.state_names.items()} == {
            k: list(v) for k, v in ca.state_names.items()
        }, ca.variable
        np.testing.assert_array_equal(cb.get_values(), ca.get_values())


def assert_same_bn(a: BayesNet, b: BayesNet) -> None:
    assert a.nodes == b.nodes
    assert set(a.edges) == set(b.edges)
    for n in a.nodes:
        assert a.graph.nodes[n] == b.graph.nodes[n], n
    assert set(a.cpds) == set(b.cpds)
    for n, ca in a.cpds.items():
        cb = b.cpds[n]
        assert type(ca) is type(cb) and ca.parents == cb.parents, n
        if isinstance(ca, TabularCPD):
            assert ca.states == cb.states and ca.parent_states == cb.parent_states, n
            np.testing.assert_array_equal(ca.values, cb.values)
        else:
            assert (ca.weights, ca.bias, ca.std) == (cb.weights, cb.bias, cb.std), n


# --- shipped graphs -------------------------------------------------------------------------
def test_available_lists_shipped_files_then_pgmpy_networks():
    names = available()
    assert set(SHIPPED) <= set(names)
    assert set(PGMPY_NETWORKS) <= set(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_graph_loads_checks_and_round_trips_through_yaml(name, tmp_path):
    bn = load(name)
    assert bn.name == name
    bn.check(require_cpds=name in DISCRETE_SHIPPED)
    if name in DISCRETE_SHIPPED:
        assert bn.is_discrete
    save(bn, tmp_path / f"{name}.yaml")
    assert_same_bn(bn, load(tmp_path / f"{name}.yaml"))


def test_asia_yaml_has_the_tables_of_pgmpys_asia():
    assert_same_pgmpy_cpds(pgmpy_model("asia"), to_pgmpy(load("asia")))


def test_sprinkler_marginal_matches_brute_force_enumeration():
    bn = load("sprinkler")
    # p(WetGrass = T) summed over the joint by hand; the textbook value is 0.6471
    total = 0.0
    for c, s, r in itertools.product(["F", "T"], repeat=3):
        total += (
            float(bn.cpd("Cloudy").probs()[bn.cpd("Cloudy").state_index(c)])
            * float(bn.cpd("Sprinkler").probs(Cloudy=c)[bn.cpd("Sprinkler").state_index(s)])
            * float(bn.cpd("Rain").probs(Cloudy=c)[bn.cpd("Rain").state_index(r)])
            * float(bn.cpd("WetGrass").probs(Sprinkler=s, Rain=r)[1])
        )
    assert total == pytest.approx(0.6471, abs=1e-4)


def test_skeletons_mark_latents_plates_and_kinds():
    vae = load("vae")
    assert vae.latent_nodes() == ["z"] and vae.plate_of("x") == "data"
    assert vae.graph.nodes["x"]["kind"] == "neural"
    assert load("diffusion").latent_nodes() == ["x_T", "x_2", "x_1"]
    assert load("gan").graph.nodes["x"]["kind"] == "implicit"
    assert load("hmm").latent_nodes() == ["Z1", "Z2", "Z3", "Z4"]
    gm = load("gaussian_mixture")
    assert isinstance(gm.cpd("x"), LinearGaussianCPD) and gm.is_latent("c")


def test_yes_no_states_stay_strings(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("nodes:\n  A: {states: [yes, no, on], cpd: [0.2, 0.3, 0.5]}\n")
    assert load(p).states("A") == ["yes", "no", "on"]


def test_bn_methods_delegate_to_io(tmp_path):
    bn = BayesNet.load("sprinkler")
    bn.save(str(tmp_path / "s.yaml"))
    assert_same_bn(bn, BayesNet.load(str(tmp_path / "s.yaml")))


# --- pgmpy round trips ----------------------------------------------------------------------
@pytest.mark.parametrize("name", PGMPY_UNDER_TEST)
def test_pgmpy_to_probgen_to_pgmpy_is_lossless(name):
    model = pgmpy_model(name)
    bn = from_pgmpy(model, name=name)
    bn.check()
    back = to_pgmpy(bn)
    assert_same_pgmpy_cpds(model, back)
    assert back.check_model()


@pytest.mark.parametrize("name", ["asia", "child", "alarm"])
def test_load_by_name_equals_pgmpy_and_yaml_bif_round_trip(name, tmp_path):
    bn = load(name)
    if name != "asia":  # asia is shadowed by the shipped YAML, checked above
        assert_same_pgmpy_cpds(pgmpy_model(name), to_pgmpy(bn))
    save(bn, tmp_path / "g.yaml")
    assert_same_bn(bn, load(tmp_path / "g.yaml"))
    save(bn, tmp_path / "g.bif")
    assert_same_pgmpy_cpds(to_pgmpy(bn), to_pgmpy(load(tmp_path / "g.bif")))


def test_bif_keeps_latent_plate_and_label(tmp_path):
    bn = load("hmm")
    bn.add_node("X1", plate="steps", label="X_1")
    save(bn, tmp_path / "hmm.bif")
    back = load(tmp_path / "hmm.bif")
    assert back.name == "hmm"
    assert back.latent_nodes() == ["Z1", "Z2", "Z3", "Z4"]
    assert back.plate_of("X1") == "steps" and back.graph.nodes["X1"]["label"] == "X_1"
    assert_same_pgmpy_cpds(to_pgmpy(bn), to_pgmpy(back))


def test_discrete_latents_and_state_names_round_trip():
    from pgmpy.factors.discrete import TabularCPD as PgTab
    from pgmpy.models import DiscreteBayesianNetwork

    m = DiscreteBayesianNetwork([("Z", "X"), ("W", "X")], latents={"Z"})
    m.add_cpds(
        PgTab("Z", 2, [[0.4], [0.6]], state_names={"Z": [3, 7]}),
        PgTab("W", 3, [[0.2], [0.3], [0.5]], state_names={"W": ["lo", "mid", "hi"]}),
        PgTab("X", 2, np.full((2, 6), 0.5), evidence=["W", "Z"], evidence_card=[3, 2],
              state_names={"X": ["a", "b"], "W": ["lo", "mid", "hi"], "Z": [3, 7]}),
    )  # fmt: skip
    bn = from_pgmpy(m)
    assert bn.latent_nodes() == ["Z"]
    assert bn.cpd("X").parents == ("W", "Z") and bn.states("Z") == [3, 7]
    back = to_pgmpy(bn)
    assert back.latents == {"Z"}
    assert_same_pgmpy_cpds(m, back)


def test_linear_gaussian_round_trip():
    from pgmpy.factors.continuous import LinearGaussianCPD as PgLG
    from pgmpy.models import LinearGaussianBayesianNetwork

    m = LinearGaussianBayesianNetwork([("A", "C"), ("B", "C")], latents={"A"})
    m.add_cpds(
        PgLG("A", beta=[1.0], std=2.0),
        PgLG("B", beta=[-1.0], std=0.5),
        PgLG("C", beta=[0.5, 2.0, -3.0], std=1.5, evidence=["B", "A"]),
    )
    bn = from_pgmpy(m)
    c = bn.cpd("C")
    assert isinstance(c, LinearGaussianCPD)
    assert (c.parents, c.weights, c.bias, c.std) == (("B", "A"), [2.0, -3.0], 0.5, 1.5)
    assert bn.latent_nodes() == ["A"]
    back = to_pgmpy(bn)
    assert back.latents == {"A"}
    for cpd in m.get_cpds():
        other = back.get_cpds(cpd.variable)
        assert list(other.evidence) == list(cpd.evidence)
        np.testing.assert_array_equal(other.beta, cpd.beta)
        assert other.std == cpd.std


def test_skeleton_converts_to_a_pgmpy_dag():
    from pgmpy.base import DAG

    dag = to_pgmpy(load("vae"))
    assert isinstance(dag, DAG) and set(dag.edges()) == {("z", "x")} and dag.latents == {"z"}
    assert from_pgmpy(dag).latent_nodes() == ["z"]


# --- errors ---------------------------------------------------------------------------------
def test_unknown_name_lists_available_names():
    with pytest.raises(GraphError, match="sprinkler") as info:
        load("no_such_graph")
    assert "alarm" in str(info.value)


def test_missing_file_is_named():
    with pytest.raises(GraphError, match="nowhere.yaml"):
        load("/tmp/nowhere/nowhere.yaml")


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        ("nodes:\n  A: {states: [a, b], cpd: [0.5, 0.6]}\n", CPDError, "'A'"),
        ("nodes:\n  A: {states: [a, b], cpd: [0.5, 0.5], colour: red}\n", GraphError, "colour"),
        ("nodes:\n  A: {states: [a, b], parents: [Q], cpd: [[1, 1], [0, 0]]}\n",
         GraphError, "'Q'"),
        ("nodes:\n  A: {states: [a], parents: [B], cpd: [[1]]}\n"
         "  B: {states: [b], parents: [A], cpd: [[1]]}\n", GraphError, "cycle"),
        ("nodes:\n  A: {kind: neural}\n  B: {states: [a], parents: [A], cpd: [[1]]}\n",
         CPDError, "parent 'A'"),
        ("nodes:\n  A: {states: [a, b], cpd: [[0.5, 0.5]]}\n", CPDError, "'A'"),
        ("nodes:\n  A: {type: linear_gaussian, std: -1}\n", CPDError, "'A'"),
        ("nodes: [A, B\n", GraphError, "YAML"),
        ("name: x\n", GraphError, "nodes"),
    ],
)  # fmt: skip
def test_malformed_yaml_names_file_and_node(tmp_path, text, error, words):
    p = tmp_path / "bad_graph.yaml"
    p.write_text(text)
    with pytest.raises(error, match="bad_graph.yaml") as info:
        load(p)
    assert words in str(info.value)


def test_malformed_bif_names_the_file(tmp_path):
    p = tmp_path / "broken.bif"
    p.write_text("network x {\n}\nvariable A {\n  type discrete [ 2 ] { a, b };\n}\n"
                 "probability ( A ) {\n  table 0.5, 0.7;\n}\n")  # fmt: skip
    with pytest.raises(CPDError, match="broken.bif"):
        load(p)


def test_unsupported_models_and_cpds_raise():
    with pytest.raises(GraphError, match="dict"):
        from_pgmpy({})
    bn = BayesNet.from_cpds([
        TabularCPD("c", [0.5, 0.5]),
        LinearGaussianCPD("x", parents=["c"], weights=[1.0]),
    ])  # fmt: skip
    with pytest.raises(CPDError, match="'x'"):
        to_pgmpy(bn)
    neural = BayesNet.from_cpds([NeuralCPD("z", lambda: None)])
    with pytest.raises(CPDError, match="'z'"):
        to_pgmpy(neural)
    with pytest.raises(CPDError, match="'z'"):
        save(neural, "/tmp/never_written.yaml")
    with pytest.raises(CPDError, match="BIF"):
        save(load("vae"), "/tmp/never_written.bif")
    with pytest.raises(GraphError, match=".txt"):
        save(load("vae"), "/tmp/never_written.txt")
