"""Conditional diffusion: classifier-free and classifier guidance, the noise-aware
classifier, label agreement, latent diffusion through the public API."""

from __future__ import annotations

import pytest
import torch

from probgen.errors import ProbgenError
from probgen.models.diffusion.conditional import label_agreement, train_noisy_classifier
from probgen.models.diffusion.ddpm import DDPM
from probgen.models.diffusion.guidance import (
    NoisyClassification,
    classifier_denoiser,
    guided_denoiser,
)
from probgen.models.diffusion.latent import LatentDiffusion
from probgen.models.diffusion.schedules import NoiseSchedule
from probgen.nn.time_embedding import TimeMLP


def _ddpm(classes=3, dim=4, prediction="epsilon"):
    net = TimeMLP(dim, hidden=(16,), num_classes=classes)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.5)
    return DDPM(net, NoiseSchedule.make("cosine", 10), (dim,), prediction=prediction,
                num_classes=classes)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_classifier_free_guidance_interpolates_and_extrapolates(prediction):
    ddpm = _ddpm(prediction=prediction)
    x, t, y = torch.randn(5, 4), torch.full((5,), 6), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        cond = ddpm.denoise(x, t, y)[1]
        uncond = ddpm.denoise(x, t, torch.full_like(y, 3))[1]
        assert torch.allclose(guided_denoiser(ddpm, y, 1.0)(x, t)[1], cond, atol=1e-5)
        assert torch.allclose(guided_denoiser(ddpm, y, 0.0)(x, t)[1], uncond, atol=1e-5)
        # eps, x0 and v are affine in each other: guidance is linear in eps for any of them
        g = guided_denoiser(ddpm, y, 3.0)(x, t)[1]
        assert torch.allclose(g, uncond + 3.0 * (cond - uncond), atol=1e-4)
    with pytest.raises(ProbgenError, match="needs labels"):
        guided_denoiser(ddpm, None, 2.0)


def test_classifier_guidance_adds_the_scaled_classifier_gradient():
    """A linear classifier logits = x W has grad log p(y|x) = W[:, y] - W softmax(xW):
    eps^ = eps - s sqrt(1 - ab) grad (Dhariwal & Nichol 2021, eq. 14)."""
    ddpm = _ddpm(classes=0)
    W = torch.randn(4, 3)
    clf = lambda x, t: x @ W  # noqa: E731
    x, t, y = torch.randn(5, 4), torch.full((5,), 4), torch.tensor([0, 1, 2, 2, 0])
    with torch.no_grad():
        _, eps = ddpm.denoise(x, t)
        x0g, epsg = classifier_denoiser(ddpm, clf, y, scale=2.0)(x, t)
    grad = W[:, y].T - torch.softmax(x @ W, -1) @ W.T
    ab = ddpm.ab(t)[:, None]
    assert torch.allclose(epsg, eps - 2.0 * (1 - ab).sqrt() * grad, atol=1e-5)
    assert torch.allclose(x0g, (x - (1 - ab).sqrt() * epsg) / ab.sqrt(), atol=1e-5)


def test_noisy_classifier_trains_through_fit():
    ddpm = _ddpm(classes=0, dim=2)
    y = torch.arange(200) % 2
    x = torch.randn(200, 2) * 0.2 + (y[:, None] * 2.0 - 1.0)
    clf = train_noisy_classifier(ddpm, x, y, steps=60, hidden=(16,), batch_size=50)
    with torch.no_grad():  # at t = 1 (hardly any noise) the two blobs are separable
        acc = (clf(x, torch.full((200,), 0.1)).argmax(1) == y).float().mean()
    assert acc > 0.9
    with pytest.raises(ProbgenError, match="pairs"):
        NoisyClassification(ddpm).loss(clf, None, x)


def test_label_agreement_checks_its_inputs():
    from probgen.data.digits import load_digit_labels, load_digits

    x, y = load_digits("val"), load_digit_labels("val")
    assert label_agreement(x, y) > 0.9 > label_agreement(x, (y + 1) % 10)
    with pytest.raises(ProbgenError, match="labels"):
        label_agreement(x, y[:3])


def test_latent_diffusion_trains_and_samples_through_the_public_api():
    from probgen.data.digits import load_digit_labels, load_digits
    from probgen.models.family import train

    vae = train("vae", fast=True, progress=False, likelihood="categorical", latent_dim=4,
                eval_samples=2).vae
    x, y = load_digits("train"), load_digit_labels("train")
    ldm = LatentDiffusion.fit(vae, x, y, steps=40, T=20, hidden=(32, 32))
    z = ldm.encode(x)
    assert torch.allclose(z.mean(0), torch.zeros(4), atol=1e-4)  # standardised codes
    s = ldm.sample(10, torch.arange(10), steps=10, seed=0)
    assert s.shape == (10, 64) and s.dtype == torch.long and 0 <= s.min() and s.max() <= 16
    assert torch.equal(s, ldm.sample(10, torch.arange(10), steps=10, seed=0))
    other = ldm.sample(10, (torch.arange(10) + 5) % 10, steps=10, seed=0)
    assert not torch.equal(s, other)  # the label embedding reaches the samples
    assert all(not p.requires_grad for p in vae.parameters())  # the VAE stayed frozen
    with pytest.raises(ProbgenError, match="labels"):
        ldm.sample(3, torch.arange(4))
