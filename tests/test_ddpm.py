"""DDPM as a Pyro program: the ELBO term by term against Monte Carlo, the samplers against
each other, the discrete decoder against brute force, the family through the CLI."""

from __future__ import annotations

import math

import pytest
import torch
from pyro import poutine
from torch.distributions import Normal

from probgen.errors import ProbgenError
from probgen.graph import load as load_graph
from probgen.models.config import ConfigError
from probgen.models.diffusion.ddpm import DDPM
from probgen.models.diffusion.decoder import DiscretizedGaussian
from probgen.models.diffusion.elbo import DiffusionELBO, elbo_terms, prior_kl, sampled_elbo, term_at
from probgen.models.diffusion.samplers import ddim_mean_var, ddim_step, ddpm_step, sample
from probgen.models.diffusion.schedules import NoiseSchedule, posterior, q_sample
from probgen.nn.time_embedding import TimeMLP
from probgen.program import graph_of


def _ddpm(T=4, levels=None, dim=3, variance="beta", prediction="epsilon", classes=0):
    torch.manual_seed(0)
    k = (levels or 1) if prediction == "levels" else 1
    net = TimeMLP(dim, hidden=(16, 16), out_dim=dim * k, num_classes=classes)
    with torch.no_grad():  # a network far from zero, so every term is non-trivial
        for p in net.parameters():
            p.normal_(0, 0.5)
    return DDPM(net, NoiseSchedule.make("linear", T, beta_start=0.05, beta_end=0.4), (dim,),
                prediction=prediction, variance=variance, levels=levels, num_classes=classes)


def test_the_model_is_the_graph_file():
    """The Pyro model traced back to a graph is graphs/diffusion.yaml (T = 3)."""
    ddpm = _ddpm(T=3)
    traced = graph_of(ddpm.model, torch.zeros(2, 3))
    shipped = load_graph("diffusion")
    assert sorted(traced.nodes) == sorted(shipped.nodes)
    for n in shipped.nodes:
        assert traced.parents(n) == shipped.parents(n), n


@pytest.mark.parametrize("t, prediction", [(2, "epsilon"), (3, "epsilon"), (4, "epsilon"),
                                           (3, "levels")])
def test_step_kl_matches_monte_carlo(t, prediction):
    """L_{t-1} in closed form (given x_t) against the mean of log q - log p over draws of
    x_{t-1} ~ q(x_{t-1} | x_t, x_0)."""
    levels = 5 if prediction == "levels" else None
    ddpm = _ddpm(levels=levels, prediction=prediction)
    x0, noise = torch.randn(2, 3), torch.randn(2, 3)
    if levels:
        x0 = torch.tensor([[0, 2, 4], [1, 3, 3]])
    closed = term_at(ddpm, x0, torch.tensor(t), noise=noise)
    ab = ddpm.schedule.alpha_bar(torch.tensor([t, t - 1]))
    x0 = ddpm.to_model_space(x0)
    x_t = q_sample(x0, ab[0], noise)
    q = Normal(*_mean_sd(posterior(x0, x_t, ab[0], ab[1])))
    with torch.no_grad():
        p = Normal(*_mean_sd(ddpm.p_mean_var(x_t, torch.tensor(t))))
    draws = q.sample((200_000,))
    lr = (q.log_prob(draws) - p.log_prob(draws)).sum(-1)
    mc, se = lr.mean(0), lr.std(0) / math.sqrt(lr.shape[0])
    assert torch.all((closed.detach() - mc).abs() < 5 * se + 1e-3), (closed, mc, se)


def _mean_sd(mv):
    return mv[0], mv[1].sqrt()


def test_prior_kl_matches_monte_carlo():
    ddpm = _ddpm()
    x0 = torch.randn(2, 3)
    ab = ddpm.alpha_bars[-1]
    q = Normal(ab.sqrt() * x0, (1 - ab).sqrt())
    z = q.sample((200_000,))
    lr = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)
    se = lr.std(0) / math.sqrt(lr.shape[0])
    assert torch.all((prior_kl(ddpm, x0) - lr.mean(0)).abs() < 5 * se)


@pytest.mark.parametrize("levels, prediction", [(None, "epsilon"), (5, "epsilon"),
                                               (5, "levels")])
def test_elbo_terms_sum_to_the_elbo_of_the_pyro_program(levels, prediction):
    """Eq. 5: the closed-form terms add up to the ELBO of model and guide as Pyro scores it,
    log p(x_{0:T}) - log q(x_{1:T} | x_0) with the whole forward chain sampled; and the
    sampled-step estimate that trains the model has the same mean."""
    ddpm = _ddpm(levels=levels, prediction=prediction)
    x0 = torch.tensor([[0, 2, 4]]) if levels else torch.tensor([[0.3, -0.5, 1.0]])
    n = 20_000
    xs = x0.expand(n, 3)
    with torch.no_grad():
        closed = elbo_terms(ddpm, xs).sum(0)
        g = poutine.trace(ddpm.guide).get_trace(xs)
        m = poutine.trace(poutine.replay(ddpm.model, trace=g)).get_trace(xs)
        m.compute_log_prob()
        g.compute_log_prob()
        lw = sum(s["log_prob"] for s in m.nodes.values() if s["type"] == "sample") - sum(
            s["log_prob"] for s in g.nodes.values() if s["type"] == "sample")
        sampled = sampled_elbo(ddpm, xs)
    assert set(g.nodes) - {"_INPUT", "_RETURN", "data"} == {"x_1", "x_2", "x_3", "x_T"}
    se = lambda v: v.std() / math.sqrt(n)  # noqa: E731
    assert abs(-lw.mean() - closed.mean()) < 5 * math.hypot(se(lw), se(closed))
    assert abs(sampled.mean() - closed.mean()) < 5 * math.hypot(se(sampled), se(closed))


def test_decoder_against_brute_force():
    loc, scale = torch.tensor([-0.9, 0.1, 0.95]), torch.tensor([0.2, 0.05, 0.3])
    d = DiscretizedGaussian(loc, scale, levels=5)
    k = torch.arange(5)[:, None].expand(5, 3)
    p = d.log_prob(k).exp()
    edges = torch.tensor([-math.inf, -0.75, -0.25, 0.25, 0.75, math.inf])  # centres -1..1
    cdf = Normal(loc, scale).cdf(edges[:, None].expand(6, 3))
    assert torch.allclose(p, cdf[1:] - cdf[:-1], atol=1e-6)
    assert torch.allclose(p.sum(0), torch.ones(3))
    # far in a tail: still finite and exact in log space
    far = DiscretizedGaussian(torch.tensor([5.0]), torch.tensor([0.01]), 5)
    assert torch.isfinite(far.log_prob(torch.tensor([0]))).all()
    with pytest.raises(ProbgenError, match="levels"):
        d.log_prob(torch.tensor([7, 0, 0]))


def test_level_posterior_is_bayes_rule_per_pixel():
    """'levels' with a flat network prior: the softmax of level_logits is Bayes' rule over
    the levels c_k with likelihood N(x_t; a c_k, s^2), and x0 its mean."""
    from probgen.models.diffusion.schedules import level_logits, to_x0_eps

    k, ab = 5, torch.tensor([0.9, 0.3])
    x_t = torch.randn(2, 3)
    prior = torch.randn(2, 3, k)
    c = torch.linspace(-1, 1, k)
    lik = Normal(ab.sqrt()[:, None, None] * c, (1 - ab).sqrt()[:, None, None]).log_prob(
        x_t[..., None])
    bayes = torch.softmax(prior + lik, -1)
    assert torch.allclose(torch.softmax(level_logits(prior, x_t, ab), -1), bayes, atol=1e-6)
    x0, eps = to_x0_eps(prior, "levels", x_t, ab)
    assert torch.allclose(x0, (bayes * c).sum(-1), atol=1e-6)
    assert torch.allclose(ab.sqrt()[:, None] * x0 + (1 - ab).sqrt()[:, None] * eps, x_t,
                          atol=1e-5)
    with pytest.raises(ProbgenError, match="pred"):
        level_logits(prior[:, :2], x_t, ab)
    with pytest.raises(ProbgenError, match="levels"):
        _ddpm(prediction="levels")


@pytest.mark.parametrize("prediction", ["epsilon", "x0", "v", "levels"])
def test_ddim_with_eta_one_is_the_ddpm_transition(prediction):
    """Song et al. 2021, eq. 16 with eta = 1: the DDIM step between consecutive steps has
    the mean and variance of DDPM's p(x_{t-1} | x_t) with sigma^2 = the posterior variance."""
    ddpm = _ddpm(T=6, variance="posterior", prediction=prediction,
                 levels=5 if prediction == "levels" else None)
    x_t = torch.randn(4, 3)
    with torch.no_grad():
        for t in range(2, 7):
            tt = torch.full((4,), t)
            x0, eps = ddpm.denoise(x_t, tt)
            mean, var = ddim_mean_var(x_t, x0, eps, ddpm.ab(tt), ddpm.ab(tt - 1), eta=1.0)
            p_mean, p_var = ddpm.p_mean_var(x_t, tt)
            assert torch.allclose(mean, p_mean, atol=1e-5)
            assert torch.allclose(var, p_var, atol=1e-6)
            z = torch.randn(4, 3)
            assert torch.allclose(ddim_step(x_t, x0, eps, ddpm.ab(tt), ddpm.ab(tt - 1), 1.0, z),
                                  ddpm_step(x_t, x0, ddpm.ab(tt), ddpm.ab(tt - 1), z,
                                            "posterior"), atol=1e-5)
    # and the whole chains agree for the same seed
    den = lambda x, t: ddpm.denoise(x, t)  # noqa: E731
    a = sample(den, ddpm.alpha_bars, (5, 3), "ddpm", variance="posterior", seed=3)
    b = sample(den, ddpm.alpha_bars, (5, 3), "ddim", eta=1.0, seed=3)
    assert torch.allclose(a, b, atol=1e-4)


def test_ddim_eta_zero_is_deterministic_and_respaced_steps_work():
    ddpm = _ddpm(T=20)
    den = lambda x, t: ddpm.denoise(x, t)  # noqa: E731
    x_T = torch.randn(3, 3)
    a = sample(den, ddpm.alpha_bars, (3, 3), "ddim", steps=5, x_T=x_T, seed=1)
    b = sample(den, ddpm.alpha_bars, (3, 3), "ddim", steps=5, x_T=x_T, seed=2)
    assert torch.equal(a, b)
    c = sample(den, ddpm.alpha_bars, (3, 3), "ddpm", steps=5, x_T=x_T, seed=2)
    assert not torch.equal(a, c) and torch.isfinite(c).all()
    with pytest.raises(ProbgenError, match="steps"):
        sample(den, ddpm.alpha_bars, (3, 3), "ddim", steps=21)
    with pytest.raises(ProbgenError, match="sampler"):
        sample(den, ddpm.alpha_bars, (3, 3), "euler")


def test_objective_trains_through_fit_and_checks_its_inputs():
    from probgen.infer.fit import fit

    ddpm = _ddpm(T=10, dim=2)
    data = torch.randn(256, 2) * 0.1 + 1.0
    with torch.no_grad():
        before = elbo_terms(ddpm, data).sum(0).mean().item()
    fit(ddpm, None, data, objective=DiffusionELBO("elbo"), steps=60, batch_size=64, lr=5e-3,
        progress=False)
    with torch.no_grad():
        after = elbo_terms(ddpm, data).sum(0).mean().item()
    assert after < before
    with pytest.raises(ProbgenError, match="DDPM"):
        DiffusionELBO().loss(lambda x: None, None, data)
    with pytest.raises(ProbgenError, match="weighting"):
        DiffusionELBO("vlb")
    with pytest.raises(ProbgenError, match="y:"):
        ddpm.denoise(data[:2], torch.tensor([1, 1]), torch.tensor([0, 1]))


def test_family_sample_time_settings_and_cli(tmp_path, capsys):
    from probgen.cli import main
    from probgen.models.family import load_run, train

    out = tmp_path / "run"
    run = train("diffusion", data="moons", out=out, fast=True, progress=False)
    assert run.metrics["nll_kind"] == "ELBO bound, 20 steps"
    full = run.sample(4, seed=0)
    ddim = run.set_sampling(sampler="ddim", steps=5).sample(4, seed=0)
    assert ddim.shape == full.shape and not torch.equal(ddim, full)
    assert torch.equal(load_run(out).set_sampling(sets=["sampler=ddim", "steps=5"])
                       .sample(4, seed=0), ddim)
    assert "sampler" in run.describe_sampling()
    main(["sample", str(out), "--n", "6", "--out", str(tmp_path / "s.npy"),
          "--set", "sampler=ddim", "steps=5"])
    assert "wrote 6 samples" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="unknown key 'sampelr'"):
        run.set_sampling(sets=["sampelr=ddim"])
    with pytest.raises(ConfigError, match="not class-conditional"):
        run.set_sampling(label=3).sample(2)
