"""The chunked (vectorised over K) importance weights equal the one-sample-at-a-time loop's
for the same draws: checked against a replayed loop and against closed-form densities."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.poutine.messenger import Messenger

from probgen.errors import ProbgenError
from probgen.infer.likelihood import chunked_log_weights, elbo_nll, importance_nll
from probgen.infer.sites import SiteRecorder, run_model
from probgen.models.vae.vae import VAE

A, S = 1.5, 0.5
V = A * A + S * S


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], dtype=x.dtype), 1.0))
        pyro.sample("x", dist.Normal(A * z, S), obs=x)


def guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(0.5 * A * x / V, 0.8))


class _Draws(Messenger):
    """Records every latent value a program draws (one dict per call)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, torch.Tensor]] = []

    def _pyro_post_sample(self, msg: dict) -> None:
        if not msg["is_observed"] and not msg["name"].startswith("data"):
            self.calls[-1][msg["name"]] = msg["value"]


def recording(g, draws: _Draws):
    def wrapped(*args):
        draws.calls.append({})
        with draws:
            return g(*args)

    return wrapped


def per_sample(draws: _Draws, n: int) -> list[dict[str, torch.Tensor]]:
    """The chunked calls' draws ``(k * n, ...)`` split into one dict per guide sample."""
    out = []
    for call in draws.calls:
        k = next(iter(call.values())).shape[0] // n
        for j in range(k):
            out.append({name: v[j * n:(j + 1) * n] for name, v in call.items()})
    return out


def loop_weights(m, g, batch, samples, plate="data") -> torch.Tensor:
    """One guide run and one model run per sample, each replaying the recorded draw."""
    rows = []
    for z in samples:
        with SiteRecorder(replay=z, per_example=plate) as gr:
            g(*batch)
        mr = run_model(m, batch, z, plate, False)
        rows.append(mr.latent_log_prob + mr.observed_log_prob - gr.latent_log_prob)
    return torch.stack(rows)


@pytest.mark.parametrize("chunk", [1, 6, 16, 50])
def test_chunked_weights_equal_the_loop_and_closed_form_for_the_same_draws(chunk):
    x = torch.randn(16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    draws = _Draws()
    torch.manual_seed(0)
    logw = chunked_log_weights(model, recording(guide, draws), (x,), 50, "data", chunk)
    assert logw.shape == (50, 16) and len(draws.calls) == math.ceil(50 / chunk)
    samples = per_sample(draws, 16)
    assert len(samples) == 50
    torch.testing.assert_close(logw, loop_weights(model, guide, (x,), samples),
                               rtol=0, atol=1e-12)
    z = torch.stack([s["z"] for s in samples])  # (K, B)
    N = torch.distributions.Normal
    closed = (N(0.0, 1.0).log_prob(z) + N(A * z, S).log_prob(x)
              - N(0.5 * A * x / V, 0.8).log_prob(z))
    torch.testing.assert_close(logw, closed, rtol=0, atol=1e-12)


def test_importance_nll_is_the_logsumexp_of_the_same_draws():
    x = torch.randn(20, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    draws = _Draws()
    ll = importance_nll(model, recording(guide, draws), x, 37, batch_size=8,
                        plate="data", chunk_size=10)
    # batches of 8, 8, 4 examples, each 37 samples in chunks of 10, 10, 10, 7
    assert len(draws.calls) == 3 * 4
    per_batch = [draws.calls[i:i + 4] for i in range(0, 12, 4)]
    nll = []
    for b, calls in zip(torch.split(x, 8), per_batch):
        d = _Draws()
        d.calls = calls
        logw = loop_weights(model, guide, (b,), per_sample(d, len(b)))
        nll.append(-(torch.logsumexp(logw, 0) - math.log(37)))
    assert ll.nll == pytest.approx(float(torch.cat(nll).mean()), abs=1e-12)


def test_vae_chunked_weights_equal_the_loop():
    torch.manual_seed(0)
    vae = VAE((64,), 2, hidden=(16,)).eval()
    x = torch.randint(0, 17, (8, 64))
    draws = _Draws()
    with torch.no_grad():
        logw = chunked_log_weights(vae.model, recording(vae.guide, draws), (x,), 12, "data",
                                   chunk_size=5)
        ref = loop_weights(vae.model, vae.guide, (x,), per_sample(draws, 8))
    assert logw.shape == (12, 8)
    # float32 networks: a matrix product over 40 rows may round differently from one over 8
    torch.testing.assert_close(logw, ref, rtol=1e-5, atol=1e-4)


def test_chunking_keeps_the_estimate_seeded_and_checks_its_arguments():
    x = torch.randn(10)
    a = importance_nll(model, guide, x, 20, seed=3)
    assert a == importance_nll(model, guide, x, 20, seed=3)
    assert elbo_nll(model, guide, x, 5, chunk_size=2).kind == "elbo"
    with pytest.raises(ProbgenError, match="chunk_size"):
        importance_nll(model, guide, x, 5, chunk_size=0)

    def fixed_size(x):  # a plate whose size does not follow the data
        with pyro.plate("data", 10):
            z = pyro.sample("z", dist.Normal(torch.zeros(10), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[:10])

    def fixed_guide(x):
        with pyro.plate("data", 10):
            pyro.sample("z", dist.Normal(x[:10] / 2, 1.0))

    with pytest.raises(ProbgenError, match="chunk_size=1"):
        importance_nll(fixed_size, fixed_guide, x, 4, chunk_size=2)
    assert importance_nll(fixed_size, fixed_guide, x, 4, chunk_size=1).num_samples == 4
