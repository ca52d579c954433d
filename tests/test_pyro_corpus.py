"""A corpus of Pyro programs in the style of Pyro's examples and tutorials (written here: a VAE
as in ``examples/vae/vae.py``, a MAP Gaussian mixture with enumerated assignments, the
discrete-enumeration tutorial's nested plates, an HMM as in ``examples/hmm.py`` with masks and
``pyro.markov``, Bayesian regression with AutoGuides, MLE and MAP of a coin) trained through
``fit`` and through Pyro's own ``SVI`` on the same batches, seeds and optimiser (SGD), their
losses compared step by step, over every objective that applies."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from helpers import svi_run
from pyro.distributions import constraints
from pyro.infer import autoguide, config_enumerate
from torch import nn

from probgen.infer.fit import fit

STEPS = 4


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# --- a VAE (examples/vae/vae.py style) ------------------------------------------------------
class Encoder(nn.Module):
    def __init__(self, d, z, h):
        super().__init__()
        self.fc, self.loc, self.scale = nn.Linear(d, h), nn.Linear(h, z), nn.Linear(h, z)

    def forward(self, x):
        h = torch.nn.functional.softplus(self.fc(x))
        return self.loc(h), self.scale(h).exp()


class Decoder(nn.Module):
    def __init__(self, d, z, h):
        super().__init__()
        self.fc, self.out = nn.Linear(z, h), nn.Linear(h, d)

    def forward(self, z):
        return torch.sigmoid(self.out(torch.nn.functional.softplus(self.fc(z))))


def vae():
    torch.manual_seed(0)
    enc, dec, zdim = Encoder(12, 2, 8), Decoder(12, 2, 8), 2

    def model(x):
        pyro.module("decoder", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], zdim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(dec(z), validate_args=False).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", enc)
        with pyro.plate("data", x.shape[0]):
            loc, scale = enc(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    x = (torch.rand(48, 12, generator=_gen(1)) < 0.4).float()
    return model, guide, (x,)


# --- a Gaussian mixture, MAP with enumerated assignments (GMM tutorial style) -------------
def gmm():
    k = 2
    data = torch.cat([torch.randn(20, generator=_gen(2)) - 2.0,
                      torch.randn(30, generator=_gen(3)) + 2.5])

    @config_enumerate
    def model(x):
        weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(k)))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
        with pyro.plate("components", k):
            locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("assignment", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(locs[a], scale), obs=x)

    def init(site):
        if site["name"] == "locs":
            return torch.tensor([-1.0, 1.0])
        return autoguide.initialization.init_to_median(site)

    guide = autoguide.AutoDelta(poutine.block(model, expose=["weights", "locs", "scale"]),
                                init_loc_fn=init)
    return model, guide, (data,)


# --- nested plates with enumeration (discrete-enumeration tutorial style) -----------------
def nested():
    locs = torch.tensor([-1.0, 1.5])

    def model(x):  # x: (N, D); the feature plate is outermost, the data plate inside it
        w = pyro.param("w", torch.tensor([0.3, 0.7]), constraint=constraints.simplex)
        scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Categorical(w), infer={"enumerate": "parallel"})
            with pyro.plate("features", x.shape[1], dim=-1):
                pyro.sample("x", dist.Normal(locs[z], scale), obs=x)

    x = torch.randn(16, 3, generator=_gen(4)) + 1.0
    return model, None, (x,)


# --- an HMM with masks and pyro.markov (examples/hmm.py style) ----------------------------
def hmm():
    h, d, n, t_max = 3, 4, 6, 7
    lengths = torch.tensor([7, 5, 6, 7, 3, 4])
    seqs = (torch.rand(n, t_max, d, generator=_gen(5)) < 0.3).float()

    def model(sequences, lengths):
        probs_x = pyro.param("probs_x", 0.8 * torch.eye(h) + 0.2 / h,
                             constraint=constraints.simplex)
        probs_y = pyro.param("probs_y", torch.linspace(0.2, 0.8, h * d).reshape(h, d),
                             constraint=constraints.unit_interval)
        tones = pyro.plate("tones", d, dim=-1)
        with pyro.plate("sequences", sequences.shape[0], dim=-2), poutine.mask(mask=True):
            x = 0
            for t in pyro.markov(range(sequences.shape[1])):
                with poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                    x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]),
                                    infer={"enumerate": "parallel"})
                    with tones:
                        pyro.sample(f"y_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]),
                                    obs=sequences[:, t])

    return model, None, (seqs, lengths)


# --- Bayesian regression with AutoGuides (Bayesian-regression tutorial style) -------------
def regression(guide_cls):
    def build():
        x = torch.randn(40, 2, generator=_gen(6))
        y = 1.0 + x @ torch.tensor([2.0, -1.0]) + 0.5 * torch.randn(40, generator=_gen(7))

        def model(x, y):
            a = pyro.sample("a", dist.Normal(0.0, 10.0))
            b = pyro.sample("b", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
            with pyro.plate("data", x.shape[0]):
                pyro.sample("y", dist.Normal(a + x @ b, sigma), obs=y)

        return model, guide_cls(model), (x, y)

    return build


# --- MLE and MAP of a coin (MLE/MAP tutorial style) ----------------------------------------
def coin_mle():
    def model(x):
        f = pyro.param("fairness", torch.tensor(0.4), constraint=constraints.unit_interval)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Bernoulli(f), obs=x)

    return model, None, ((torch.rand(30, generator=_gen(8)) < 0.7).float(),)


def coin_map():
    def model(x):
        f = pyro.sample("fairness", dist.Beta(10.0, 10.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Bernoulli(f), obs=x)

    return model, autoguide.AutoDelta(model), ((torch.rand(30, generator=_gen(8)) < 0.7).float(),)


ENUM1 = lambda: pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)  # noqa: E731
ENUM2 = lambda: pyro.infer.TraceEnum_ELBO(max_plate_nesting=2)  # noqa: E731
TRACE = lambda: pyro.infer.Trace_ELBO()  # noqa: E731
MEANFIELD = lambda: pyro.infer.TraceMeanField_ELBO()  # noqa: E731
GRAPH = lambda: pyro.infer.TraceGraph_ELBO()  # noqa: E731
RENYI = lambda: pyro.infer.RenyiELBO(alpha=0.5, num_particles=2)  # noqa: E731

# (program, objective given to fit, the Pyro ELBO SVI runs, learning rate)
CORPUS = [
    ("vae", vae, "elbo", TRACE, 1e-3),
    ("vae", vae, "elbo_kl", MEANFIELD, 1e-3),
    ("vae", vae, TRACE, TRACE, 1e-3),
    ("vae", vae, GRAPH, GRAPH, 1e-3),
    ("vae", vae, RENYI, RENYI, 1e-3),
    ("gmm", gmm, ENUM1, ENUM1, 1e-3),
    ("gmm", gmm, "elbo", ENUM1, 1e-3),
    ("nested", nested, "likelihood", ENUM2, 1e-2),
    ("nested", nested, ENUM2, ENUM2, 1e-2),
    ("hmm", hmm, "likelihood", ENUM2, 1e-2),
    ("hmm", hmm, ENUM2, ENUM2, 1e-2),
    ("regression-normal", regression(autoguide.AutoNormal), "elbo", TRACE, 1e-3),
    ("regression-normal", regression(autoguide.AutoNormal), "elbo_kl", MEANFIELD, 1e-3),
    ("regression-diag", regression(autoguide.AutoDiagonalNormal), "elbo", TRACE, 1e-3),
    ("regression-diag", regression(autoguide.AutoDiagonalNormal), "elbo_kl", MEANFIELD, 1e-3),
    ("regression-diag", regression(autoguide.AutoDiagonalNormal), GRAPH, GRAPH, 1e-3),
    ("regression-mvn", regression(autoguide.AutoMultivariateNormal), MEANFIELD, MEANFIELD,
     1e-3),
    ("coin-mle", coin_mle, "likelihood", TRACE, 1e-2),
    ("coin-map", coin_map, "elbo", TRACE, 1e-2),
    ("coin-map", coin_map, RENYI, RENYI, 1e-2),
]


def _label(objective):
    return objective if isinstance(objective, str) else type(objective()).__name__


@pytest.mark.parametrize("name, program, objective, reference, lr", CORPUS,
                         ids=[f"{c[0]}-{_label(c[2])}" for c in CORPUS])
def test_fit_follows_svi_step_by_step(name, program, objective, reference, lr):
    model, guide, data = program()
    obj = objective if isinstance(objective, str) else objective()
    res = fit(model, guide, data, objective=obj, steps=STEPS, batch_size=None, lr=lr,
              optimizer="sgd", log_every=1, progress=False)
    ours = [row["loss"] * len(data[0]) for row in res.history]
    p_ours = {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}
    pyro.clear_param_store()
    model, guide, data = program()
    ref, p_ref = svi_run(model, guide, data, reference(), steps=STEPS, lr=lr)
    for step, (a, b) in enumerate(zip(ours, ref)):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5), (name, step, ours, ref)
    assert set(p_ours) == set(p_ref)
    for k in p_ref:
        torch.testing.assert_close(p_ours[k], p_ref[k], rtol=1e-5, atol=1e-6)
