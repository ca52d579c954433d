"""d-separation, active trails, Markov blankets, factorisation: checked against pgmpy and
networkx on the shipped networks and on random DAGs."""

from __future__ import annotations

import random

import networkx as nx
import pytest

from probgen.errors import GraphError
from probgen.graph.bayesnet import BayesNet
from probgen.graph.cpd import LinearGaussianCPD
from probgen.graph.inspect import (
    active_trail_nodes,
    factorization,
    is_dseparated,
    markov_blanket,
)
from probgen.graph.io import load
from probgen.graph.pgmpy_io import to_pgmpy

NETWORKS = ["sprinkler", "asia", "naive_bayes", "hmm", "vae", "diffusion", "alarm", "child"]


def random_dag(seed: int, n: int = 9, p: float = 0.3) -> BayesNet:
    rng = random.Random(seed)
    bn = BayesNet(nodes=[f"v{i}" for i in range(n)], name=f"random{seed}")
    for i in range(n):
        for j in range(i + 1, n):
            if rng.random() < p:
                bn.add_edge(f"v{i}", f"v{j}")
    return bn


def random_subsets(nodes: list[str], rng: random.Random, k: int) -> list[set[str]]:
    return [set(rng.sample(nodes, rng.randint(0, min(4, len(nodes) - 1)))) for _ in range(k)]


@pytest.mark.parametrize("name", NETWORKS)
def test_active_trails_and_blankets_match_pgmpy(name):
    bn = load(name)
    model = to_pgmpy(bn)
    rng = random.Random(0)
    for x in bn.nodes:
        assert markov_blanket(bn, x) == set(model.get_markov_blanket(x))
        for obs in random_subsets(bn.nodes, rng, 3):
            ours = active_trail_nodes(bn, x, obs)
            theirs = model.active_trail_nodes(x, observed=sorted(obs), include_latents=True)[x]
            assert ours == theirs, (x, obs)


@pytest.mark.parametrize("seed", range(30))
def test_dseparation_matches_networkx_and_pgmpy_on_random_dags(seed):
    bn = random_dag(seed)
    model = to_pgmpy(bn)
    rng = random.Random(seed)
    for _ in range(20):
        x, y = rng.sample(bn.nodes, 2)
        rest = [n for n in bn.nodes if n not in (x, y)]
        given = set(rng.sample(rest, rng.randint(0, 4)))
        expected = nx.is_d_separator(bn.graph, {x}, {y}, given)
        assert is_dseparated(bn, x, y, given) == expected
        assert (not model.is_dconnected(x, y, observed=sorted(given))) == expected
        # set-valued arguments
        xs = {x} | set(rng.sample(rest, 1)) - given
        ys = {y}
        assert is_dseparated(bn, xs, ys, given) == nx.is_d_separator(bn.graph, xs, ys, given)


def test_textbook_independences():
    sprinkler = load("sprinkler")
    assert is_dseparated(sprinkler, "Sprinkler", "Rain", given=["Cloudy"])
    assert not is_dseparated(sprinkler, "Sprinkler", "Rain", given=["Cloudy", "WetGrass"])
    nb = load("naive_bayes")
    assert is_dseparated(nb, {"Free", "Offer"}, {"Meeting", "Link"}, given=["Spam"])
    assert not is_dseparated(nb, "Free", "Link")
    hmm = load("hmm")
    assert is_dseparated(hmm, "X1", {"X3", "X4"}, given=["Z2"])
    assert not is_dseparated(hmm, "X1", "X4", given=["X2", "X3"])
    assert markov_blanket(hmm, "Z2") == {"Z1", "Z3", "X2"}
    assert BayesNet.load("asia").is_dseparated("asia", "smoke")  # the method delegates


def test_active_trail_of_observed_start_is_empty_like_pgmpy():
    bn = load("sprinkler")
    assert active_trail_nodes(bn, "Rain", ["Rain"]) == set()


def test_factorization_strings():
    assert factorization(load("sprinkler")) == (
        "p(Cloudy, Sprinkler, Rain, WetGrass) = p(Cloudy) p(Sprinkler | Cloudy) "
        "p(Rain | Cloudy) p(WetGrass | Sprinkler, Rain)"
    )
    assert factorization(load("gaussian_mixture")).splitlines() == [
        "p(c, x) = p(c) p(x | c)",
        "  x ~ N(-2 + 5*c, 1^2)",
    ]
    vae = factorization(load("vae")).splitlines()
    assert vae[0] == "p(z, x) = p(z) p(x | z)" and vae[2].startswith("  x: p_theta(x | z)")
    bn = BayesNet.from_cpds(
        [LinearGaussianCPD("a"), LinearGaussianCPD("b", parents=["a"], weights=[0.5])]
    )
    assert bn.factorization().splitlines()[0] == "p(a, b) = p(a) p(b | a)"


def test_unknown_or_overlapping_nodes_raise():
    bn = load("sprinkler")
    with pytest.raises(GraphError, match="'Snow'"):
        is_dseparated(bn, "Snow", "Rain")
    with pytest.raises(GraphError, match="'Snow'"):
        is_dseparated(bn, "Rain", "Cloudy", given=["Snow"])
    with pytest.raises(GraphError, match="'Snow'"):
        active_trail_nodes(bn, "Snow")
    with pytest.raises(GraphError, match="'Snow'"):
        markov_blanket(bn, "Snow")
    with pytest.raises(GraphError, match="disjoint"):
        is_dseparated(bn, "Rain", {"Rain", "Cloudy"})
    with pytest.raises(GraphError, match="disjoint"):
        is_dseparated(bn, "Rain", "Cloudy", given=["Rain"])
    with pytest.raises(GraphError, match="at least one"):
        is_dseparated(bn, set(), "Rain")
