"""Flow matching: paths and their velocities, the exact OT coupling, the CNF view of a velocity
field, training through fit, reflow, and the flowmatch family."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from probgen.errors import ProbgenError
from probgen.infer.fit import fit
from probgen.models.diffusion.flow_matching import (
    OTFM,
    FlowMatcher,
    FlowMatchingLoss,
    GaussianFM,
    RectifiedFlow,
    euler_sample,
    ode_sample,
    ot_coupling,
    straightness,
    velocity_cnf,
)
from probgen.models.family import load_run, train
from probgen.nn.time_embedding import TimeMLP


@pytest.mark.parametrize("matcher", [GaussianFM(0.01), RectifiedFlow(), OTFM()])
def test_conditional_velocity_is_the_time_derivative_of_the_path(matcher):
    torch.manual_seed(0)
    x0, x1 = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    h = 1e-6
    xp, _ = matcher.sample_location_and_conditional_flow(x0, x1, t + h)
    xm, _ = matcher.sample_location_and_conditional_flow(x0, x1, t - h)
    _, ut = matcher.sample_location_and_conditional_flow(x0, x1, t)
    assert torch.allclose((xp - xm) / (2 * h), ut, atol=1e-6)
    start, _ = matcher.sample_location_and_conditional_flow(x0, x1, torch.zeros(5).double())
    assert torch.allclose(start, x0)


def test_ot_coupling_is_the_brute_force_optimum():
    torch.manual_seed(0)
    x0, x1 = torch.randn(6, 2), torch.randn(6, 2)
    paired, _ = ot_coupling(x0, x1)
    best = min(sum(((x0[p[i]] - x1[i]) ** 2).sum().item() for i in range(6))
               for p in itertools.permutations(range(6)))
    assert ((paired - x1) ** 2).sum().item() == pytest.approx(best, rel=1e-5)
    assert sorted(map(tuple, paired.tolist())) == sorted(map(tuple, x0.tolist()))


class _Linear(nn.Module):
    def forward(self, x, t):  # dx/dt = x: x(1) = e x(0)
        return x


def test_velocity_cnf_likelihood_and_samplers_match_a_linear_flow():
    cnf = velocity_cnf(_Linear(), 2, rtol=1e-7, atol=1e-7)
    x = torch.randn(6, 2, dtype=torch.float64)
    base = torch.distributions.Normal(0.0, 1.0)
    expected = base.log_prob(x / math.e).sum(-1) - 2.0  # log |det dx1/dx0| = D
    cnf.double()
    assert torch.allclose(cnf.log_prob(x), expected, atol=1e-5)
    x0 = torch.randn(4, 2, dtype=torch.float64)
    assert torch.allclose(ode_sample(_Linear(), x0, rtol=1e-8, atol=1e-8), math.e * x0, atol=1e-5)
    assert torch.allclose(euler_sample(_Linear(), x0, steps=1000), math.e * x0, rtol=2e-3)


def test_straightness_is_zero_for_straight_flows_only():
    x0 = torch.randn(50, 2)
    assert straightness(lambda x, t: torch.ones_like(x), x0) < 1e-10
    assert straightness(_Linear(), x0) > 0.1


def test_flow_matching_through_fit_learns_a_gaussian():
    torch.manual_seed(0)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]])
    target = torch.distributions.MultivariateNormal(torch.tensor([2.0, -1.0]), cov)
    data = target.sample((4096,))
    v = TimeMLP(2, hidden=(64, 64), time_scale=10.0)
    fit(v, None, data, objective=FlowMatchingLoss(RectifiedFlow()), steps=300, batch_size=256,
        lr=3e-3, progress=False)
    x = target.sample((200,))
    with torch.no_grad():
        lp = velocity_cnf(v, 2, rtol=1e-5, atol=1e-5).log_prob(x)
    assert (lp - target.log_prob(x)).mean().abs().item() < 0.1
    s = ode_sample(v, torch.randn(2000, 2))
    assert torch.allclose(s.mean(0), target.mean, atol=0.1)
    assert torch.allclose(torch.cov(s.T), cov, atol=0.15)


def test_reflow_pairs_train_and_straighten():
    # a rectified flow trained on a deterministic coupling x1 = 2 x0 + 1 learns the straight map
    torch.manual_seed(0)
    x0 = torch.randn(2048, 2)
    v = TimeMLP(2, hidden=(64, 64), time_scale=10.0)
    fit(v, None, (2 * x0 + 1, x0), objective=FlowMatchingLoss(RectifiedFlow()), steps=300,
        batch_size=256, lr=3e-3, progress=False)
    z = torch.randn(500, 2)
    assert (euler_sample(v, z, steps=1) - (2 * z + 1)).abs().mean() < 0.1
    assert straightness(v, z) < 0.01


def test_bad_input_is_named():
    with pytest.raises(ProbgenError, match="batch"):
        FlowMatchingLoss().loss(lambda x, t: x, None, torch.zeros(3, 2), torch.zeros(3, 1))
    with pytest.raises(ProbgenError, match="sigma"):
        FlowMatcher(-1.0)
    with pytest.raises(ProbgenError, match="steps"):
        euler_sample(lambda x, t: x, torch.zeros(2, 2), steps=0)


def test_flowmatch_on_digits_reports_fd_and_a_dequantized_bound(tmp_path):
    run = train("flowmatch", data="digits", out=tmp_path / "d", fast=True, progress=False)
    m = run.metrics
    assert m["fd"] > 0 and math.isfinite(m["test_nll"])
    assert "bound" in m["nll_kind"] and "dequantization" in m["nll_kind"]
    s = run.sample(3, seed=0)
    assert s.dtype == torch.long and s.shape == (3, 64) and 0 <= s.min() and s.max() <= 16


def test_flowmatch_reflow_run_loads_from_its_last_round(tmp_path):
    run = train("flowmatch", data="moons", out=tmp_path / "r", fast=True, progress=False,
                method="rectified", reflow=1, sample_steps=2)
    assert (tmp_path / "r" / "reflow1" / "weights.safetensors").is_file()
    assert (tmp_path / "r" / "trajectories.png").is_file()
    back = load_run(tmp_path / "r")
    assert torch.equal(back.sample(4, seed=3), run.sample(4, seed=3))
    assert back.evaluate()["test_nll"] == pytest.approx(run.metrics["test_nll"], rel=1e-5)


def test_flowmatch_digits_hutchinson_likelihood_matches_the_exact_trace(tmp_path):
    run = train("flowmatch", data="digits", out=tmp_path / "h", fast=True, progress=False)
    assert not run.exact_trace and "Hutchinson" in run.metrics["nll_kind"]
    assert run.metrics["test_nll_stderr"] > 0
    y = 2 * (run.splits.test[:3].float() + 0.5) / 17 - 1
    with torch.random.fork_rng():
        torch.manual_seed(0)
        noisy = run.log_prob(y.repeat_interleave(300, 0)).reshape(3, 300).double()
    exact = velocity_cnf(run.velocity, 64, exact_trace=True, rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        want = exact.log_prob(y).double()
    err = noisy.std(1) / 300 ** 0.5
    assert (noisy.std(1) > 0).all()  # the estimate is noisy, the exact trace is not
    assert ((noisy.mean(1) - want).abs() < 4 * err + 1e-3).all(), (noisy.mean(1), want, err)
