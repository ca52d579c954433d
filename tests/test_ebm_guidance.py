"""Guidance of noise-conditional scores in 2-D, against the closed forms of a two-Gaussian
mixture: ``x | y ~ N(+-m, s^2 I)``, so ``x_sigma | y ~ N(+-m, (s^2 + sigma^2) I)`` and
``p_sigma(y=1 | x) = sigmoid(2 m.x / v)`` with ``v = s^2 + sigma^2``."""

from __future__ import annotations

import pytest
import torch

from probgen.errors import ProbgenError
from probgen.infer.fit import fit
from probgen.infer.langevin import annealed_langevin, geometric_sigmas
from probgen.models.ebm.guidance import (
    LabelledNCSNLoss,
    NoisyClassifier,
    NoisyLabelLoss,
    classifier_free_score,
    classifier_guided_score,
)
from probgen.models.ebm.nets import NoiseScoreNet

M = torch.tensor([1.5, 0.5])
S2 = 0.1  # within-class variance


def _v(sigma):
    return S2 + sigma[:, None] ** 2


def exact_uncond(x, sigma):
    v = _v(sigma)
    return (-x + torch.tanh((x @ M)[:, None] / v) * M) / v


def exact_cond(x, sigma, y):
    v = _v(sigma)
    mean = torch.where(y[:, None] == 1, M, -M)
    return -(x - mean) / v


def exact_logits(x, sigma):
    half = (x @ M)[:, None] / _v(sigma)
    return torch.cat([-half, half], 1)  # log p(y | x) up to a shared constant


def _data(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.where(y[:, None] == 1, M, -M) + S2 ** 0.5 * torch.randn(n, 2, generator=g)
    return x, y


def test_classifier_guidance_is_bayes_rule_for_exact_scores():
    x = torch.randn(64, 2) * 2
    sigma = torch.rand(64) + 0.05
    for label in (0, 1):
        y = torch.full((64,), label)
        guided = classifier_guided_score(exact_uncond, exact_logits, y, scale=1.0)(x, sigma)
        torch.testing.assert_close(guided, exact_cond(x, sigma, y), rtol=1e-5, atol=1e-5)
    # scale w: the score of p(x) p(y | x)^w, whose classifier term is closed-form too
    y = torch.ones(64, dtype=torch.long)
    w = 3.0
    grad_logp1 = (1 - torch.sigmoid(2 * (x @ M) / _v(sigma)[:, 0]))[:, None] * 2 * M / _v(sigma)
    torch.testing.assert_close(classifier_guided_score(exact_uncond, exact_logits, y, w)(x, sigma),
                               exact_uncond(x, sigma) + w * grad_logp1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(classifier_guided_score(exact_uncond, exact_logits, y, 0.0)(
        x, sigma), exact_uncond(x, sigma))


def test_classifier_free_mix_equals_implicit_classifier_guidance():
    def net(x, sigma, y=None):
        return exact_uncond(x, sigma) if y is None else exact_cond(x, sigma, y)

    x = torch.randn(50, 2) * 2
    sigma = torch.rand(50) + 0.05
    y = torch.randint(0, 2, (50,))
    for w in (0.0, 1.0, 4.0):
        cfg = classifier_free_score(net, y, w, num_classes=2)(x, sigma)
        via_classifier = classifier_guided_score(exact_uncond, exact_logits, y, 1 + w)(x, sigma)
        torch.testing.assert_close(cfg, via_classifier, rtol=1e-5, atol=1e-5)


def test_trained_noisy_classifier_guides_annealed_langevin_to_its_class():
    torch.manual_seed(0)
    x, y = _data()
    sigmas = geometric_sigmas(2.0, 0.05, 6)
    clf = NoisyClassifier(2, 2, hidden=(32, 32))
    fit(clf, None, (x, y), objective=NoisyLabelLoss(sigmas), steps=800, batch_size=256, lr=3e-3,
        progress=False)
    # the learned classifier is the closed-form posterior where the data lie
    sig = torch.full((len(x),), 0.3)
    with torch.no_grad():
        p_learned = torch.softmax(clf(x, sig), -1)[:, 1]
    p_exact = torch.sigmoid(2 * (x @ M) / (S2 + 0.09))
    assert (p_learned - p_exact).abs().mean() < 0.05
    # a cross-entropy classifier saturates where it is sure, so its gradient under-pulls the
    # few chains that start on the wrong side: Bayes' rule (w = 1) gets most of them, w = 3 all
    for w, need in ((1.0, 0.9), (3.0, 0.99)):
        for label, sign in ((0, -1.0), (1, 1.0)):
            guided = classifier_guided_score(exact_uncond, clf, label, scale=w)
            xs = annealed_langevin(guided, 2 * torch.randn(600, 2), sigmas, 2e-4, 30,
                                   denoise=True, generator=torch.Generator().manual_seed(label))
            on_side = float((sign * (xs @ M) > 0).float().mean())
            assert on_side > need, (w, label, on_side)
            torch.testing.assert_close(xs.mean(0), sign * M, atol=0.25, rtol=0)
    # unguided: both classes, half each
    xs = annealed_langevin(classifier_guided_score(exact_uncond, clf, 0, 0.0),
                           2 * torch.randn(1000, 2), sigmas, 2e-4, 30, denoise=True,
                           generator=torch.Generator().manual_seed(5))
    assert 0.4 < float(((xs @ M) > 0).float().mean()) < 0.6


def test_labelled_ncsn_learns_conditional_and_unconditional_scores():
    torch.manual_seed(0)
    x, y = _data()
    sigmas = geometric_sigmas(2.0, 0.1, 5)
    net = NoiseScoreNet(2, hidden=(64, 64), num_classes=2)
    fit(net, None, (x, y), objective=LabelledNCSNLoss(2, sigmas, p_uncond=0.3), steps=600,
        batch_size=256, lr=3e-3, progress=False)
    pts, lab = _data(500, seed=1)
    sig = torch.full((500,), 0.5)
    with torch.no_grad():
        cond, uncond = net(pts, sig, lab), net(pts, sig)
    err = lambda a, b: float(((a - b) ** 2).sum(-1).mean() / (b ** 2).sum(-1).mean())  # noqa: E731
    assert err(cond, exact_cond(pts, sig, lab)) < 0.05
    assert err(uncond, exact_uncond(pts, sig)) < 0.05
    guided = classifier_free_score(net, 1, scale=2.0)
    xs = annealed_langevin(guided, 2 * torch.randn(500, 2), sigmas, 1e-3, 30, denoise=True,
                           generator=torch.Generator().manual_seed(0))
    assert float(((xs @ M) > 0).float().mean()) > 0.95


@pytest.mark.parametrize("call, match", [
    (lambda: classifier_guided_score(exact_uncond, exact_logits, 0, scale=-1.0), "scale"),
    (lambda: classifier_free_score(lambda x, s, y=None: x, 0, scale=float("nan")), "scale"),
    (lambda: classifier_guided_score(exact_uncond, NoisyClassifier(2, 2), 2)(
        torch.zeros(3, 2), torch.ones(3)), "y: labels"),
    (lambda: classifier_guided_score(exact_uncond, exact_logits, torch.zeros(2).long())(
        torch.zeros(3, 2), torch.ones(3)), "y: need one label"),
    (lambda: NoisyClassifier(2, 1), "num_classes"),
    (lambda: NoisyLabelLoss([0.5, -0.1]), "sigmas"),
    (lambda: LabelledNCSNLoss(2, p_uncond=1.5), "p_uncond"),
    (lambda: NoisyLabelLoss([0.5]).loss(NoisyClassifier(2, 2), None, torch.zeros(3, 2)), "pairs"),
])
def test_bad_guidance_arguments_one_line_error(call, match):
    with pytest.raises(ProbgenError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
