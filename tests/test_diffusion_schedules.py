"""Schedules, forward-process posterior, parameterisations and the U-Net."""

from __future__ import annotations

import math

import pytest
import torch

from probgen.errors import ProbgenError
from probgen.models.diffusion.schedules import (
    PREDICTIONS,
    NoiseSchedule,
    alpha_bar,
    alpha_bar_from_log_snr,
    betas_from_alpha_bars,
    cosine_betas,
    cosine_snr_alpha_bars,
    from_x0_eps,
    linear_betas,
    log_snr,
    posterior,
    q_sample,
    snr,
    to_x0_eps,
)
from probgen.nn.unet import UNet


def test_linear_schedule_matches_ho_et_al():
    b = linear_betas(1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    ab = NoiseSchedule.make("linear", 1000).alpha_bars
    # Ho et al. 2020, sec. 4: L_T = KL(q(x_T|x_0) || N(0, I)) ~ 1e-5 per dim: ab_T ~ 4e-5
    assert 1e-5 < ab[-1].item() < 1e-4
    # the continuous VP limit agrees with the discrete cumulative product
    t = torch.tensor([100, 400, 900])
    assert torch.allclose(ab[t].log(), alpha_bar(t / 1000.0, "linear").log(), rtol=0.01)


def test_cosine_schedule_is_the_closed_form_at_the_grid():
    T = 50
    sched = NoiseSchedule.make("cosine", T)
    grid = torch.arange(T + 1) / T
    f = torch.cos((grid.double() + 0.008) / 1.008 * math.pi / 2) ** 2
    expected = (f / f[0]).float()
    # clipping at 0.999 only touches the last step
    assert torch.allclose(sched.alpha_bars[:-1], expected[:-1], atol=1e-6)
    assert torch.allclose(betas_from_alpha_bars(sched.alpha_bars), cosine_betas(T), atol=1e-6)


def test_truncated_cosine_is_the_cosine_in_log_snr():
    """cosine_snr: log SNR = -2 log tan(theta) with theta evenly spaced between the ends;
    without truncation (ends near +-inf) it is Nichol & Dhariwal's cosine with s = 0, and
    every step's SNR ratio stays small, unlike the clipped last step of the plain cosine."""
    T = 200
    ab = cosine_snr_alpha_bars(T, log_snr_min=-10.0, log_snr_max=7.0)
    lam = log_snr(ab[1:].double())
    assert lam[0].item() == pytest.approx(7.0, abs=1e-3)
    assert lam[-1].item() == pytest.approx(-10.0, abs=1e-3)
    theta = torch.atan(torch.exp(-lam / 2))
    assert torch.allclose(theta.diff(), theta.diff()[:1].expand(T - 1), atol=1e-5)
    # KL(q(x_T | x_0) || N(0, I)) for 64 pixels in [-1, 1]: below 1e-2 nats
    abT = ab[-1].double()
    kl = 0.5 * 64 * (abT + (1 - abT) - 1 - torch.log1p(-abT))
    assert kl.item() < 1e-2
    assert lam.diff().abs().max().item() < 2.0  # largest at the low-SNR end
    plain = log_snr(NoiseSchedule.make("cosine", T).alpha_bars[1:].double())
    assert plain.diff().abs().max().item() > 5.0  # the clipped beta_T = 0.999
    # wide ends: the untruncated cosine with s = 0 at the interior grid points
    wide = cosine_snr_alpha_bars(T, log_snr_min=-40.0, log_snr_max=40.0)
    u = torch.arange(1, T + 1, dtype=torch.float64)
    a, b = math.atan(math.exp(-20.0)), math.atan(math.exp(20.0))
    assert torch.allclose(wide[1:-1].double(), torch.cos(a + (u[:-1] - 1) / (T - 1) * (b - a))
                          ** 2, atol=1e-6)
    sched = NoiseSchedule.make("cosine_snr", T)
    assert torch.allclose(sched.alpha_bars, ab) and sched.T == T
    with pytest.raises(ProbgenError, match="log_snr_min"):
        cosine_snr_alpha_bars(10, log_snr_min=3.0, log_snr_max=1.0)


def test_snr_round_trip():
    ab = torch.tensor([0.999, 0.5, 1e-3])
    assert torch.allclose(snr(ab), ab / (1 - ab))
    assert torch.allclose(alpha_bar_from_log_snr(log_snr(ab)), ab, rtol=1e-5)


def test_posterior_is_gaussian_conditioning():
    """q(x_{t-1} | x_t, x_0) of eq. 6-7 against Bayes' rule for the 2-D Gaussian
    (x_{t-1}, x_t) | x_0 computed from its covariance matrix."""
    sched = NoiseSchedule.make("linear", 20)
    x0, xt = torch.tensor([0.7]), torch.tensor([-0.3])
    for t in (2, 9, 20):
        ab_t, ab_s = sched.alpha_bar(torch.tensor(t)), sched.alpha_bar(torch.tensor(t - 1))
        alpha = 1 - sched.beta(torch.tensor(t))
        # joint of (x_s, x_t) given x_0
        var_s = 1 - ab_s
        cov = alpha.sqrt() * var_s
        var_t = alpha * var_s + (1 - alpha)
        mean_s, mean_t = ab_s.sqrt() * x0, ab_t.sqrt() * x0
        exp_mean = mean_s + cov / var_t * (xt - mean_t)
        exp_var = var_s - cov ** 2 / var_t
        m, v = posterior(x0, xt, ab_t, ab_s)
        assert torch.allclose(m, exp_mean, atol=1e-5) and torch.allclose(v, exp_var, atol=1e-6)


@pytest.mark.parametrize("kind", [k for k in PREDICTIONS if k != "levels"])
def test_parameterisations_round_trip(kind):
    sched = NoiseSchedule.make("cosine", 100)
    x0, eps = torch.randn(4, 3), torch.randn(4, 3)
    ab = sched.alpha_bar(torch.tensor([1, 30, 60, 99]))
    xt = q_sample(x0, ab, eps)
    pred = from_x0_eps(x0, eps, kind, xt, ab)
    x0b, epsb = to_x0_eps(pred, kind, xt, ab)
    assert torch.allclose(x0b, x0, atol=1e-4) and torch.allclose(epsb, eps, atol=1e-4)


def test_score_is_the_gradient_of_the_forward_marginal():
    ab = torch.tensor(0.3)
    x0, eps = torch.randn(5), torch.randn(5)
    xt = q_sample(x0, ab, eps).requires_grad_(True)
    logq = torch.distributions.Normal(ab.sqrt() * x0, (1 - ab).sqrt()).log_prob(xt).sum()
    (grad,) = torch.autograd.grad(logq, xt)
    assert torch.allclose(from_x0_eps(x0, eps, "score", xt, ab), grad, atol=1e-5)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ProbgenError, match="schedule"):
        NoiseSchedule.make("quadratic", 10)
    with pytest.raises(ProbgenError, match="T:"):
        linear_betas(0)
    with pytest.raises(ProbgenError, match="prediction"):
        to_x0_eps(torch.zeros(1), "noise", torch.zeros(1), torch.tensor(0.5))
    with pytest.raises(ProbgenError, match="t:"):
        NoiseSchedule.make("linear", 10).alpha_bar(torch.tensor([11]))


@pytest.mark.parametrize("shape, kw", [((1, 8, 8), {"mults": (1, 2)}),
                                       ((3, 32, 32), {"mults": (1, 2, 2, 2)})])
def test_unet_shapes_and_gradients(shape, kw):
    net = UNet(shape[0], channels=8, num_classes=3, **kw)
    with torch.no_grad():  # the zero-initialised output layer hides gradients otherwise
        net.out.weight.normal_()
    x = torch.randn(2, *shape)
    out = net(x, torch.rand(2), torch.tensor([0, 2]))
    assert out.shape == x.shape
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    # the label and the time change the output; y=None is the "no label" embedding
    a = net(x, torch.full((2,), 0.5), torch.tensor([0, 0]))
    b = net(x, torch.full((2,), 0.5), torch.tensor([1, 1]))
    c = net(x, torch.full((2,), 0.5), None)
    d = net(x, torch.full((2,), 0.5), torch.tensor([3, 3]))
    assert not torch.allclose(a, b) and torch.allclose(c, d)


def test_unet_bad_inputs():
    net = UNet(1, channels=8, mults=(1, 2, 2))
    with pytest.raises(ProbgenError, match="divisible by 4"):
        net(torch.randn(1, 1, 6, 6), torch.rand(1))
    with pytest.raises(ProbgenError, match="x:"):
        net(torch.randn(1, 2, 8, 8), torch.rand(1))
    with pytest.raises(ProbgenError, match="y:"):
        net(torch.randn(1, 1, 8, 8), torch.rand(1), torch.tensor([0]))
