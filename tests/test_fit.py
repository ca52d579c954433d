"""The training engine and its objectives, checked against Pyro's ELBOs and closed forms."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from probgen.errors import ProbgenError
from probgen.infer.fit import fit
from probgen.infer.objectives import ELBO, IWAE, BetaELBO, Likelihood, Objective, PyroELBO


class TinyVAE(nn.Module):
    """z ~ N(0, I_2); x ~ N(dec(z), 1) in 3 dims; guide N(enc(x))."""

    data_shape = (3,)

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(3, 4)
        self.dec = nn.Linear(2, 3)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            h = self.enc(x)
            pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))


def _data(n=64, seed=0):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))


def _manual_terms(vae, x):
    """Plain-PyTorch log p(x|z), log p(z), log q(z|x) with the same random draw."""
    h = vae.enc(x)
    q = torch.distributions.Normal(h[:, :2], h[:, 2:].exp())
    z = q.rsample()
    log_px = torch.distributions.Normal(vae.dec(z), 1.0).log_prob(x).sum(-1)
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    return log_px, log_pz, q.log_prob(z).sum(-1)


def test_elbo_matches_pyro_trace_elbo_value_and_gradients():
    torch.manual_seed(0)
    vae, x = TinyVAE(), _data()
    torch.manual_seed(1)
    ours = ELBO().loss(vae.model, vae.guide, x)
    g1 = torch.autograd.grad(ours, list(vae.parameters()))
    torch.manual_seed(1)
    ref = pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    g2 = torch.autograd.grad(ref, list(vae.parameters()))
    assert torch.allclose(ours, ref, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g1, g2))


def test_elbo_matches_plain_pytorch():
    torch.manual_seed(0)
    vae, x = TinyVAE(), _data()
    torch.manual_seed(3)
    ours = ELBO().loss(vae.model, vae.guide, x)
    torch.manual_seed(3)
    log_px, log_pz, log_q = _manual_terms(vae, x)
    assert torch.allclose(ours, -(log_px + log_pz - log_q).sum(), atol=1e-4)


def test_analytic_kl_matches_pyro_mean_field():
    torch.manual_seed(0)
    vae, x = TinyVAE(), _data()
    torch.manual_seed(2)
    ours = ELBO(analytic_kl=True).loss(vae.model, vae.guide, x)
    torch.manual_seed(2)
    ref = pyro.infer.TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, x)
    assert torch.allclose(ours, ref, atol=1e-4)


def test_beta_elbo_weights_only_the_kl_term():
    torch.manual_seed(0)
    vae, x = TinyVAE(), _data()
    torch.manual_seed(4)
    ours = BetaELBO(3.0).loss(vae.model, vae.guide, x)
    torch.manual_seed(4)
    log_px, log_pz, log_q = _manual_terms(vae, x)
    assert torch.allclose(ours, -(log_px - 3.0 * (log_q - log_pz)).sum(), atol=1e-4)


def test_iwae_matches_plain_pytorch_and_bounds():
    torch.manual_seed(0)
    vae, x = TinyVAE(), _data(16)
    torch.manual_seed(5)
    ours = IWAE(4).loss(vae.model, vae.guide, x)
    torch.manual_seed(5)
    logw = torch.stack([sum(t * s for t, s in zip(_manual_terms(vae, x), (1, 1, -1)))
                        for _ in range(4)])
    ref = -(torch.logsumexp(logw, 0) - math.log(4)).sum()
    assert torch.allclose(ours, ref, atol=1e-4)
    # E[IWAE_K] <= E[ELBO] as losses: average a few draws
    torch.manual_seed(6)
    iw = sum(IWAE(8).loss(vae.model, vae.guide, x).item() for _ in range(20)) / 20
    el = sum(ELBO().loss(vae.model, vae.guide, x).item() for _ in range(20)) / 20
    assert iw < el


def test_likelihood_is_exact_and_rejects_latents():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(1.0, 2.0), obs=x)

    x = torch.tensor([0.0, 1.0, 3.0])
    ref = -torch.distributions.Normal(1.0, 2.0).log_prob(x).sum()
    assert torch.allclose(Likelihood().loss(model, None, x), ref)
    vae = TinyVAE()
    with pytest.raises(ProbgenError, match="latent"):
        Likelihood().loss(vae.model, None, _data())


def test_elbo_equals_pyro_with_masks_scales_and_event_dims():
    """Event-dim sites under a mask, a scale and a subsampling plate score as in Pyro."""
    import pyro.poutine as poutine

    x = _data(10)[:, :2]
    keep = torch.tensor([True, False] * 5)

    def model(x):
        with pyro.plate("data", x.shape[0], subsample_size=6) as idx:
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([6, 2]).to_event(1))
            with poutine.mask(mask=keep[idx]), poutine.scale(scale=0.5):
                pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x[idx])
            with poutine.scale(scale=torch.linspace(0.5, 2.0, 6)):
                pyro.sample("w", dist.Normal(z.sum(-1, keepdim=True), 2.0).to_event(1),
                            obs=x[idx][:, :1])

    def guide(x):
        loc = pyro.param("loc", torch.full((10, 2), 0.3))
        with pyro.plate("data", x.shape[0], subsample_size=6) as idx:
            pyro.sample("z", dist.Normal(loc[idx], 0.7).to_event(1))

    torch.manual_seed(3)
    ours = ELBO().loss(model, guide, x)
    torch.manual_seed(3)
    ref = pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_non_reparameterised_guide_delegates_to_pyro():
    def model(x):
        p = pyro.param("p", torch.tensor(0.3), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(p))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x):
        q = pyro.param("q", torch.tensor(0.6), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(q))

    x = _data(8)[:, 0]
    torch.manual_seed(0)
    ours = ELBO().loss(model, guide, x)
    torch.manual_seed(0)
    pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x)  # same draws as our probe
    ref = pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x)
    assert torch.allclose(ours, ref)


def test_fit_recovers_the_maximum_likelihood_mean():
    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, scale), obs=x)

    x = 3.0 + 0.5 * torch.randn(200, generator=torch.Generator().manual_seed(0))
    fit(model, None, x, steps=600, batch_size=None, lr=0.05, progress=False)
    assert abs(pyro.param("loc").item() - x.mean().item()) < 1e-2
    assert abs(pyro.param("scale").item() - x.std(unbiased=False).item()) < 1e-2


def test_fit_trains_a_family_object_and_is_deterministic():
    x = _data(128)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        vae = TinyVAE()
        res = fit(vae, None, x, steps=60, batch_size=32, lr=1e-2, seed=7, progress=False,
                  log_every=20)
        results.append((res, {k: v.clone() for k, v in vae.state_dict().items()}))
    (r1, w1), (r2, w2) = results
    assert r1.history[0]["loss"] > r1.history[-1]["loss"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    torch.manual_seed(0)
    other = TinyVAE()
    fit(other, None, x, steps=60, batch_size=32, lr=1e-2, seed=8, progress=False)
    assert not torch.equal(other.enc.weight, w1["enc.weight"])


def test_fit_accepts_pyro_elbo_tuple_data_and_datasets():
    def model(x, y):
        w = pyro.param("w", torch.zeros(3))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(x @ w, 1.0), obs=y)

    x = _data(100)
    w_true = torch.tensor([1.0, -2.0, 0.5])
    y = x @ w_true
    fit(model, None, (x, y), steps=400, batch_size=50, lr=0.05, progress=False)
    assert torch.allclose(pyro.param("w"), w_true, atol=0.05)
    pyro.clear_param_store()
    ds = torch.utils.data.TensorDataset(x, y)
    fit(model, None, ds, steps=400, batch_size=50, lr=0.05, progress=False)
    assert torch.allclose(pyro.param("w"), w_true, atol=0.05)
    torch.manual_seed(0)
    vae = TinyVAE()
    res = fit(vae, None, x, objective=pyro.infer.Trace_ELBO(), steps=5, batch_size=20,
              progress=False)
    assert res.steps == 5


def test_early_stopping_restores_the_best_weights():
    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    train, val = torch.full((32,), 5.0), torch.zeros(32)
    res = fit(model, None, train, val_data=val, val_every=5, patience=3, steps=500,
              batch_size=16, lr=0.1, progress=False, log_every=5)
    assert res.stopped_early and res.steps == 20
    assert res.final["best_step"] == 5
    first = [h for h in res.history if h["step"] == 5][0]
    expected = 0.5 * math.log(2 * math.pi) + 0.5 * pyro.param("loc").item() ** 2
    assert math.isclose(first["val_loss"], expected, rel_tol=1e-5)


class CountingObjective(Objective):
    """An objective owning a module, its own optimizer and a before_step hook."""

    name = "counting"

    def __init__(self):
        self.critic = nn.Linear(3, 1)
        self.opt = torch.optim.SGD(self.critic.parameters(), lr=0.1)
        self.calls = 0

    def modules(self):
        return {"critic": self.critic}

    def optimizers(self):
        return {"critic": self.opt}

    def before_step(self, model, guide, x):
        self.calls += 1
        loss = self.critic(x).pow(2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"critic_loss": loss.item()}

    def loss(self, model, guide, x):
        return ELBO().loss(model, guide, x)


def test_objectives_with_their_own_parameters_are_stepped():
    torch.manual_seed(0)
    vae, obj = TinyVAE(), CountingObjective()
    before = obj.critic.weight.detach().clone()
    res = fit(vae, None, _data(), objective=obj, steps=10, batch_size=16, progress=False,
              log_every=5)
    assert obj.calls == 10
    assert not torch.equal(before, obj.critic.weight)
    assert "critic_loss" in res.history[-1]
    assert any(k.startswith("objective.critic.") for k in res.params)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps"),
        ({"steps": -3}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 1000}, "batch_size"),
        ({"objective": "nope"}, "objective"),
        ({"lr": -1.0}, "lr"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    torch.manual_seed(0)
    with pytest.raises(ProbgenError, match=match):
        fit(TinyVAE(), None, _data(), **{"progress": False, "batch_size": 16, **kwargs})


@pytest.mark.parametrize(
    "data, match",
    [
        (torch.tensor([[0.0, float("nan"), 1.0]] * 4), "NaN"),
        (torch.ones(4, 3, dtype=torch.complex64), "dtype"),
        (torch.ones(4, 3, dtype=torch.bool), "dtype"),
        ((torch.ones(4, 3), torch.ones(5)), "disagree"),
        (torch.tensor(1.0), "leading"),
        ([1, 2, 3], "tensor"),
        (torch.ones(4, 5), "shape"),
    ],
)
def test_bad_data_raises(data, match):
    torch.manual_seed(0)
    with pytest.raises(ProbgenError, match=match):
        fit(TinyVAE(), None, data, steps=1, batch_size=2, progress=False)


def test_pyro_elbo_wrapper_without_guide_is_an_empty_guide():
    def model(x):
        loc = pyro.param("loc", torch.tensor(0.5))
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    loss = PyroELBO(pyro.infer.Trace_ELBO()).loss(model, None, torch.zeros(1))
    torch.testing.assert_close(loss, -dist.Normal(0.5, 1.0).log_prob(torch.zeros(1)).sum())


def test_tutorial_style_functions_with_pyro_module_train():
    enc, dec = nn.Linear(3, 4), nn.Linear(2, 3)

    def model(x):
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(dec(z), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            h = enc(x)
            pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))

    before = dec.weight.detach().clone()
    res = fit(model, guide, _data(), steps=5, batch_size=16, progress=True)
    assert not torch.equal(before, dec.weight)
    assert {"pyro.dec$$$weight", "pyro.enc$$$bias"} <= set(res.params)


def test_enumerated_discrete_latents_use_pyro_traceenum():
    """A two-component mixture: the cluster is enumerated out, as Pyro's TraceEnum_ELBO."""

    def model(x):
        w = pyro.param("w", torch.tensor([0.5, 0.5]), constraint=dist.constraints.simplex)
        locs = pyro.param("locs", torch.tensor([-1.0, 1.0]))
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(w), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)

    def guide(x):
        pass

    x = torch.cat([torch.full((20,), -3.0), torch.full((60,), 2.0)])
    loss = ELBO().loss(model, guide, x)
    w, locs = pyro.param("w"), pyro.param("locs")
    exact = -torch.logsumexp(
        w.log()[:, None] + torch.distributions.Normal(locs[:, None], 1.0).log_prob(x), 0).sum()
    assert torch.allclose(loss, exact, atol=1e-4)
    fit(model, guide, x, steps=300, batch_size=None, lr=0.05, progress=False)
    assert torch.allclose(pyro.param("locs").sort().values, torch.tensor([-3.0, 2.0]), atol=0.05)
    assert torch.allclose(pyro.param("w").sort().values, torch.tensor([0.25, 0.75]), atol=0.02)
