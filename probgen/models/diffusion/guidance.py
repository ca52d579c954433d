"""Conditional generation: denoisers for the shared samplers with label guidance.

- [`guided_denoiser`][probgen.models.diffusion.guidance.guided_denoiser]: classifier-free
  guidance (Ho & Salimans 2022, eq. 6), one network trained with label dropout predicting both
  ``p(x | y)`` and ``p(x)``: ``pred = pred_uncond + scale * (pred_cond - pred_uncond)``
  (``scale = 1``: the conditional model; ``0``: unconditional; ``> 1``: sharper, less
  diverse). The combination is taken in the network's own parameterisation; ``epsilon``,
  ``x0`` and ``v`` are affine in each other at fixed ``x_t``, so it is the same in all three.
- [`classifier_denoiser`][probgen.models.diffusion.guidance.classifier_denoiser]: classifier
  guidance (Dhariwal & Nichol 2021, Algorithm 2 / eq. 14): a *noise-aware* classifier
  ``p_phi(y | x_t, t)`` shifts the noise prediction,
  ``eps^ = eps - scale * sqrt(1 - ab_t) grad_x log p_phi(y | x_t)``, i.e. the score of
  ``p(x_t) p(y | x_t)^scale``.
- [`NoisyClassification`][probgen.models.diffusion.guidance.NoisyClassification]: the objective
  that trains such a classifier through [`fit`][probgen.infer.fit.fit] on ``x_t ~ q(x_t | x_0)``
  at uniformly drawn steps.

Examples:
    >>> import torch
    >>> from probgen.nn.time_embedding import TimeMLP
    >>> from probgen.models.diffusion.ddpm import DDPM
    >>> from probgen.models.diffusion.schedules import NoiseSchedule
    >>> ddpm = DDPM(TimeMLP(2, hidden=(16,), num_classes=3), NoiseSchedule.make("cosine", 10),
    ...             (2,), num_classes=3)
    >>> den = guided_denoiser(ddpm, torch.tensor([0, 1]), scale=3.0)
    >>> [v.shape for v in den(torch.randn(2, 2), torch.tensor([5, 5]))]
    [torch.Size([2, 2]), torch.Size([2, 2])]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from probgen.errors import ProbgenError
from probgen.infer.objectives import Objective
from probgen.models.diffusion.ddpm import DDPM
from probgen.models.diffusion.samplers import Denoiser
from probgen.models.diffusion.schedules import expand_as, q_sample, to_x0_eps

__all__ = ["guided_denoiser", "classifier_denoiser", "NoisyClassification"]


def guided_denoiser(ddpm: DDPM, y: Tensor | None, scale: float = 1.0) -> Denoiser:
    """``(x_t, t) -> (x0, eps)`` of ``ddpm`` for labels ``y`` with classifier-free guidance
    ``scale`` (one batched network call for both predictions)."""
    if y is None:
        if scale != 1.0 and ddpm.num_classes:
            raise ProbgenError("guidance: classifier-free guidance needs labels y")
        return lambda x, t: ddpm.denoise(x, t, None)
    if not ddpm.num_classes:
        raise ProbgenError("y: this diffusion model is not class-conditional")
    y = torch.as_tensor(y).long()

    def denoise(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        yy = y.to(x.device)
        if scale == 1.0:
            return ddpm.denoise(x, t, yy)
        null = torch.full_like(yy, ddpm.num_classes)
        both = ddpm.predict(torch.cat([x, x]), torch.cat([t, t]), torch.cat([yy, null]))
        cond, uncond = both.chunk(2)
        pred = uncond + scale * (cond - uncond)
        return to_x0_eps(pred, ddpm.prediction, x, ddpm.ab(t))

    return denoise


def classifier_denoiser(ddpm: DDPM, classifier: Callable[[Tensor, Tensor], Tensor],
                        y: Tensor, scale: float = 1.0, uncond: Tensor | None = None
                        ) -> Denoiser:
    """``(x_t, t) -> (x0, eps)`` of the (unconditional) ``ddpm`` guided by
    ``classifier(x_t, t / T) -> logits`` towards labels ``y`` with strength ``scale``."""
    y = torch.as_tensor(y).long()

    def denoise(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        _, eps = ddpm.denoise(x, t, uncond)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = classifier(xg, t.float() / ddpm.T)
            logp = F.log_softmax(logits, -1).gather(1, y.to(x.device)[:, None]).sum()
            (grad,) = torch.autograd.grad(logp, xg)
        ab = ddpm.ab(t)
        eps = eps - scale * expand_as((1 - ab).sqrt(), x) * grad
        x0 = (x - expand_as((1 - ab).sqrt(), x) * eps) / expand_as(ab.sqrt(), x)
        return x0, eps

    return denoise


class NoisyClassification(Objective):
    """Cross-entropy of a noise-aware classifier ``model(x_t, t / T) -> logits`` on
    ``x_t ~ q(x_t | x_0)`` at ``t ~ Uniform{1..T}`` of ``ddpm``'s schedule (Dhariwal & Nichol
    2021, sec. 4.1); the batch is ``(x0, y)`` at data scale. Summed over the batch.

    Examples:
        >>> from probgen.nn.time_embedding import TimeMLP
        >>> from probgen.models.diffusion.schedules import NoiseSchedule
        >>> ddpm = DDPM(TimeMLP(2, hidden=(8,)), NoiseSchedule.make("cosine", 10), (2,))
        >>> clf = TimeMLP(2, hidden=(8,), out_dim=3)
        >>> obj = NoisyClassification(ddpm)
        >>> obj.loss(clf, None, torch.randn(4, 2), torch.tensor([0, 1, 2, 0])).shape
        torch.Size([])
    """

    name = "noisy_classification"
    #: the loss is a batch sum of per-example cross-entropies (the engine scales it by N / B)
    per_example_loss = True

    def __init__(self, ddpm: DDPM) -> None:
        self.ddpm = ddpm

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "T": self.ddpm.T}

    def loss(self, model: Callable, guide: Callable | None, *batch: Tensor) -> Tensor:
        if len(batch) != 2:
            raise ProbgenError("batch: the noisy classifier trains on (x0, y) pairs")
        x0, y = batch
        d = self.ddpm
        x = d.to_model_space(x0)
        t = torch.randint(1, d.T + 1, (x.shape[0],), device=x.device)
        x_t = q_sample(x, d.ab(t.to(d.alpha_bars.device)).to(x.device), torch.randn_like(x))
        logits = model(x_t, t.float() / d.T)
        if not isinstance(model, nn.Module) and not callable(model):
            raise ProbgenError("model: the noisy classifier must be callable")
        return F.cross_entropy(logits, y.long(), reduction="sum")
