"""EBM objectives: each against its closed form on a Gaussian energy (value and gradient), and
each recovering a known 2-D Gaussian when trained by ``fit``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from probgen.errors import ProbgenError
from probgen.infer.fit import fit
from probgen.models.ebm import (
    NCE,
    ContrastiveDivergence,
    DenoisingScoreMatching,
    EnergyProgram,
    NCSNLoss,
    QuadraticEnergy,
    ScoreMatching,
    SlicedScoreMatching,
    energy_of,
)

M = torch.tensor([0.5, -1.0])
C = torch.tensor([[1.0, 0.5], [0.5, 0.8]])


def _gaussian_data(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return M + torch.randn(n, 2, generator=g) @ torch.linalg.cholesky(C).T


def _random_quadratic(seed=1):
    torch.manual_seed(seed)
    q = QuadraticEnergy(2)
    with torch.no_grad():
        q.mu.normal_()
        q.raw.normal_(0, 0.3)
    return q


def _grad_mu(loss, q):
    (g,) = torch.autograd.grad(loss, q.mu)
    return g


# ----------------------------------------------------------------------------- closed forms


def test_score_matching_value_and_gradient():
    q = _random_quadratic()
    x = torch.randn(16, 2)
    loss = ScoreMatching().loss(EnergyProgram(q).model, None, x)
    P = q.precision().detach()
    r = (x - q.mu.detach()) @ P
    expected = (-torch.trace(P) + 0.5 * (r ** 2).sum(-1)).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # d/dmu of sum 1/2 |P (x - mu)|^2 = -sum P^2 (x - mu)
    assert torch.allclose(_grad_mu(loss, q), -(r @ P).sum(0), atol=1e-4)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_sliced_score_matching_value_and_gradient(kind):
    q = _random_quadratic()
    x = torch.randn(16, 2)
    obj = SlicedScoreMatching(3, kind)
    torch.manual_seed(5)
    loss = obj.loss(EnergyProgram(q).model, None, x)
    torch.manual_seed(5)
    v = torch.randn(3, 16, 2)
    v = v.sign() if kind == "rademacher" else v
    P = q.precision().detach()
    r = (x - q.mu.detach()) @ P
    vpv = torch.einsum("mni,ij,mnj->n", v, P, v) / 3
    expected = (-vpv + 0.5 * (r ** 2).sum(-1)).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(_grad_mu(loss, q), -(r @ P).sum(0), atol=1e-4)


def test_sliced_is_unbiased_for_exact_score_matching():
    q = _random_quadratic()
    x = torch.randn(64, 2)
    exact = ScoreMatching().loss(EnergyProgram(q).model, None, x).item()
    m = 300
    sliced = SlicedScoreMatching(m).loss(EnergyProgram(q).model, None, x).item()
    P = q.precision().detach()
    sd = math.sqrt(64 * 2 * torch.trace(P @ P).item() / m)  # Var v^T P v = 2 tr P^2
    assert sliced == pytest.approx(exact, abs=4 * sd)


def test_dsm_value_and_gradient():
    q = _random_quadratic()
    x = torch.randn(16, 2)
    sigma = 0.3
    torch.manual_seed(7)
    loss = DenoisingScoreMatching(sigma).loss(EnergyProgram(q).model, None, x)
    torch.manual_seed(7)
    z = torch.randn(16, 2)
    P = q.precision().detach()
    res = -(x + sigma * z - q.mu.detach()) @ P + z / sigma
    assert loss.item() == pytest.approx(0.5 * (res ** 2).sum().item(), rel=1e-5)
    assert torch.allclose(_grad_mu(loss, q), (res @ P).sum(0), atol=1e-3)


class _GaussianScore(nn.Module):
    """The exact noise-conditional score of N(mu, S) blurred by sigma."""

    def __init__(self):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(2))
        self.raw = nn.Parameter(torch.zeros(2, 2))

    def cov(self):
        low = torch.tril(self.raw, -1) + torch.diag(torch.exp(torch.diagonal(self.raw)))
        return low @ low.T

    def forward(self, x, sigma):
        cov = self.cov() + sigma[:, None, None] ** 2 * torch.eye(2)
        return -torch.linalg.solve(cov, (x - self.mu).unsqueeze(-1)).squeeze(-1)


def test_ncsn_value_and_gradient():
    net = _GaussianScore()
    with torch.no_grad():
        net.mu.copy_(torch.tensor([0.3, -0.2]))
    x = torch.randn(16, 2)
    obj = NCSNLoss([1.0, 0.5, 0.1])
    torch.manual_seed(3)
    loss = obj.loss(net, None, x)
    torch.manual_seed(3)
    sig = torch.tensor([1.0, 0.5, 0.1])[torch.randint(3, (16,))]
    z = torch.randn(16, 2)
    xt = x + sig[:, None] * z
    s = -(xt - net.mu.detach()) / (1 + sig[:, None] ** 2)  # cov = I
    res = sig[:, None] * s + z
    assert loss.item() == pytest.approx(0.5 * (res ** 2).sum().item(), rel=1e-5)
    # d/dmu: res_n depends on mu through sigma_n / (1 + sigma_n^2) * mu
    expected = (res * (sig / (1 + sig ** 2))[:, None]).sum(0)
    assert torch.allclose(_grad_mu(loss, net), expected, atol=1e-4)


def test_cd_value_and_gradient():
    q = _random_quadratic()
    model = EnergyProgram(q).model
    x = torch.randn(16, 2)
    cd = ContrastiveDivergence(-3 * torch.ones(2), 3 * torch.ones(2), step_size=0.05,
                               num_steps=5, alpha=0.0, capacity=50)
    saved = cd.buffer.states.clone()
    torch.manual_seed(11)
    loss = cd.loss(model, None, x)
    after = cd.buffer.states.clone()
    cd.buffer.states.copy_(saved)
    torch.manual_seed(11)
    neg, slots = cd.negatives(q, 16)
    once = torch.tensor([(slots == s).sum() == 1 for s in slots])
    assert torch.equal(after[slots[once]], neg[once])  # the chains were written back
    P = q.precision().detach()
    mu = q.mu.detach()
    e = lambda u: 0.5 * (((u - mu) @ P) * (u - mu)).sum(-1)  # noqa: E731
    assert loss.item() == pytest.approx((e(x) - e(neg)).sum().item(), rel=1e-4, abs=1e-4)
    # grad wrt mu: -sum P (x - mu) + sum P (neg - mu)
    expected = -((x - mu) @ P).sum(0) + ((neg - mu) @ P).sum(0)
    assert torch.allclose(_grad_mu(loss, q), expected, atol=1e-4)


def test_cd_chains_persist_only_in_training_steps():
    q = _random_quadratic()
    cd = ContrastiveDivergence(-torch.ones(2), torch.ones(2), capacity=20, num_steps=2)
    before = cd.buffer.states.clone()
    with torch.no_grad():
        cd.loss(EnergyProgram(q).model, None, torch.zeros(8, 2))
    assert torch.equal(cd.buffer.states, before)
    cd.loss(EnergyProgram(q).model, None, torch.zeros(8, 2))
    assert not torch.equal(cd.buffer.states, before)


def test_nce_value_and_gradient():
    q = _random_quadratic()
    nce = NCE(torch.zeros(2), 2 * torch.ones(2), nu=3)
    with torch.no_grad():
        nce.log_z.fill_(0.7)
    x = torch.randn(16, 2)
    torch.manual_seed(2)
    loss = nce.loss(EnergyProgram(q).model, None, x)
    torch.manual_seed(2)
    y = 2 * torch.randn(48, 2)
    noise = torch.distributions.Normal(torch.zeros(2), 2 * torch.ones(2))
    P, mu = q.precision().detach(), q.mu.detach()

    def logit(u):
        e = 0.5 * (((u - mu) @ P) * (u - mu)).sum(-1)
        return -e - 0.7 - noise.log_prob(u).sum(-1) - math.log(3)

    gx, gy = logit(x), logit(y)
    expected = -torch.nn.functional.logsigmoid(gx).sum() - torch.nn.functional.logsigmoid(
        -gy).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    (g,) = torch.autograd.grad(loss, nce.log_z)
    closed = (1 - torch.sigmoid(gx)).sum() - torch.sigmoid(gy).sum()
    assert g.item() == pytest.approx(closed.item(), rel=1e-4)


# ----------------------------------------------------------------------------- recovery


def _decay(steps):
    return lambda s: max(0.02, 1.0 - s / steps)  # linear decay: averages the gradient noise


def _fit_quadratic(objective, steps=400, lr=0.05):
    q = QuadraticEnergy(2)
    prog = EnergyProgram(q)
    fit(prog.model, None, _gaussian_data(), objective=objective, steps=steps, batch_size=256,
        lr=lr, progress=False, lr_schedule=_decay(steps))
    return q.mu.detach(), torch.linalg.inv(q.precision().detach())


@pytest.mark.parametrize("make,extra", [
    (ScoreMatching, 0.0),
    (lambda: SlicedScoreMatching(4), 0.0),
    (lambda: DenoisingScoreMatching(0.3), 0.09),  # DSM learns the data blurred by sigma
    (lambda: NCE(torch.tensor([0.5, -1.0]), 1.5 * torch.ones(2), nu=2), 0.0),
    (lambda: ContrastiveDivergence(-4 * torch.ones(2), 4 * torch.ones(2), step_size=0.03,
                                   num_steps=10, alpha=0.0, reinit=0.0, capacity=256), 0.0),
], ids=["sm", "sliced", "dsm", "nce", "cd"])
def test_objective_recovers_a_gaussian(make, extra):
    mu, cov = _fit_quadratic(make())
    assert torch.allclose(mu, M, atol=0.1), mu
    assert torch.allclose(cov, C + extra * torch.eye(2), atol=0.12), cov


def test_ncsn_recovers_a_gaussian():
    net = _GaussianScore()
    fit(net, None, _gaussian_data(), objective=NCSNLoss([1.0, 0.5, 0.2, 0.1]), steps=400,
        batch_size=256, lr=0.05, progress=False, lr_schedule=_decay(400))
    assert torch.allclose(net.mu.detach(), M, atol=0.1)
    assert torch.allclose(net.cov().detach(), C, atol=0.12)


def test_nce_learns_the_log_normaliser():
    nce = NCE(torch.tensor([0.5, -1.0]), 1.5 * torch.ones(2), nu=2)
    q = QuadraticEnergy(2)
    fit(EnergyProgram(q).model, None, _gaussian_data(), objective=nce, steps=400,
        batch_size=256, lr=0.05, progress=False, lr_schedule=_decay(400))
    # Z of (x - mu)^T P (x - mu) / 2 is 2 pi / sqrt(det P)
    log_z = math.log(2 * math.pi) - 0.5 * torch.logdet(q.precision().detach()).item()
    assert nce.log_z.item() == pytest.approx(log_z, abs=0.1)


def test_energy_of_reads_any_program_with_an_energy_factor():
    import pyro

    q = _random_quadratic()

    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.factor("energy", -q(x))

    x = torch.randn(5, 2)
    assert torch.allclose(energy_of(model, x), q(x))
    with pytest.raises(ProbgenError, match="no 'energy' factor"):
        energy_of(lambda x: None, x)


@pytest.mark.parametrize("call", [
    lambda: DenoisingScoreMatching(-0.1),
    lambda: NCSNLoss([1.0, -0.5]),
    lambda: SlicedScoreMatching(0),
    lambda: ContrastiveDivergence(-torch.ones(2), torch.ones(2), step_size=-1.0),
    lambda: NCE(torch.zeros(2), torch.ones(2), nu=0),
    lambda: ScoreMatching().loss(EnergyProgram(QuadraticEnergy(2)).model, None,
                                 torch.tensor([[float("nan"), 0.0]])),
])
def test_bad_objective_arguments(call):
    with pytest.raises(ProbgenError) as info:
        call()
    assert "\n" not in str(info.value)
