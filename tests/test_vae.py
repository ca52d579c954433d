"""The VAE family: compiled programs checked against plain-PyTorch log-densities."""

from __future__ import annotations

import json
import math

import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F

from probgen.infer.fit import fit
from probgen.infer.objectives import ELBO, IWAE
from probgen.models.family import load_run, train
from probgen.models.vae.nets import LIKELIHOODS, Decoder, Encoder
from probgen.models.vae.priors import MixturePrior, StandardPrior, VampPrior
from probgen.models.vae.train import evaluate_vae
from probgen.models.vae.vae import VAE


def _levels(n=12, seed=0):
    return torch.randint(0, 17, (n, 64), generator=torch.Generator().manual_seed(seed))


def test_elbo_matches_plain_pytorch():
    vae = VAE((64,), 3, likelihood="categorical", num_levels=17, hidden=(16,))
    x = _levels()
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    z = guide_tr.nodes["z"]["value"]
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    pyro_elbo = model_tr.log_prob_sum() - guide_tr.log_prob_sum()
    # independent computation
    h = vae.encoder.body(x.float() / 16)
    loc, raw = vae.encoder.head(h).chunk(2, -1)
    log_q = torch.distributions.Normal(loc, F.softplus(raw) + 1e-4).log_prob(z).sum()
    log_pz = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum()
    logits = vae.decoder.body(z).reshape(-1, 64, 17)
    log_px = F.log_softmax(logits, -1).gather(-1, x[..., None]).sum()
    assert torch.allclose(pyro_elbo, log_px + log_pz - log_q, atol=1e-3)
    assert [n for n in model_tr.nodes if n in ("z", "x")] == ["z", "x"]


def test_graphs_are_the_vae_skeleton():
    vae = VAE((64,), 2, hidden=(8,), num_classes=10, num_levels=17)
    assert set(vae.generative.edges) == {("z", "x"), ("y", "x")}
    assert set(vae.inference.edges) == {("x", "z"), ("y", "z")}
    assert vae.generative.is_latent("z") and not vae.generative.is_latent("x")


@pytest.mark.parametrize("likelihood", ["mse", "l1", "bce", "gaussian"])
def test_likelihood_heads_match_closed_forms(likelihood):
    dec = Decoder((5,), 2, hidden=(8,), likelihood=likelihood, scale=0.3)
    z, x = torch.randn(4, 2), torch.rand(4, 5)
    m = dec.raw(z)
    lp = dec(z).log_prob(x)
    s = 0.3
    if likelihood in ("mse", "gaussian"):
        ref = (-(x - m) ** 2 / (2 * s * s) - math.log(s * math.sqrt(2 * math.pi))).sum(-1)
    elif likelihood == "l1":
        ref = (-(x - m).abs() / s - math.log(2 * s)).sum(-1)
    else:
        ref = -F.binary_cross_entropy_with_logits(m, x, reduction="none").sum(-1)
    assert torch.allclose(lp, ref, atol=1e-5)


def test_vamp_and_mixture_priors_match_manual_mixtures():
    enc = Encoder((4,), 2, hidden=(8,))
    vamp = VampPrior(enc, (4,), 5)
    z = torch.randn(3, 2)
    q = enc(vamp.pseudo_inputs)
    comp = q.base_dist.log_prob(z[:, None, :]).sum(-1)  # (3, 5)
    ref = torch.logsumexp(comp, 1) - math.log(5)
    assert torch.allclose(vamp().log_prob(z), ref, atol=1e-5)
    mix = MixturePrior(2, 3)
    sd = F.softplus(mix.raw_scale) + 1e-4
    comp = torch.distributions.Normal(mix.loc, sd).log_prob(z[:, None, :]).sum(-1)
    ref = torch.logsumexp(comp + F.log_softmax(mix.logits, 0), 1)
    assert torch.allclose(mix().log_prob(z), ref, atol=1e-5)
    assert StandardPrior(2)().event_shape == (2,)


@pytest.mark.parametrize("prior", ["standard", "mixture", "vamp"])
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_every_variant_trains_and_grads_reach_every_parameter(prior, arch):
    shape = (1, 8, 8)
    vae = VAE(shape, 3, likelihood="categorical", num_levels=17, arch=arch, hidden=(8,),
              prior=prior, num_components=4)
    x = _levels(8).reshape(8, *shape)
    loss = ELBO().loss(vae.model, vae.guide, x)
    loss.backward()
    for name, p in vae.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    res = fit(vae, None, x, steps=3, batch_size=4, progress=False)
    assert math.isfinite(res.final["train_loss"])
    assert vae.sample(2).shape == (2, *shape)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_conv_decoder_shapes_for_every_likelihood(likelihood):
    dec = Decoder((3, 8, 8), 2, arch="conv", hidden=(4,), likelihood=likelihood, num_levels=5)
    d = dec(torch.randn(6, 2))
    assert d.batch_shape == (6,) and d.event_shape == (3, 8, 8)
    assert dec.mean(torch.randn(6, 2)).shape == (6, 3, 8, 8)


def test_conditional_vae_uses_the_label():
    vae = VAE((64,), 2, hidden=(8,), num_classes=10, num_levels=17)
    x, y = _levels(10), torch.arange(10)
    fit(vae, None, (x, y), steps=2, batch_size=5, progress=False)
    z = torch.zeros(2, 2)
    a, b = vae.decode(z, torch.tensor([0, 0])), vae.decode(z, torch.tensor([0, 7]))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    assert vae.sample(3, torch.tensor([1, 2, 3])).shape == (3, 64)
    with pytest.raises(ValueError, match="y"):
        vae.model(x)


def test_beta_and_iwae_objectives():
    assert VAE((4,), 2, hidden=(8,), likelihood="bce", beta=4.0).objective.beta == 4.0
    vae = VAE((4,), 2, hidden=(8,), likelihood="bce", objective="iwae", num_samples=3)
    assert isinstance(vae.objective, IWAE)
    with pytest.raises(ValueError, match="beta"):
        VAE((4,), 2, objective="iwae", beta=2.0)


def test_helpers_against_manual_codes():
    vae = VAE((64,), 3, hidden=(16,), num_levels=17).eval()
    x = _levels(6)
    path = vae.interpolate(x[0], x[1], steps=5)
    assert torch.allclose(path[0], vae.reconstruct(x[:1])[0], atol=1e-5)
    assert torch.allclose(path[-1], vae.reconstruct(x[1:2])[0], atol=1e-5)
    has = torch.tensor([1, 1, 0, 0, 0, 1], dtype=torch.bool)
    z = vae.encode(x)
    assert torch.allclose(vae.attribute_vector(x, has), z[has].mean(0) - z[~has].mean(0))
    trav = vae.traverse(x[0], 1, torch.linspace(-2, 2, 4))
    assert trav.shape == (4, 64)
    assert float(vae.reconstruct(x).max()) <= 16 and float(vae.sample_images(4).max()) <= 1


@pytest.mark.parametrize("kwargs,word", [
    ({"latent_dim": 0}, "latent_dim"), ({"likelihood": "poisson"}, "likelihood"),
    ({"prior": "flowish"}, "prior"), ({"arch": "rnn"}, "arch"),
    ({"arch": "conv"}, "data_shape"), ({"num_levels": None}, "num_levels"),
])
def test_bad_arguments_raise_value_error(kwargs, word):
    args = {"data_shape": (64,), "latent_dim": 2, "hidden": (8,), **kwargs}
    with pytest.raises(ValueError, match=word):
        VAE(args.pop("data_shape"), args.pop("latent_dim"), **args)


def test_vae_run_folder_round_trip(tmp_path):
    out = tmp_path / "run"
    run = train("vae", out=out, fast=True, progress=False)
    m = run.metrics
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("test_nll", "test_bpd", "nll_kind", "test_neg_elbo", "fd", "train_seconds"):
        assert key in m and key in saved
    assert m["nll_kind"].startswith("importance")
    assert abs(m["test_bpd"] - m["test_nll"] / (64 * math.log(2))) < 1e-9
    assert (out / "samples.png").stat().st_size > 0
    loaded = load_run(out)
    from probgen.data.digits import load_digits

    xt = load_digits("test")[:50]
    again = evaluate_vae(loaded.vae, xt, num_samples=5)
    assert math.isfinite(again["test_nll"])
    assert json.loads((out / "config.json").read_text())["family"] == "vae"
    assert loaded.save_samples(tmp_path / "s.png", n=8).stat().st_size > 0
    # the folder's evaluation reproduces the figures written at the end of training
    assert loaded.evaluate()["test_nll"] == pytest.approx(m["test_nll"], rel=1e-6)
    with pytest.raises(ValueError, match="run"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match="data"):
        train("vae", data="cifar", fast=True, progress=False)


@pytest.mark.slow
def test_default_training_reaches_the_bar(tmp_path):
    m = train("vae", out=tmp_path / "run", progress=False).metrics
    assert m["test_nll"] <= 92.0 and m["test_neg_elbo"] <= 95.0
    assert m["test_kl"] > 3.0  # the latent code is used (the factorised decoder's: about 6)


def test_refined_guide_tightens_the_bound_and_leaves_the_model_alone():
    from probgen.infer.likelihood import elbo_nll
    from probgen.models.vae.train import refine_guide

    vae = VAE((64,), 2, hidden=(16,), num_levels=17).eval()
    x = _levels(20)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    guide = refine_guide(vae, x, steps=100, lr=0.05)
    plain = elbo_nll(vae.model, vae.guide, x, 20, batch_size=64).nll
    refined = elbo_nll(vae.model, guide, x, 20, batch_size=64).nll
    assert refined < plain
    assert all(torch.equal(v, vae.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad for p in vae.parameters())
    with pytest.raises(ValueError, match="x"):
        guide(x[:3])
