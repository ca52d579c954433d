"""VQ-VAE code prior: the bound by hand and against exact enumeration, sampling, training."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from probgen.models.arm.arm import ARM, build_net
from probgen.models.vae.vq_prior import (
    code_grid,
    fit_code_prior,
    nll_bound,
    sample_codes,
    sample_with_prior,
    train_vqvae_with_prior,
)
from probgen.models.vae.vqvae import VQVAE


def _tiny(num_codes: int = 3) -> tuple[VQVAE, ARM, torch.Tensor]:
    """A 4x4 image, 2x2 code grid of ``num_codes`` codes, a random MADE prior."""
    vq = VQVAE((1, 4, 4), num_codes=num_codes, code_dim=2, hidden=6, downsample=1,
               likelihood="categorical", num_levels=5).eval()
    prior = ARM(build_net("made", vq.grid, num_codes, channels=8, layers=1)).eval()
    x = torch.randint(0, 5, (6, 1, 4, 4))
    return vq, prior, x


def _log_px_given_codes(vq: VQVAE, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``log p(x | e[codes])`` from the decoder's logits, by hand: (B,)."""
    logits = vq.decoder(vq.quantizer.codebook[codes].permute(0, 3, 1, 2))  # (B, K, 4, 4)
    logp = F.log_softmax(logits, 1)
    return logp.gather(1, x).flatten(1).sum(1)


def _log_prior(prior: ARM, codes: torch.Tensor) -> torch.Tensor:
    """``log p_prior(z)`` by hand from the network's conditionals: (B,)."""
    z = codes.flatten(1)
    logp = F.log_softmax(prior.nets[0](F.one_hot(z, prior.num_levels).float()), -1)
    return logp.gather(-1, z.unsqueeze(-1)).squeeze(-1).sum(-1)


@torch.no_grad()
def test_bound_equals_hand_computed_sum():
    vq, prior, x = _tiny()
    b = nll_bound(vq, prior, x)
    z_e = vq.encoder(x.float() / 4)  # (B, D, 2, 2)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 2)
    codes = torch.cdist(flat, vq.quantizer.codebook).argmin(1).reshape(-1, 2, 2)
    recon = -_log_px_given_codes(vq, x, codes)
    learned = -_log_prior(prior, codes)
    assert b["recon_nll"] == pytest.approx(float(recon.mean()), abs=1e-4)
    assert b["code_nll"] == pytest.approx(float(learned.mean()), abs=1e-4)
    assert b["nll_bound"] == pytest.approx(float((recon + learned).mean()), abs=1e-4)
    assert b["uniform_code_nll"] == pytest.approx(4 * math.log(3), abs=1e-5)
    assert b["uniform_nll_bound"] == pytest.approx(float(recon.mean()) + 4 * math.log(3),
                                                   abs=1e-4)
    assert b["bits_per_dim"] == pytest.approx(b["nll_bound"] / (16 * math.log(2)))
    assert b["guide_entropy"] == 0.0 and b["kind"] == "upper bound" and b["n"] == 6


@torch.no_grad()
def test_bound_is_above_the_exact_nll_by_enumeration():
    vq, prior, x = _tiny()
    grids = torch.tensor(list(itertools.product(range(3), repeat=4))).reshape(-1, 2, 2)  # 81
    log_pz = _log_prior(prior, grids)
    assert torch.logsumexp(log_pz, 0).item() == pytest.approx(0.0, abs=1e-5)
    exact = torch.stack([
        -torch.logsumexp(_log_px_given_codes(vq, xi.expand(81, -1, -1, -1), grids) + log_pz, 0)
        for xi in x])
    b = nll_bound(vq, prior, x)
    assert b["nll_bound"] >= float(exact.mean()) - 1e-5


def test_sampled_codes_in_range_and_shapes():
    vq, prior, _ = _tiny(num_codes=5)
    codes = sample_codes(vq, prior, 50)
    assert codes.shape == (50, 2, 2) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 5
    images = sample_with_prior(vq, prior, 7)
    assert images.shape == (7, 1, 4, 4)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert code_grid(vq, torch.randint(0, 5, (3, 16))).shape == (3, 4)


def test_fit_code_prior_beats_the_uniform_prior():
    vq = VQVAE((1, 8, 8), num_codes=8, code_dim=4, hidden=8, likelihood="categorical",
               num_levels=17).eval()
    x = torch.randint(0, 17, (64, 1, 8, 8))
    x[:, :, :4] = 0  # the top half blank: its codes are predictable
    prior = fit_code_prior(vq, x, x[:16], steps=60, channels=16, layers=2, val_every=30)
    assert (prior.dims, prior.num_levels, prior.training, prior.emas) == (16, 8, False, None)
    b = nll_bound(vq, prior, x)
    assert b["code_nll"] < b["uniform_code_nll"] and b["nll_bound"] < b["uniform_nll_bound"]


def test_bad_input_raises_value_error():
    vq, prior, x = _tiny()
    other = ARM(build_net("made", vq.grid, 4, channels=8, layers=1))
    with pytest.raises(ValueError, match="prior"):
        nll_bound(vq, other, x)
    with pytest.raises(ValueError, match="vqvae"):
        sample_with_prior(prior, prior, 2)
    with pytest.raises(ValueError, match="x"):
        nll_bound(vq, prior, torch.zeros(2, 1, 5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="n must"):
        sample_codes(vq, prior, 0)
    with pytest.raises(ValueError, match="options"):
        fit_code_prior(vq, x, steps=1, width=3)
    with pytest.raises(ValueError, match="steps"):
        fit_code_prior(vq, x, steps=0)


def test_train_vqvae_with_prior_writes_a_run(tmp_path):
    m = train_vqvae_with_prior(out=tmp_path / "run", fast=True, prior_steps=10, num_samples=40)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["nll_bound"] == pytest.approx(m["test"]["nll_bound"])
    assert m["test"]["n"] == 447 and m["kind"] == "upper bound"
    for name in ("samples.png", "vqvae.safetensors", "prior.safetensors"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    with pytest.raises(ValueError, match="out"):
        train_vqvae_with_prior(out=tmp_path / "run", fast=True)
