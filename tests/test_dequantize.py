"""Dequantization bounds, checked against a closed form.

A Flow made of one fixed ActNorm is ``N(LOC, SCALE^2)`` over ``y``, so the exact discrete
probability of ``x`` is a product of Normal CDF differences over the cell ``[x/L, (x+1)/L)``.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from probgen.models.flows.dequantize import (
    DiscreteNLL,
    UniformDequantization,
    VariationalDequantization,
    dequantized_model,
    discrete_nll,
    log_likelihood_bound,
)
from probgen.models.flows.flows import Flow, realnvp
from probgen.nn.flow_layers import ActNorm

L = 4  # levels


LOC, SCALE = 0.5, 0.2


def _normal_flow(dim: int = 2) -> Flow:
    t = ActNorm(dim)
    with torch.no_grad():
        t.loc.fill_(LOC)
        t.log_scale.fill_(math.log(SCALE))
        t.initialized.fill_(True)
    return Flow([t], event_shape=(dim,))


def _exact_log_p(x: torch.Tensor) -> torch.Tensor:
    n = torch.distributions.Normal(LOC, SCALE)
    return (n.cdf((x + 1.0) / L) - n.cdf(x / L)).log().sum(-1)


def _data(n: int = 64) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, L, (n, 2))


def test_uniform_bound_is_below_exact_and_iw_closes_the_gap():
    x = _data()
    flow, deq = _normal_flow(), UniformDequantization(L)
    exact = _exact_log_p(x).mean().item()
    torch.manual_seed(1)
    one = log_likelihood_bound(flow, deq, x, 1).mean().item()
    iw = log_likelihood_bound(flow, deq, x, 2000).mean().item()
    assert abs(exact - iw) < 0.01  # IW bound, K=2000: equal up to Monte Carlo noise
    assert exact - one > 0.02  # the one-sample bound is visibly loose


def test_uniform_log_q_is_the_cell_volume():
    deq = UniformDequantization(17)
    x = torch.randint(0, 17, (3, 1, 8, 8))
    y, log_q = deq(x, num_samples=2)
    assert y.shape == (2, 3, 1, 8, 8) and log_q.shape == (2, 3)
    assert torch.allclose(log_q, torch.full((2, 3), 64 * math.log(17)))
    assert ((y * 17).floor() == x).all()


def test_variational_dequantization_stays_in_the_cell_and_learns():
    torch.manual_seed(0)
    x = _data(64)
    deq = VariationalDequantization(L, realnvp(2, 2, (16,), context_dim=2))
    y, log_q = deq(x, num_samples=3)
    assert ((y * L).floor() == x).all()
    flow = _normal_flow()
    opt = torch.optim.Adam(deq.parameters(), lr=1e-2)
    before = log_likelihood_bound(flow, deq, x).mean().item()
    for _ in range(25):
        opt.zero_grad()
        loss = -log_likelihood_bound(flow, deq, x).mean()
        loss.backward()
        opt.step()
    after = discrete_nll(flow, deq, x, num_samples=1).nats
    exact = -_exact_log_p(x).mean().item()
    assert after < -before  # a better (tighter) bound than at the start
    assert after > exact - 0.02  # still a bound (up to Monte Carlo noise)


def test_variational_log_q_matches_numerical_density():
    """``log q(u|x)`` of the sigmoid-flow noise integrates to one over the unit square."""
    torch.manual_seed(0)
    deq = VariationalDequantization(L, realnvp(2, 2, (8,), context_dim=2))
    x = torch.tensor([[1, 2]])
    u, log_q = deq.sample_noise(x, 4000)
    # importance identity: E_q[1 / q(u|x)] = area of the cell = 1
    assert abs((-log_q).exp().mean().item() - 1.0) < 0.1


def test_discrete_nll_report_is_labelled_a_bound():
    x = _data(20)
    r = discrete_nll(_normal_flow(), UniformDequantization(L), x, num_samples=10, batch_size=7)
    assert isinstance(r, DiscreteNLL) and r.kind == "bound"
    assert "bound" in r.label and "K=10" in r.label
    assert math.isclose(r.bits_per_dim, r.nats / (2 * math.log(2)))
    assert r.nats > -_exact_log_p(x).mean().item() - 1e-3


def test_dequantized_model_log_joint_is_the_bound():
    pyro.clear_param_store()
    x = _data(5)
    flow, deq = realnvp(2, 1, (8,)), UniformDequantization(L)
    torch.manual_seed(3)
    tr = pyro.poutine.trace(dequantized_model(flow, deq)).get_trace(x)
    torch.manual_seed(3)
    assert torch.allclose(tr.log_prob_sum(), log_likelihood_bound(flow, deq, x).sum())


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: UniformDequantization(1), "levels"),
        (lambda: UniformDequantization(4)(torch.tensor([[0, 4]])), "x"),
        (lambda: UniformDequantization(4)(torch.tensor([[0.5, 1.0]])), "x"),
        (lambda: UniformDequantization(4)(torch.tensor([[0, 1]]), num_samples=0), "num_samples"),
        (lambda: VariationalDequantization(4, realnvp(2)), "flow_q"),
        (lambda: VariationalDequantization(4, realnvp(2, context_dim=2))(torch.zeros(1, 3)), "x"),
        (lambda: dequantized_model(torch.nn.Linear(2, 2), UniformDequantization(4)), "flow"),
    ],
)
def test_bad_input_names_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()
