"""The ebm family: quadrature normaliser against closed forms, bad input, digits run."""

from __future__ import annotations

import math

import pytest
import torch

from probgen.errors import ProbgenError
from probgen.models.ebm import EnergyProgram, QuadraticEnergy, log_normaliser
from probgen.models.ebm.quadrature import data_box
from probgen.models.family import load_run, train


def test_quadrature_matches_the_gaussian_normaliser():
    q = QuadraticEnergy(2)
    with torch.no_grad():
        q.raw.copy_(torch.tensor([[0.3, 0.0], [0.5, -0.2]]))
        q.mu.copy_(torch.tensor([0.4, -0.3]))
    res = log_normaliser(q, (-8.0, 8.0, -8.0, 8.0), grid=200)
    exact = math.log(2 * math.pi) - 0.5 * torch.logdet(q.precision().detach()).item()
    assert res.log_z == pytest.approx(exact, abs=1e-4)
    assert res.error < 1e-3 and res.label.startswith("exact")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.manual_seed(0)
    return train("ebm", data="moons", out=tmp_path_factory.mktemp("ebm") / "run", fast=True,
                 progress=False)


def test_figures_are_a_normalised_density(run):
    m = run.metrics
    assert m["nll_kind"].startswith("exact (normaliser by quadrature")
    # the density integrates to one over the box (independently: a coarser midpoint sum)
    box = data_box(run.splits.train, run.config.margin)
    xs = torch.linspace(box[0], box[1], 161)
    ys = torch.linspace(box[2], box[3], 161)
    pts = torch.cartesian_prod(xs, ys)
    dens = run.log_prob(pts).exp()
    area = (box[1] - box[0]) * (box[3] - box[2]) / 160 ** 2
    assert float(dens.sum() * area) == pytest.approx(1.0, abs=0.05)
    assert m["test_nll"] == pytest.approx(float(-run.log_prob(run.splits.test).mean()))


@pytest.mark.parametrize("call,match", [
    (lambda r: r.energy(torch.zeros(4, 3)), "2-D points"),
    (lambda r: r.energy(torch.tensor([[float("nan"), 0.0]])), "non-finite"),
    (lambda r: r.score(torch.zeros(4, 64)), "2-D points"),
    (lambda r: r.log_prob(torch.full((2, 2), float("inf"))), "non-finite"),
    (lambda r: r.sample(0), "positive integer"),
])
def test_bad_input_one_line_errors(run, call, match):
    with pytest.raises(ProbgenError, match=match) as info:
        call(run)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("sets,match", [
    ({"sigma": -0.1}, "sigma"), ({"sample_step": -1.0}, "sample_step"),
    ({"sigma_min": 2.0}, "sigma_min"), ({"anneal_step": 0.0}, "anneal_step"),
    ({"refine_step": -0.01}, "refine_step"), ({"refine_steps": -1}, "refine_steps"),
    ({"ema": 1.0}, "ema"), ({"pt_levels": 0}, "pt_levels"), ({"pt_beta_min": 2.0}, "pt_beta_min"),
    ({"pt_step": 0.0}, "pt_step"), ({"decay_steps": 0}, "decay_steps"),
    ({"lr_decay": "linear"}, "lr_decay"),
])
def test_bad_config_one_line_errors(tmp_path, sets, match):
    with pytest.raises(ProbgenError, match=match) as info:
        train("ebm", data="moons", out=tmp_path / "r", fast=True, progress=False, **sets)
    assert "\n" not in str(info.value)


def _sample_narrow_gaussian(run, n, **settings):
    """``n`` samples of the family's sampler, with ``settings`` replacing the run's, from a
    correlated, narrow Gaussian energy; returns them with the Gaussian's mean and covariance."""
    from dataclasses import replace

    from probgen.models.ebm.run import EBMRun

    q = QuadraticEnergy(2)
    with torch.no_grad():
        q.mu.copy_(torch.tensor([0.3, -0.2]))
        q.raw.copy_(torch.tensor([[0.5, 0.0], [0.8, 0.2]]))
    cov = torch.linalg.inv(q.precision().detach())
    x = EBMRun(q, replace(run.config, **settings), run.splits).sample(n, seed=0)
    return x, q.mu.detach(), cov


def test_two_phase_langevin_targets_the_energy(run):
    # sampler=mala (a large exploring step, then a small refining one), from uniform noise
    x, mu, cov = _sample_narrow_gaussian(run, 2000, sampler="mala", sample_steps=1000,
                                         sample_step=0.05, refine_steps=200, refine_step=0.005)
    torch.testing.assert_close(x.mean(0), mu, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.03, rtol=0.1)


def test_default_sampler_settings_target_the_energy(run):
    """The full (not fast) sampling defaults, parallel tempering then MALA."""
    from probgen.models.ebm.train import EBMConfig

    d = EBMConfig()
    assert d.sampler == "pt"
    names = ("sampler", "pt_levels", "pt_beta_min", "pt_step", "pt_steps", "refine_steps",
             "refine_step")
    x, mu, cov = _sample_narrow_gaussian(run, 2000, **{k: getattr(d, k) for k in names})
    torch.testing.assert_close(x.mean(0), mu, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.03, rtol=0.1)


def test_tempering_sampler_targets_the_energy(run):
    x, mu, cov = _sample_narrow_gaussian(run, 4000, sampler="pt", pt_levels=4, pt_beta_min=0.1,
                                         pt_step=0.05, pt_steps=300, refine_steps=0)
    # standard error of the mean ~0.013
    torch.testing.assert_close(x.mean(0), mu, atol=0.04, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.04, rtol=0.1)


def test_energy_program_is_the_trained_energy(run):
    x = run.splits.test[:5]
    import pyro.poutine as poutine

    tr = poutine.trace(EnergyProgram(run.net).model).get_trace(x)
    assert torch.allclose(-tr.nodes["energy"]["fn"].log_factor, run.energy(x))


@pytest.mark.parametrize("objective", ["cd", "nce"])  # the objectives with state to resume
def test_other_objectives_train_and_resume(tmp_path, objective):
    # the cosine's horizon fixed: by default it is the run's steps, which the resume extends
    kw = dict(data="moons", fast=True, progress=False, objective=objective, val_every=5,
              steps=10, decay_steps=10)
    full = train("ebm", out=tmp_path / "a", **kw)
    train("ebm", out=tmp_path / "b", **{**kw, "steps": 5})
    resumed = train("ebm", out=tmp_path / "b", resume=True, progress=False, steps=10)
    assert resumed.metrics["test_nll"] == pytest.approx(full.metrics["test_nll"], rel=1e-6)
    assert math.isfinite(full.metrics["test_nll"])


def test_ncsn_on_digits_samples_levels(tmp_path):
    r = train("ebm", data="digits", out=tmp_path / "d", fast=True, progress=False)
    assert r.config.objective == "ncsn" and "test_nll" not in r.metrics and r.metrics["fd"] > 0
    assert r.sample_net is not r.net  # it samples with the EMA of the weights
    loaded = load_run(tmp_path / "d")
    for a, b in zip(loaded.sample_net.parameters(), r.sample_net.parameters()):
        assert torch.equal(a, b)
    s = r.sample(3, seed=0)
    assert s.shape == (3, 64) and s.dtype == torch.long and int(s.max()) <= 16
    assert torch.equal(loaded.sample(3, seed=0), s)
    with pytest.raises(ProbgenError, match="64-D"):
        r.score(torch.zeros(2, 2))
