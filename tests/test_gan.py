"""GANs: the implicit program, the adversarial objective's losses and penalties against closed
forms and autograd, ownership of the discriminator, bit-for-bit resume with every stabiliser,
the nets, and a GAN that actually learns a 1-D Gaussian."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from probgen.errors import ProbgenError
from probgen.infer import runs
from probgen.infer.fit import fit
from probgen.models.family import load_run, train
from probgen.models.gan import GAN, RING, Adversarial, mixture_samples, mode_report
from probgen.models.gan.objective import (
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)
from probgen.models.gan.properties import nearest_distance
from probgen.nn.dcgan import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    spectral_norm,
)


def test_the_program_is_z_to_x_with_an_implicit_conditional():
    gan = GAN(MLPGenerator(3, 2, hidden=8), latent_dim=3, data_shape=(2,))
    assert list(gan.graph.graph.edges) == [("z", "x")]
    tr = pyro.poutine.trace(gan.model).get_trace(torch.zeros(5, 2))
    assert tr.nodes["z"]["value"].shape == (5, 3)
    assert isinstance(tr.nodes["x"]["fn"].base_dist if hasattr(tr.nodes["x"]["fn"], "base_dist")
                      else tr.nodes["x"]["fn"], dist.Delta)
    # x is the generator's output at the drawn z, exactly
    assert torch.equal(tr.nodes["x"]["value"], gan.generator(tr.nodes["z"]["value"]))
    cond = GAN(MLPGenerator(3, 2, hidden=8, num_classes=4), 3, (2,), num_classes=4)
    assert set(cond.graph.graph.predecessors("x")) == {"z", "y"}
    assert cond.model(torch.zeros(2, 2), torch.tensor([0, 3]))["x"].shape == (2, 2)
    with pytest.raises(ProbgenError, match="y: a class-conditional GAN needs labels"):
        cond.model(torch.zeros(2, 2))
    with pytest.raises(ProbgenError, match="labels must be in 0..3"):
        cond.sample(1, torch.tensor([4]))


@pytest.mark.parametrize("kind", ["ns", "minimax", "hinge", "lsgan", "wgan_gp"])
def test_losses_match_their_closed_forms(kind):
    r, f = torch.tensor([2.0, -0.5]), torch.tensor([0.3, -1.5])
    sig = torch.sigmoid
    d = {"ns": -(torch.log(sig(r)) + torch.log(1 - sig(f))).mean(),
         "minimax": -(torch.log(sig(r)) + torch.log(1 - sig(f))).mean(),
         "hinge": (torch.clamp(1 - r, min=0) + torch.clamp(1 + f, min=0)).mean(),
         "lsgan": 0.5 * ((r - 1) ** 2 + f ** 2).mean(),
         "wgan_gp": (f - r).mean()}[kind]
    g = {"ns": -torch.log(sig(f)), "minimax": torch.log(1 - sig(f)), "hinge": -f,
         "lsgan": 0.5 * (f - 1) ** 2, "wgan_gp": -f}[kind]
    assert torch.allclose(discriminator_loss(kind, r, f), d, atol=1e-6)
    assert torch.allclose(generator_loss(kind, f), g, atol=1e-6)


def test_minimax_saturates_where_the_non_saturating_loss_does_not():
    logit = torch.tensor(-8.0, requires_grad=True)  # D rejects the fake confidently
    (g_mm,) = torch.autograd.grad(generator_loss("minimax", logit), logit)
    (g_ns,) = torch.autograd.grad(generator_loss("ns", logit), logit)
    assert abs(float(g_mm)) < 1e-3 < 0.99 < abs(float(g_ns))  # sigmoid(-8) vs 1 - sigmoid(-8)


def test_penalties_match_autograd_by_hand():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1), nn.Flatten(0))
    real, fake = torch.randn(6, 3), torch.randn(6, 3)
    x = real.clone().requires_grad_(True)
    g = torch.autograd.grad(net(x).sum(), x)[0]
    assert math.isclose(r1_penalty(net, real).item(), float((g ** 2).sum(1).mean()), rel_tol=1e-5)
    torch.manual_seed(1)
    gp = gradient_penalty(net, real, fake)
    torch.manual_seed(1)
    e = torch.rand(6, 1)
    xh = (e * real + (1 - e) * fake).requires_grad_(True)
    gh = torch.autograd.grad(net(xh).sum(), xh)[0]
    assert math.isclose(gp.item(), float(((gh.norm(dim=1) - 1) ** 2).mean()), rel_tol=1e-5)
    gp.backward()  # create_graph: the penalty trains the critic
    assert net[0].weight.grad is not None


def _toy():
    g = MLPGenerator(1, 1, hidden=16, depth=2)

    def model(x):
        pyro.module("g", g)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.deterministic("x", g(z), event_dim=1)

    return g, model


def test_the_objective_owns_the_discriminator_and_the_engine_never_steps_it():
    torch.manual_seed(0)
    g, model = _toy()
    d = MLPDiscriminator(1, hidden=16, depth=2)
    obj = Adversarial(d, "ns", generator=g, ema=0.9)
    assert not any(p.requires_grad for p in d.parameters())
    x = torch.randn(32, 1)
    obj.loss(model, None, x).backward()
    assert all(p.grad is None for p in d.parameters())  # the generator's loss leaves D alone
    assert all(p.grad is not None for p in g.parameters())
    before = [p.clone() for p in d.parameters()]
    logs = obj.before_step(model, None, x)
    assert set(logs) == {"d_loss", "d_real", "d_fake"}
    assert all(not torch.equal(a, b) for a, b in zip(before, d.parameters()))
    assert all(p.grad is None and not p.requires_grad for p in d.parameters())
    assert set(obj.modules()) == {"discriminator", "ema"} and set(obj.optimizers()) == {
        "discriminator"}


def test_a_gan_learns_a_shifted_gaussian():
    """Data N(3, 0.5^2): the generator starts near 0 and must move there (EMA samples)."""
    torch.manual_seed(0)
    g, model = _toy()
    obj = Adversarial(MLPDiscriminator(1, hidden=32, depth=2), "ns", lr=2e-3, generator=g,
                      ema=0.98)
    data = 3 + 0.5 * torch.randn(2000, 1)
    fit(model, None, data, objective=obj, steps=400, batch_size=128, lr=2e-3, progress=False)
    with torch.no_grad():
        s = obj.ema(torch.randn(4000, 1))
    assert abs(float(s.mean()) - 3.0) < 0.4 and 0.2 < float(s.std()) < 0.9


@pytest.mark.parametrize("sets", [
    {"loss": "wgan_gp", "n_critic": 2, "ema": 0.9},
    {"loss": "hinge", "spectral_norm": True, "r1": 1.0, "instance_noise": 0.1},
])
def test_resume_is_bit_for_bit_with_every_stabiliser(tmp_path, sets):
    kw = {"data": "moons", "fast": True, "progress": False, **sets}
    full = train("gan", out=tmp_path / "full", steps=10, **kw)
    train("gan", out=tmp_path / "half", steps=4, **kw)
    train("gan", out=tmp_path / "half", resume=True, progress=False, steps=10)
    a = runs.load_tensors(tmp_path / "full" / "weights.safetensors")
    b = runs.load_tensors(tmp_path / "half" / "weights.safetensors")
    assert any(k.startswith("objective.discriminator.") for k in a)
    assert ("objective.ema.body.0.weight" in a) == bool(sets.get("ema", 0.999))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    again = load_run(tmp_path / "half")
    assert torch.equal(again.sample(5, seed=3), full.sample(5, seed=3))


def test_conditional_gan_on_digits_and_its_errors(tmp_path):
    run = train("gan", fast=True, progress=False, conditional=True, steps=4)
    assert run.gan.num_classes == 10
    s = run.sample(6, seed=0, y=torch.arange(6))
    assert s.shape == (6, 64) and s.dtype == torch.long and int(s.max()) <= 16
    assert "nn_train_samples" in run.metrics and "nn_train_test" in run.metrics
    with pytest.raises(ProbgenError, match="conditional: moons has no class labels"):
        train("gan", data="moons", fast=True, progress=False, conditional=True)


@pytest.mark.parametrize("kwargs, match", [
    ({"loss": "nope"}, "loss: unknown 'nope'"),
    ({"loss": "ns", "gp": 1.0}, "gp: the gradient penalty belongs to loss 'wgan_gp'"),
    ({"loss": "wgan_gp", "gp": 0.0}, "gp: must be a finite number > 0"),
    ({"ema": 0.9}, "generator: an EMA copy"),
    ({"n_critic": 0}, "n_critic"),
    ({"adversarial": False}, "needs l1 > 0"),
])
def test_bad_objective_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(ProbgenError, match=match):
        Adversarial(nn.Linear(2, 1), **kwargs)


def test_nets_sizes_and_spectral_norm():
    for size, c in ((8, 1), (32, 3), (64, 3)):
        g, d = DCGANGenerator(4, c, size, width=4), DCGANDiscriminator(c, size, width=4)
        x = g(torch.randn(2, 4))
        assert x.shape == (2, c, size, size) and d(x).shape == (2,)
        assert float(x.detach().abs().max()) <= 1.0
    with pytest.raises(ProbgenError, match="size"):
        DCGANGenerator(4, 1, 12)
    d = spectral_norm(DCGANDiscriminator(1, 8, width=4))
    d.train()
    for _ in range(20):  # power iterations converge on the largest singular value
        d(torch.randn(2, 1, 8, 8))
    w = d.body[0].weight.flatten(1)
    assert float(torch.linalg.matrix_norm(w, 2)) == pytest.approx(1.0, abs=0.02)


def test_mode_report_and_nearest_distance_against_brute_force():
    x = mixture_samples(RING, 2500, seed=1)
    assert mode_report(x, RING)["modes"] == 8
    half = x[(x[:, 0] > 0.5)]  # three modes on the right (k = 0, 1, 7)
    assert mode_report(half, RING)["modes"] == 3
    a, b = torch.randn(7, 5, dtype=torch.float64), torch.randn(11, 5, dtype=torch.float64)
    brute = sum(min(float((a[i] - b[j]).norm()) for j in range(11)) for i in range(7)) / 7
    assert nearest_distance(a, b) == pytest.approx(brute, rel=1e-9)
