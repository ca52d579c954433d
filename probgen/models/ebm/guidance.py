"""Guidance for noise-conditional scores: steer annealed Langevin towards a label ``y``.

Both turn an unconditional (or label-dropped) score ``s(x, sigma) ~ grad_x log p_sigma(x)``
into a conditional one ``grad_x log p_sigma(x | y)`` that the shared
[`annealed_langevin`][probgen.infer.langevin.annealed_langevin] samples from:

- [`classifier_guided_score`][probgen.models.ebm.guidance.classifier_guided_score]:
  **classifier guidance** (Song et al. 2021, eq. 14 / sec. I.4; Dhariwal & Nichol 2021,
  sec. 4): Bayes' rule for the noisy marginals,
  ``grad log p_sigma(x | y) = grad log p_sigma(x) + grad log p_sigma(y | x)``, with a
  *noise-aware* classifier ``p_phi(y | x, sigma)`` trained on noisy inputs
  ([`NoisyLabelLoss`][probgen.models.ebm.guidance.NoisyLabelLoss]); ``scale`` ``w`` multiplies
  the classifier's term, i.e. samples ``p_sigma(x) p_sigma(y | x)^w`` (``w > 1``: sharper
  classes, less diversity).
- [`classifier_free_score`][probgen.models.ebm.guidance.classifier_free_score]:
  **classifier-free guidance** (Ho & Salimans 2022, eq. 6): one network ``s(x, sigma, y)``
  trained with the label dropped to the "no label" index some of the time
  ([`LabelledNCSNLoss`][probgen.models.ebm.guidance.LabelledNCSNLoss]) gives both the
  conditional and the unconditional score, mixed as
  ``(1 + w) s(x, sigma, y) - w s(x, sigma)``. For exact scores this equals
  ``s(x, sigma) + (1 + w) grad log p_sigma(y | x)``: classifier guidance with scale
  ``1 + w`` by an implicit classifier.

[`NoisyClassifier`][probgen.models.ebm.guidance.NoisyClassifier] is the classifier network
``(x, sigma) -> logits`` (a [`TimeMLP`][probgen.nn.time_embedding.TimeMLP] on ``log sigma``).

Examples:
    >>> import torch
    >>> clf = NoisyClassifier(2, num_classes=2, hidden=(8,))
    >>> s = classifier_guided_score(lambda x, sigma: -x, clf, torch.tensor([0, 1]), scale=2.0)
    >>> s(torch.randn(2, 2), torch.full((2,), 0.5)).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from probgen.errors import ProbgenError
from probgen.infer.langevin import geometric_sigmas
from probgen.infer.objectives import Objective
from probgen.nn.time_embedding import TimeMLP

__all__ = ["NoisyClassifier", "NoisyLabelLoss", "LabelledNCSNLoss", "classifier_guided_score",
           "classifier_free_score"]

Score = Callable[[Tensor, Tensor], Tensor]


def _scale(scale: float) -> float:
    try:
        w = float(scale)
    except (TypeError, ValueError):
        raise ProbgenError(f"scale: must be a number, got {scale!r}") from None
    if not math.isfinite(w) or w < 0:
        raise ProbgenError(f"scale: must be a finite number >= 0, got {scale!r}")
    return w


def _labels(y: Tensor | int, n: int, num_classes: int | None, device: torch.device) -> Tensor:
    y = torch.as_tensor(y, device=device).long()
    if y.dim() == 0:
        y = y.expand(n)
    if y.shape != (n,):
        raise ProbgenError(f"y: need one label per point ({n},), got shape {tuple(y.shape)}")
    if num_classes is not None and ((y < 0) | (y >= num_classes)).any():
        raise ProbgenError(f"y: labels must be in 0..{num_classes - 1}, got {y.unique().tolist()}")
    return y


def _sigmas(sigmas: Sequence[float] | Tensor | None, sigma_max: float, sigma_min: float,
            num_levels: int) -> Tensor:
    if sigmas is None:
        return geometric_sigmas(sigma_max, sigma_min, num_levels)
    out = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1)
    if not len(out) or not torch.isfinite(out).all() or (out <= 0).any():
        raise ProbgenError(f"sigmas: need finite noise levels > 0, got {out.tolist()[:4]}")
    return out


class NoisyClassifier(nn.Module):
    """A noise-aware classifier ``(x, sigma) -> logits (N, num_classes)`` for vectors ``x``.

    Args:
        dim: data dimension.
        num_classes: number of labels.
        hidden: hidden widths of the [`TimeMLP`][probgen.nn.time_embedding.TimeMLP]
            conditioned on ``log sigma``.
    """

    def __init__(self, dim: int, num_classes: int, hidden: tuple[int, ...] = (64, 64)) -> None:
        super().__init__()
        if num_classes < 2:
            raise ProbgenError(f"num_classes: a classifier needs >= 2 classes, got {num_classes}")
        self.net = TimeMLP(dim, hidden=hidden, out_dim=num_classes, time_scale=1.0)
        self.dim, self.num_classes = dim, num_classes

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype).expand(x.shape[0])
        return self.net(x.reshape(x.shape[0], -1), torch.log(sigma))


class NoisyLabelLoss(Objective):
    """Cross-entropy of ``model(x + sigma z, sigma) -> logits`` against ``y``, ``sigma``
    uniform over the noise levels: trains a
    [`NoisyClassifier`][probgen.models.ebm.guidance.NoisyClassifier] for classifier guidance
    (Song et al. 2021, sec. I.4). The batch is ``(x, y)``; summed over it.

    Examples:
        >>> obj = NoisyLabelLoss(sigma_max=1.0, sigma_min=0.1, num_levels=3)
        >>> clf = NoisyClassifier(2, 3, hidden=(8,))
        >>> obj.loss(clf, None, torch.randn(4, 2), torch.tensor([0, 1, 2, 0])).shape
        torch.Size([])
    """

    name = "noisy_labels"
    #: a batch sum of per-example terms on a plain network (the engine scales it by N / B)
    per_example_loss = True

    def __init__(self, sigmas: Sequence[float] | Tensor | None = None, *, sigma_max: float = 1.0,
                 sigma_min: float = 0.01, num_levels: int = 10) -> None:
        self.sigmas = _sigmas(sigmas, sigma_max, sigma_min, num_levels)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigmas": [round(s, 6) for s in self.sigmas.tolist()]}

    def loss(self, model: Callable, guide: Callable | None, *batch: Tensor) -> Tensor:
        if guide is not None:
            raise ProbgenError("guide: the noisy classifier takes no guide (pass guide=None)")
        if len(batch) != 2:
            raise ProbgenError("batch: the noisy classifier trains on (x, y) pairs")
        x, y = batch
        sigma = self.sigmas.to(x.device)[torch.randint(len(self.sigmas), (x.shape[0],),
                                                       device=x.device)]
        noisy = x + sigma.view((-1,) + (1,) * (x.dim() - 1)) * torch.randn_like(x)
        return F.cross_entropy(model(noisy, sigma), y.long(), reduction="sum")


class LabelledNCSNLoss(Objective):
    """The NCSN loss (Song & Ermon 2019, eqs. 5-6) of a label-conditional score
    ``model(x, sigma, y)`` with label dropout (Ho & Salimans 2022, Alg. 1): each label is
    replaced by the "no label" index ``num_classes`` with probability ``p_uncond``, so one
    network learns ``p(x | y)`` and ``p(x)``. The batch is ``(x, y)``; summed over it.

    Examples:
        >>> from probgen.models.ebm.nets import NoiseScoreNet
        >>> net = NoiseScoreNet(2, hidden=(8,), num_classes=2)
        >>> LabelledNCSNLoss(2, sigma_max=1.0, sigma_min=0.1, num_levels=3).loss(
        ...     net, None, torch.randn(4, 2), torch.tensor([0, 1, 1, 0])).shape
        torch.Size([])
    """

    name = "labelled_ncsn"
    #: a batch sum of per-example terms on a plain network (the engine scales it by N / B)
    per_example_loss = True

    def __init__(self, num_classes: int, sigmas: Sequence[float] | Tensor | None = None, *,
                 p_uncond: float = 0.2, sigma_max: float = 1.0, sigma_min: float = 0.01,
                 num_levels: int = 10) -> None:
        if not 0 <= p_uncond <= 1:
            raise ProbgenError(f"p_uncond: must be in [0, 1], got {p_uncond}")
        self.num_classes, self.p_uncond = int(num_classes), float(p_uncond)
        self.sigmas = _sigmas(sigmas, sigma_max, sigma_min, num_levels)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "p_uncond": self.p_uncond,
                "sigmas": [round(s, 6) for s in self.sigmas.tolist()]}

    def loss(self, model: Callable, guide: Callable | None, *batch: Tensor) -> Tensor:
        if guide is not None:
            raise ProbgenError("guide: score objectives take no guide (pass guide=None)")
        if len(batch) != 2:
            raise ProbgenError("batch: the labelled NCSN loss trains on (x, y) pairs")
        x, y = batch
        n = x.shape[0]
        y = y.long().clone()
        y[torch.rand(n, device=x.device) < self.p_uncond] = self.num_classes
        sigma = self.sigmas.to(x.device)[torch.randint(len(self.sigmas), (n,), device=x.device)]
        shape = (n,) + (1,) * (x.dim() - 1)
        z = torch.randn_like(x)
        s = model(x + sigma.view(shape) * z, sigma, y)
        return 0.5 * ((sigma.view(shape) * s + z) ** 2).reshape(n, -1).sum()


def classifier_guided_score(score: Score, classifier: Callable[[Tensor, Tensor], Tensor],
                            y: Tensor | int, scale: float = 1.0) -> Score:
    """``(x, sigma) -> score(x, sigma) + scale * grad_x log p_phi(y | x, sigma)``.

    Args:
        score: the unconditional noise-conditional score ``score(x, sigma)``.
        classifier: ``classifier(x, sigma) -> logits (N, C)`` trained on noisy inputs.
        y: the wanted label (an int for every point, or an ``(N,)`` tensor).
        scale: the guidance strength ``w >= 0`` (0: unconditional; 1: Bayes' rule).
    """
    w = _scale(scale)

    def guided(x: Tensor, sigma: Tensor) -> Tensor:
        yy = _labels(y, x.shape[0], getattr(classifier, "num_classes", None), x.device)
        base = score(x, sigma).detach()
        if w == 0:
            return base
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = F.log_softmax(classifier(xg, sigma), -1)
            chosen = logp.gather(1, yy[:, None]).sum()
            (grad,) = torch.autograd.grad(chosen, xg)
        return base + w * grad.detach()

    return guided


def classifier_free_score(net: Callable[..., Tensor], y: Tensor | int, scale: float = 1.0,
                          num_classes: int | None = None) -> Score:
    """``(x, sigma) -> (1 + w) net(x, sigma, y) - w net(x, sigma, null)`` for a label-dropout
    score network (``null`` is the "no label" index ``num_classes``, which
    [`NoiseScoreNet`][probgen.models.ebm.nets.NoiseScoreNet] uses for ``y=None``).

    Args:
        net: ``net(x, sigma, y)``; ``y=None`` must give the unconditional score.
        y: the wanted label (an int or an ``(N,)`` tensor).
        scale: ``w >= 0`` (0: the conditional score; larger: sharper classes).
        num_classes: for checking ``y`` (default ``net.net.num_classes`` when present).
    """
    w = _scale(scale)
    if num_classes is None:
        num_classes = getattr(getattr(net, "net", None), "num_classes", None)

    def guided(x: Tensor, sigma: Tensor) -> Tensor:
        yy = _labels(y, x.shape[0], num_classes, x.device)
        with torch.no_grad():
            cond = net(x, sigma, yy)
            if w == 0:
                return cond
            return (1 + w) * cond - w * net(x, sigma, None)

    return guided
