"""The flow family: the run folder, the figures, and the flow's density math."""

from __future__ import annotations

import json
import math

import pytest
import torch

from probgen.data.densities import load_density
from probgen.infer import runs
from probgen.models.family import load_run, train
from probgen.models.flows.train import FlowConfig, FlowRun, _FlowProgram, coupling_flow


def _randomise(flow: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter (incl. the zero-initialised heads) a random value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


def test_new_flow_is_the_standard_normal():
    flow = coupling_flow(6, num_layers=3, hidden=16).eval()  # zero heads, uninitialised actnorm
    x = torch.randn(10, 6)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    # float32 spline inversion near the outer knots is good to ~1e-3 nats
    torch.testing.assert_close(flow.log_prob(x), expected, rtol=0, atol=5e-3)


@pytest.mark.parametrize("dim,perm", [(2, "reverse"), (5, "random")])
def test_log_prob_matches_autograd_jacobian(dim, perm):
    flow = coupling_flow(dim, num_layers=3, hidden=16, bins=4, permutation=perm).eval()
    _randomise(flow)
    flow = flow.double()
    base = torch.distributions.Normal(0.0, 1.0)

    def push(v: torch.Tensor) -> torch.Tensor:  # base -> data, transform by transform
        for t in flow().transforms:
            v = t(v)
        return v

    for z in 0.8 * torch.randn(4, dim, dtype=torch.float64):
        x = push(z).detach()
        jac = torch.autograd.functional.jacobian(push, z)
        expected = base.log_prob(z).sum() - torch.linalg.slogdet(jac)[1]
        torch.testing.assert_close(flow.log_prob(x), expected, rtol=1e-6, atol=1e-6)


def test_dropout_is_off_when_scoring_without_gradients():
    flow = coupling_flow(4, num_layers=2, hidden=16, dropout=0.5)
    _randomise(flow)
    program = _FlowProgram(flow, None)
    x = torch.randn(8, 4)
    import pyro.poutine as poutine

    def score() -> torch.Tensor:
        tr = poutine.trace(program.model).get_trace(x)
        return tr.log_prob_sum()

    with torch.no_grad():
        a, b = score(), score()
    assert torch.equal(a, b) and not flow.training
    score()  # with gradients: training mode, dropout active
    assert flow.training


def test_moons_run_folder_and_reload(tmp_path):
    out = tmp_path / "run"
    m = train("flow", data="moons", out=out, fast=True, progress=False).metrics
    for name in ("config.json", "weights.safetensors", "metrics.json", "samples.png",
                 "density.png", "metrics.jsonl"):
        assert (out / name).is_file(), name
    assert runs.read_json(out / "config.json")["family"] == "flow"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["nll_kind"] == "exact"
    assert saved["test_nll"] == pytest.approx(m["test_nll"])
    assert m["test_bpd"] == pytest.approx(m["test_nll"] / (2 * math.log(2)))
    assert m["test_mmd"] < 0.5 and m["test_energy"] >= 0
    run = load_run(out)
    assert isinstance(run, FlowRun) and not run.flow.training
    # the exact NLL recomputed independently from the reloaded flow
    test = load_density("moons", 2000, seed=2)  # the test split
    with torch.no_grad():
        nll = float(-run.flow.log_prob(test).mean())
    assert nll == pytest.approx(m["test_nll"], rel=1e-5)
    assert run.sample(5).shape == (5, 2)
    assert run.save_samples(tmp_path / "s.png", n=20).is_file()


def test_digits_run_reports_a_labelled_discrete_bound(tmp_path):
    out = tmp_path / "run"
    m = train("flow", data="digits", out=out, fast=True, progress=False).metrics
    assert m["nll_kind"] == "NLL bound (uniform dequantization, importance-weighted, K=4)"
    assert m["test_bpd"] == pytest.approx(m["test_nll"] / (64 * math.log(2)))
    # importance weighting can only tighten the bound (on average over 447 images)
    assert m["test_nll"] <= m["test_nll_1sample"] + 0.5
    # a fresh flow scores every image; the discrete NLL of 17 levels uniform is 64 log 17
    assert 0 < m["test_nll"] < 64 * math.log(17) + 50
    run = load_run(out)
    x = run.sample(6, seed=0)
    assert x.dtype == torch.long and x.shape == (6, 64) and 0 <= x.min() and x.max() <= 16
    again = run.evaluate()
    assert again["test_nll"] == pytest.approx(m["test_nll"], rel=1e-6)
    assert again["fd"] == pytest.approx(m["fd"], rel=1e-6)


def test_evaluate_is_reproducible_and_restores_modes():
    from probgen.data.splits import load_splits

    flow = coupling_flow(2, num_layers=1, hidden=8)
    run = FlowRun(flow, None, FlowConfig(), load_splits("rings"))
    a, b = run.evaluate(), run.evaluate()
    assert a == b and flow.training


@pytest.mark.parametrize("kwargs,arg", [
    ({"data": "mnist"}, "data"),
    ({"data": "digits", "hiddn": 3}, "hiddn"),
    ({"data": "moons", "dequantization": "variational"}, "dequantization"),
    ({"data": "digits", "dequantization": "gaussian", "steps": 1}, "dequantization"),
    ({"data": "text"}, "data"),
])
def test_bad_input_names_the_argument(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        train("flow", fast=True, progress=False, **kwargs)


def test_coupling_flow_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dim"):
        coupling_flow(1)
    with pytest.raises(ValueError, match="permutation"):
        coupling_flow(4, permutation="shuffle")
    with pytest.raises(ValueError, match="dropout"):
        coupling_flow(4, dropout=1.0)
    with pytest.raises(ValueError, match="run"):
        load_run("/nonexistent/run")


@pytest.mark.slow
def test_digits_defaults_reach_the_bar():
    """Issue #4: the default digits flow's importance-weighted discrete bound <= 94 nats."""
    m = train("flow", data="digits", progress=False).metrics
    assert m["test_nll"] <= 94.0, m
