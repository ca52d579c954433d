"""A score network for a forward SDE and the continuous-time denoising score-matching loss.

[`ScoreModel`][probgen.models.diffusion.score_sde.ScoreModel] wraps a noise network
``eps(x, t)`` (e.g. [`TimeMLP`][probgen.nn.time_embedding.TimeMLP]) and an
[`SDE`][probgen.models.diffusion.sde.SDE]; its score is ``-eps(x, t) / s(t)`` (the kernel's
score is ``-noise / s(t)``), as in score_sde's VP models.

[`ScoreMatchingSDE`][probgen.models.diffusion.score_sde.ScoreMatchingSDE] is the objective of
Song et al. 2021, eq. 7 (Vincent 2011's denoising score matching, integrated over time):

    L = E_{t ~ U(eps, T)} lambda(t) E_{x0, z} || s_theta(a(t) x0 + s(t) z, t) + z / s(t) ||^2

with ``lambda(t) = s(t)^2`` (``weighting="sigma2"``: then the loss is the noise-prediction error
``||eps_theta - z||^2`` of DDPM) or ``lambda(t) = g(t)^2`` (``"likelihood"``: the weighting
under which the loss bounds the KL, Song et al. 2021b, thm. 1). It follows the protocol of
[`probgen.infer.objectives`][probgen.infer.objectives], so a score model trains through
[`fit`][probgen.infer.fit.fit] like any other.

Examples:
    >>> import torch
    >>> from probgen.infer.fit import fit
    >>> from probgen.models.diffusion.sde import VPSDE
    >>> from probgen.nn.time_embedding import TimeMLP
    >>> model = ScoreModel(TimeMLP(2, hidden=(16, 16)), VPSDE())
    >>> res = fit(model, None, torch.randn(64, 2), objective=ScoreMatchingSDE(), steps=5,
    ...           batch_size=32, progress=False)
    >>> model(torch.randn(3, 2), torch.full((3,), 0.5)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from probgen.errors import ProbgenError
from probgen.infer.objectives import Objective
from probgen.models.diffusion.sde import SDE, broadcast_time

__all__ = ["ScoreModel", "ScoreMatchingSDE"]


class ScoreModel(nn.Module):
    """``score(x, t) = -net(x, t) / s(t)`` for the kernel std ``s`` of ``sde``.

    Args:
        net: a noise-prediction network ``net(x, t) -> like x``, ``t`` of shape ``(N,)``.
        sde: the forward SDE.

    Examples:
        >>> from probgen.models.diffusion.sde import VPSDE
        >>> from probgen.nn.time_embedding import TimeMLP
        >>> m = ScoreModel(TimeMLP(2, hidden=(8,)), VPSDE())
        >>> m.eps(torch.zeros(4, 2), torch.rand(4)).shape
        torch.Size([4, 2])
    """

    def __init__(self, net: nn.Module, sde: SDE) -> None:
        super().__init__()
        if not isinstance(sde, SDE):
            raise ProbgenError(f"sde: expected an SDE, got {type(sde).__name__}")
        self.net, self.sde = net, sde

    def eps(self, x: Tensor, t: Tensor | float) -> Tensor:
        """The predicted noise ``z`` of ``x = a(t) x0 + s(t) z``."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.net(x, t)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """The score ``grad_x log p_t(x)``, shaped like ``x``."""
        return -self.eps(x, t) / self.sde.std(broadcast_time(t, x))


class ScoreMatchingSDE(Objective):
    """Continuous-time denoising score matching (Song et al. 2021, eq. 7), summed over the batch.

    Args:
        weighting: ``"sigma2"`` (``lambda = s(t)^2``, the noise-prediction loss) or
            ``"likelihood"`` (``lambda = g(t)^2``).

    Examples:
        >>> ScoreMatchingSDE("likelihood").config()
        {'name': 'dsm_sde', 'weighting': 'likelihood'}
    """

    name = "dsm_sde"
    #: a batch sum of per-example terms on a plain network: the engine scales a minibatch by
    #: N / B without tracing ``model``
    per_example_loss = True

    def __init__(self, weighting: Literal["sigma2", "likelihood"] = "sigma2") -> None:
        if weighting not in ("sigma2", "likelihood"):
            raise ProbgenError(f"weighting: 'sigma2' or 'likelihood', got {weighting!r}")
        self.weighting = weighting

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "weighting": self.weighting}

    def loss(self, model: Callable, guide: Callable | None, *batch: Tensor) -> Tensor:
        if not isinstance(model, ScoreModel):
            raise ProbgenError(f"model: the SDE score-matching loss takes a ScoreModel, got "
                               f"{type(model).__name__}")
        if guide is not None:
            raise ProbgenError("guide: score matching takes no guide (pass guide=None)")
        x0 = batch[0]
        sde = model.sde
        t = sde.eps + (sde.T - sde.eps) * torch.rand(x0.shape[0], device=x0.device,
                                                     dtype=x0.dtype)
        z = torch.randn_like(x0)
        xt = sde.perturb(x0, t, z)
        err = (model.eps(xt, t) - z).pow(2).flatten(1).sum(-1)  # = s^2 ||score + z / s||^2
        if self.weighting == "likelihood":
            err = err * (sde.diffusion(t) / sde.std(t)) ** 2
        return err.sum()
