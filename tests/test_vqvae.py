"""VQ-VAE: quantiser against brute force, EMA against its formula, the ELBO by hand."""

from __future__ import annotations

import math

import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F

from probgen.data.digits import load_digits
from probgen.infer.fit import fit
from probgen.infer.objectives import ELBO
from probgen.models.vae.vqvae import VQVAE, VectorQuantizer


def test_nearest_code_matches_brute_force():
    vq = VectorQuantizer(10, 3)
    z = torch.randn(2, 3, 4, 4)
    _, idx, commit, _ = vq.eval()(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    ref = torch.cdist(flat, vq.codebook).argmin(1).reshape(2, 4, 4)
    assert torch.equal(idx, ref)
    e = vq.codebook[ref].permute(0, 3, 1, 2)
    assert torch.allclose(commit, (z - e).pow(2).flatten(1).sum(1), atol=1e-5)


def test_straight_through_gradient_is_identity():
    vq = VectorQuantizer(6, 2, ema=False)
    z = torch.randn(1, 2, 2, 2, requires_grad=True)
    z_q, idx, _, _ = vq(z)
    assert torch.allclose(z_q, vq.lookup(idx))
    (z_q * torch.arange(8.0).reshape(1, 2, 2, 2)).sum().backward()
    assert torch.equal(z.grad, torch.arange(8.0).reshape(1, 2, 2, 2))


def test_ema_update_matches_formula():
    vq = VectorQuantizer(4, 2, decay=0.9, eps=0.0)
    vq.initialised.fill_(True)  # test the update from the current codebook
    z = torch.randn(1, 2, 3, 3)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    idx = torch.cdist(flat, vq.codebook).argmin(1)
    counts = 0.9 * torch.ones(4) + 0.1 * torch.bincount(idx, minlength=4).float()
    sums = 0.9 * vq.codebook.clone() + 0.1 * F.one_hot(idx, 4).float().T @ flat
    vq.train()(z)
    assert torch.allclose(vq.codebook, sums / counts[:, None], atol=1e-6)
    before = vq.codebook.clone()
    with torch.no_grad():
        vq(z)  # evaluation passes leave the codebook alone
    assert torch.equal(before, vq.codebook)


@pytest.mark.parametrize("ema", [True, False])
def test_elbo_is_reconstruction_plus_vq_terms(ema):
    vq = VQVAE((1, 8, 8), num_codes=8, code_dim=3, hidden=8, likelihood="bce", ema=ema,
               beta=0.25).eval()
    x = torch.rand(5, 1, 8, 8)
    g = poutine.trace(vq.guide).get_trace(x)
    m = poutine.trace(poutine.replay(vq.model, trace=g)).get_trace(x)
    elbo = m.log_prob_sum() - g.log_prob_sum()
    z_e = vq.encoder(x)
    idx = vq.encode_indices(x)
    e = vq.quantizer.lookup(idx)
    logits = vq.decoder(e)
    rec = -F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    vq_terms = 0.25 * (z_e - e).pow(2).sum() * (1 if ema else 1 + 1 / 0.25)
    ref = rec - vq_terms - 5 * 16 * math.log(8)
    assert torch.allclose(elbo, ref, atol=1e-3)


def test_training_on_digits_reduces_the_loss_and_indices_round_trip():
    x = load_digits("train", "levels", image=True)[:256]
    vq = VQVAE((1, 8, 8), num_codes=16, code_dim=8, hidden=32, likelihood="categorical",
               num_levels=17)
    with torch.no_grad():
        before = float(ELBO().loss(vq.model, vq.guide, x)) / len(x)
    res = fit(vq, None, x, steps=60, batch_size=64, lr=3e-3, progress=False)
    vq.eval()
    with torch.no_grad():
        after = float(ELBO().loss(vq.model, vq.guide, x)) / len(x)
    assert after < before - 20, (before, after)
    idx = vq.encode_indices(x[:4])
    assert idx.shape == (4, 4, 4) and idx.dtype == torch.long
    rec = vq.decode_indices(idx)
    assert rec.shape == (4, 1, 8, 8) and 0 <= float(rec.min()) <= float(rec.max()) <= 1
    assert 0 < vq.codebook_usage(x) <= 1
    assert vq.sample(3).shape == (3, 1, 8, 8)
    assert res.final["train_loss"] is not None


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="data_shape"):
        VQVAE((1, 6, 6), downsample=2)
    with pytest.raises(ValueError, match="num_levels"):
        VQVAE((1, 8, 8), likelihood="categorical")
    vq = VQVAE((1, 8, 8), num_codes=8)
    with pytest.raises(ValueError, match="indices"):
        vq.decode_indices(torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="indices"):
        vq.decode_indices(torch.full((2, 4, 4), 8))
    with pytest.raises(ValueError, match="num_codes"):
        VectorQuantizer(1, 2)
