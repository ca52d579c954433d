"""The autoregressive VAE decoder: causality, normalisation by enumeration, the VAE around it."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from probgen.errors import ProbgenError
from probgen.infer.fit import fit
from probgen.infer.objectives import ELBO
from probgen.models.vae.pixel_decoder import LocalPixelNet, PixelDecoder, PixelDecoderDistribution
from probgen.models.vae.train import evaluate_vae
from probgen.models.vae.vae import VAE
from probgen.nn.pixelcnn import GatedPixelCNN


def _nets(shape, k, c):
    return {
        "local-left": LocalPixelNet(shape, k, c, channels=8, left=2, up=0),
        "local-up": LocalPixelNet(shape, k, c, channels=8, left=1, up=1),
        "gated": GatedPixelCNN(shape, k, channels=8, layers=2, cond_channels=c),
    }


@pytest.mark.parametrize("name", ["local-left", "local-up", "gated"])
def test_logits_of_a_pixel_never_depend_on_it_or_later_pixels(name):
    shape, k, c = (4, 5), 3, 2
    net = _nets(shape, k, c)[name]
    d = shape[0] * shape[1]
    x = F.one_hot(torch.randint(0, k, (1, d)), k).float().requires_grad_(True)
    cond = torch.randn(1, c, *shape)
    out = net(x, cond)
    for i in range(d):
        (g,) = torch.autograd.grad(out[0, i].sum(), x, retain_graph=True)
        seen = g[0].abs().sum(-1) > 0
        assert not seen[i:].any(), f"pixel {i} sees {seen.nonzero().flatten().tolist()}"


def test_local_context_is_exactly_the_window():
    shape, k = (5, 6), 2
    net = LocalPixelNet(shape, k, 1, channels=8, left=1, up=1)
    x = F.one_hot(torch.randint(0, k, (1, 30)), k).float().requires_grad_(True)
    out = net(x, torch.zeros(1, 1, *shape))
    i, j = 3, 2
    (g,) = torch.autograd.grad(out[0, i * 6 + j].sum(), x)
    seen = {divmod(int(p), 6) for p in (g[0].abs().sum(-1) > 0).nonzero().flatten()}
    assert seen == {(2, 1), (2, 2), (2, 3), (3, 1)}


@pytest.mark.parametrize("name", ["local-left", "local-up", "gated"])
def test_distribution_sums_to_one_by_enumeration_and_samples_agree(name):
    shape, k, c = (2, 2), 2, 3
    net = _nets(shape, k, c)[name]
    torch.manual_seed(0)
    cond = torch.randn(2, c, *shape)  # a batch of two conditionings
    d = PixelDecoderDistribution(net, cond)
    grid = torch.tensor(list(itertools.product(range(k), repeat=4)))  # all 16 images
    with torch.no_grad():
        p = d.log_prob(grid[:, None, :]).exp()  # (16, 2)
    assert torch.allclose(p.sum(0), torch.ones(2), atol=1e-5)
    draws = d.sample((4000,))[:, 0]  # first conditioning
    codes = (draws * torch.tensor([8, 4, 2, 1])).sum(-1)
    freq = torch.bincount(codes, minlength=16).float() / 4000
    assert (freq - p[:, 0]).abs().max() < 0.03


def test_log_prob_is_the_chain_rule_by_hand():
    torch.manual_seed(1)
    dec = PixelDecoder((3, 3), latent_dim=2, num_levels=4, hidden=(8,), channels=8)
    z, x = torch.randn(5, 2), torch.randint(0, 4, (5, 9))
    cond = dec.conditioning(z)
    total = torch.zeros(5)
    for i in range(9):  # p(x_i | x_<i, z): later pixels hidden must not matter
        hidden = x.clone()
        hidden[:, i:] = torch.randint(0, 4, (5, 9 - i))
        logits = dec.net(F.one_hot(hidden, 4).float(), cond)[:, i]
        total += F.log_softmax(logits, -1).gather(-1, x[:, i:i + 1]).squeeze(-1)
    assert torch.allclose(dec(z).log_prob(x), total, atol=1e-5)


def test_vae_with_pixel_decoder_trains_and_uses_z():
    torch.manual_seed(0)
    x = torch.randint(0, 17, (64, 64))
    vae = VAE((64,), 4, likelihood="pixelcnn", num_levels=17, hidden=(32,),
              pixelcnn={"channels": 8, "cond_channels": 4})
    res = fit(vae, None, x, steps=20, batch_size=32, progress=False)
    assert res.history[-1]["loss"] < res.history[0]["loss"] or len(res.history) == 1
    loss = ELBO().loss(vae.model, vae.guide, x[:8])
    loss.backward()
    assert all(p.grad is not None for p in vae.decoder.parameters())
    assert vae.sample(3).shape == (3, 64)
    assert vae.decode(torch.zeros(2, 4)).shape == (2, 64)
    m = evaluate_vae(vae, x[:6], num_samples=5)
    assert m["test_nll"] <= m["test_neg_elbo"] + 1.0 and m["test_kl"] >= 0


@pytest.mark.parametrize("kwargs, word", [
    ({"left": 0, "up": 0}, "context"),
    ({"left": -1}, "left"),
    ({"net": "transformer"}, "net"),
])
def test_bad_decoder_settings_raise(kwargs, word):
    with pytest.raises(ProbgenError, match=word):
        PixelDecoder((8, 8), 2, num_levels=17, **kwargs)


def test_pixel_vae_needs_flat_square_images_and_conditions_on_labels():
    for shape in [(10,), (1, 8, 8)]:
        with pytest.raises(ProbgenError, match="data_shape"):
            VAE(shape, 2, likelihood="pixelcnn", num_levels=17)
    torch.manual_seed(0)
    x, y = torch.randint(0, 17, (32, 16)), torch.arange(32) % 3
    cvae = VAE((16,), 2, likelihood="pixelcnn", num_levels=17, hidden=(16,), num_classes=3,
               pixelcnn={"channels": 8, "cond_channels": 2})
    fit(cvae, None, (x, y), steps=3, batch_size=16, progress=False)
    z = torch.zeros(2, 2)
    a, b = cvae.decoder(z, torch.tensor([0, 0])), cvae.decoder(z, torch.tensor([1, 1]))
    assert not torch.allclose(a.log_prob(x[:2]), b.log_prob(x[:2]))  # the label matters
    assert cvae.sample(4, y=torch.tensor([0, 1, 2, 0])).shape == (4, 16)
    with pytest.raises(ProbgenError, match="levels"):
        PixelDecoder((2, 2), 1, num_levels=3)(torch.zeros(1, 1)).log_prob(torch.full((1, 4), 5))
