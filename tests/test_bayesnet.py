"""BayesNet validation errors, compiled programs, handlers, sampling and learning."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from helpers import brute_force, random_network
from torch import nn

from probgen.errors import CPDError, EvidenceError, GraphError
from probgen.graph import BayesNet, LinearGaussianCPD, NeuralCPD, TabularCPD
from probgen.program import condition, do, graph_of


def _sprinkler() -> BayesNet:
    return BayesNet.load("sprinkler")


# --- validation: one test per error ---------------------------------------------------
def test_cycle_is_refused_naming_the_cycle():
    bn = BayesNet([("A", "B"), ("B", "C")])
    with pytest.raises(GraphError, match="'C' -> 'A' closes the cycle"):
        bn.add_edge("C", "A")


def test_column_not_summing_to_one_is_refused_not_renormalised():
    with pytest.raises(CPDError, match=r"'B'.*column 1 \(A=y\) sums to 0.9"):
        TabularCPD("B", [[0.5, 0.4], [0.5, 0.5]], parents=["A"],
                   parent_states={"A": ["x", "y"]})


def test_tabular_values_are_an_immutable_copy_validated_again_when_tol_changes():
    user = np.array([[0.3, 0.8], [0.7, 0.2]])
    cpd = TabularCPD("B", user, parents=["A"], parent_cards=[2])
    assert user.flags.writeable  # the caller's array is copied, not frozen
    user[0, 0] = 5.0
    assert cpd.values[0, 0] == 0.3
    with pytest.raises(ValueError):
        cpd.factor()[0, 0] = 5.0  # the stored table is read-only
    bn = BayesNet.from_cpds([TabularCPD("A", [0.5, 0.5]), cpd])
    bn.check()
    cpd.tol = -1.0  # no column sums to 1 within a negative tolerance: check() re-validates
    with pytest.raises(CPDError, match="column"):
        bn.check()


def test_negative_entries_are_refused():
    with pytest.raises(CPDError, match="'A'.*negative"):
        TabularCPD("A", [1.2, -0.2])


def test_wrong_number_of_columns_is_refused():
    with pytest.raises(CPDError, match="'B'.*3 columns.*need 2"):
        TabularCPD("B", np.full((2, 3), 0.5), parents=["A"], parent_states={"A": ["x", "y"]})


def test_state_names_must_match_rows():
    with pytest.raises(CPDError, match="'A'.*3 state names"):
        TabularCPD("A", [0.5, 0.5], states=["a", "b", "c"])


def test_parent_cardinality_mismatch_names_both_nodes():
    bn = BayesNet([("A", "B")])
    bn.add_cpds(TabularCPD("A", [0.2, 0.3, 0.5], states=["l", "m", "h"]),
                TabularCPD("B", [[0.5, 0.5], [0.5, 0.5]], parents=["A"],
                           parent_states={"A": ["l", "h"]}))
    with pytest.raises(CPDError, match="'B' expects parent 'A'.*cardinality 2.*cardinality 3"):
        bn.check()


def test_missing_cpd_is_reported():
    bn = BayesNet([("A", "B")])
    bn.add_cpds(TabularCPD("A", [0.5, 0.5]))
    with pytest.raises(CPDError, match="'B'.*no CPD"):
        bn.check()


def test_parents_must_match_graph():
    bn = BayesNet([("A", "B"), ("C", "B")])
    with pytest.raises(GraphError, match="CPD of 'B' has parents \\['A'\\].*\\['A', 'C'\\]"):
        bn.add_cpds(TabularCPD("B", [[0.5, 0.5], [0.5, 0.5]], parents=["A"],
                               parent_cards=[2]))


def test_unknown_state_in_probs_and_sampling_evidence():
    bn = _sprinkler()
    with pytest.raises(EvidenceError, match="'maybe'.*'Rain'"):
        bn.sample(10, evidence={"Rain": "maybe"})
    with pytest.raises(EvidenceError, match="'Q'.*'Cloudy'"):
        bn.cpd("Rain").probs(Cloudy="Q")


def test_unknown_node_is_reported():
    with pytest.raises(GraphError, match="'Nope'"):
        _sprinkler().parents("Nope")


# --- programs ---------------------------------------------------------------------------
def test_program_log_prob_equals_exact_log_prob():
    bn = BayesNet.load("asia")
    df = bn.sample(50, seed=0)
    trace = pyro.poutine.trace(bn.program()).get_trace(data=df)
    assert torch.allclose(trace.log_prob_sum(), bn.log_prob(df).sum())


def test_program_with_missing_values_marginalises_by_enumeration():
    from pyro.infer import TraceEnum_ELBO

    bn = _sprinkler()
    df = pd.DataFrame({"Cloudy": [None, "T"], "Sprinkler": ["F", None],
                       "Rain": [None, None], "WetGrass": ["T", "F"]})
    model = bn.program()
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    loss = elbo.loss(model, lambda **kw: None, data=df)
    assert abs(-loss - bn.log_prob(df).sum().item()) < 1e-9


def test_condition_and_do_handlers():
    bn = _sprinkler()
    model = bn.program()
    tr = pyro.poutine.trace(condition(model, {"Rain": "T"})).get_trace(num_rows=7)
    assert tr.nodes["Rain"]["is_observed"] and (tr.nodes["Rain"]["value"] == 1).all()
    # do(Sprinkler=T) cuts Sprinkler from Cloudy: the mutilated network gives
    # P(WetGrass=T | do(Sprinkler=T)) = sum_c P(c) sum_r P(r|c) P(W=T | S=T, r) = 0.945
    pyro.set_rng_seed(0)
    values = do(model, {"Sprinkler": "T"})(num_rows=20000)
    assert (values["Sprinkler"] == 1).all()
    assert abs(values["WetGrass"].double().mean().item() - 0.945) < 0.01
    assert abs(values["Cloudy"].double().mean().item() - 0.5) < 0.02


def test_neural_cpd_vae_program_trains_parameters():
    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(2, 4)

        def forward(self, z):
            return dist.Bernoulli(logits=self.net(z)).to_event(1)

    class Prior(nn.Module):
        def forward(self):
            return dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)

    bn = BayesNet([("z", "x")])
    bn.add_node("z", latent=True)
    bn.add_cpds(NeuralCPD("z", Prior()), NeuralCPD("x", Decoder(), parents=["z"]))
    model = bn.program(observed=["x"])
    assert len(list(model.parameters())) == 2
    tr = pyro.poutine.trace(model).get_trace(torch.ones(5, 4))
    assert tr.nodes["x"]["is_observed"] and tr.nodes["z"]["value"].shape == (5, 2)


def test_graph_of_a_hand_written_program():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        tau = pyro.sample("tau", dist.Gamma(1.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, tau), obs=x)

    bn = graph_of(model, torch.zeros(4))
    assert set(bn.edges) == {("mu", "x"), ("tau", "x")}
    assert bn.latent_nodes() == ["mu", "tau"] and bn.plate_of("x") == "data"
    assert bn.is_dseparated("mu", "tau") and not bn.is_dseparated("mu", "tau", ["x"])


def test_graph_of_a_compiled_program_recovers_the_network():
    bn = BayesNet.load("asia")
    traced = graph_of(bn.program(), num_rows=3)
    assert set(traced.edges) == set(bn.edges)


# --- sampling --------------------------------------------------------------------------
def test_ancestral_sampling_frequencies_match_exact_marginals():
    bn = BayesNet.load("asia")
    df = bn.sample(40000, seed=0)
    freq = (df["dysp"] == "yes").mean()
    exact = bn.query(["dysp"]).values[bn.states("dysp").index("yes")]
    assert abs(freq - exact) < 0.01


@pytest.mark.parametrize("method", ["rejection", "likelihood_weighting"])
def test_sampling_under_evidence_matches_posterior(method):
    bn = _sprinkler()
    df = bn.sample(20000, evidence={"WetGrass": "T"}, method=method, seed=1)
    w = df["_weight"] if method == "likelihood_weighting" else np.full(len(df), 1 / len(df))
    est = float(np.sum(w * (df["Rain"] == "T")))
    assert abs(est - bn.query(["Rain"], {"WetGrass": "T"}).values[1]) < 0.015


def test_impossible_evidence_in_sampling_raises():
    bn = BayesNet.load("asia")
    with pytest.raises(EvidenceError, match="probability zero"):
        bn.sample(10, evidence={"either": "no", "tub": "yes"}, method="likelihood_weighting")


# --- learning ---------------------------------------------------------------------------
def test_mle_equals_pgmpy():
    from pgmpy.models import DiscreteBayesianNetwork
    from pgmpy.parameter_estimator import DiscreteMLE

    bn = BayesNet.load("asia")
    df = bn.sample(3000, seed=2)
    ref = DiscreteBayesianNetwork(bn.edges)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(df, estimator=DiscreteMLE(state_names={n: bn.states(n) for n in bn.nodes}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bn.fit(df)
    ours = bn.to_pgmpy()
    for cpd in ref.get_cpds():
        assert cpd.to_factor() == ours.get_cpds(cpd.variable).to_factor()


def test_fit_refuses_missing_values_naming_the_column():
    bn = _sprinkler()
    df = bn.sample(10, seed=0)
    df.loc[3, "Rain"] = None
    with pytest.raises(EvidenceError, match="'Rain'.*row 3"):
        bn.fit(df)


@pytest.mark.parametrize("inference", ["svi", "nuts"])
def test_bayesian_fit_matches_the_conjugate_posterior(inference):
    bn = BayesNet()
    bn.add_cpds(TabularCPD("A", [0.3, 0.7], states=["a0", "a1"]),
                TabularCPD("B", [[0.2, 0.6], [0.3, 0.3], [0.5, 0.1]], states=["x", "y", "z"],
                           parents=["A"], parent_states={"A": ["a0", "a1"]}))
    df = bn.sample(150, seed=3)
    from probgen.infer.learn import _codes, state_counts

    counts = state_counts(bn, "B", _codes(bn, df))
    exact = (counts + 1.0) / (counts + 1.0).sum(-1, keepdims=True)  # Dirichlet(1 + counts)
    result = bn.fit(df, prior=1.0, inference=inference, num_samples=150, warmup_steps=100,
                    svi_steps=1500, seed=0, max_tree_depth=4)
    assert result.method == f"bayes-{inference}"
    assert result.idata.posterior["theta_B"].shape[-2:] == (2, 3)
    np.testing.assert_allclose(bn.cpd("B").table().numpy(), exact, atol=0.03)


def test_linear_gaussian_fit_recovers_regression():
    bn = BayesNet()
    bn.add_cpds(LinearGaussianCPD("x", bias=1.0, std=2.0),
                LinearGaussianCPD("y", parents=["x"], weights=[-0.5], bias=3.0, std=0.5))
    df = bn.sample(4000, seed=0)
    bn.fit(df)
    X = np.column_stack([np.ones(len(df)), df["x"]])
    beta = np.linalg.lstsq(X, df["y"], rcond=None)[0]
    cpd = bn.cpd("y")
    assert abs(cpd.weights[0] - beta[1]) < 1e-9 and abs(cpd.bias - beta[0]) < 1e-9
    assert abs(cpd.weights[0] + 0.5) < 0.05


def test_random_network_round_trip_through_sampling_and_fit():
    rng = np.random.default_rng(0)
    bn = random_network(rng, 4)
    df = bn.sample(30000, seed=1)
    learned = bn.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learned.fit(df)
    q = ["V3"]
    np.testing.assert_allclose(learned.query(q).values, brute_force(bn, q, {}), atol=0.02)
