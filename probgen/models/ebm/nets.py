"""Networks of the EBM family: energies ``E(x) -> (N,)`` and noise-conditional scores.

- [`EnergyMLP`][probgen.models.ebm.nets.EnergyMLP]: a smooth (SiLU) MLP energy for vectors plus a
  weak confining term ``|x|^2 / (2 tau^2)`` so ``exp(-E)`` is integrable whatever the network;
- [`EnergyConv`][probgen.models.ebm.nets.EnergyConv]: a small conv-net energy for 8x8 digits;
- [`QuadraticEnergy`][probgen.models.ebm.nets.QuadraticEnergy]:
  ``E(x) = (x - mu)^T P (x - mu) / 2``, a Gaussian with learned mean and precision (the
  known-answer model of the tests);
- [`NoiseScoreNet`][probgen.models.ebm.nets.NoiseScoreNet]: ``s(x, sigma)`` for NCSN, a
  [`TimeMLP`][probgen.nn.time_embedding.TimeMLP] conditioned on ``log sigma`` with the output
  divided by ``sigma`` (Song & Ermon 2020, technique 3: ``|s| ~ 1 / sigma``).

Examples:
    >>> import torch
    >>> EnergyMLP(2, hidden=16)(torch.randn(5, 2)).shape
    torch.Size([5])
    >>> NoiseScoreNet(2, hidden=(16, 16))(torch.randn(5, 2), torch.full((5,), 0.1)).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from probgen.errors import ProbgenError
from probgen.nn.time_embedding import TimeMLP

__all__ = ["EnergyMLP", "EnergyConv", "QuadraticEnergy", "NoiseScoreNet"]


class EnergyMLP(nn.Module):
    """``E(x) = mlp(x) + |x|^2 / (2 tau^2)`` for ``x`` of shape ``(N, dim)``.

    Args:
        dim: data dimension.
        hidden: width of the hidden layers.
        depth: number of hidden layers (SiLU: twice differentiable, as score matching needs).
        tau: scale of the confining quadratic (large: barely felt where the data lie).
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, tau: float = 3.0) -> None:
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ProbgenError(f"dim, hidden, depth: must be >= 1, got {dim}, {hidden}, {depth}")
        if not (math.isfinite(tau) and tau > 0):
            raise ProbgenError(f"tau: must be a positive number, got {tau}")
        layers: list[nn.Module] = []
        d = dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.SiLU()]
            d = hidden
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)
        self.dim, self.tau = dim, float(tau)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1) + (x ** 2).sum(-1) / (2 * self.tau ** 2)


class EnergyConv(nn.Module):
    """A small conv-net energy for ``(N, 64)`` (or ``(N, 1, 8, 8)``) digits in [0, 1].

    Two 3x3 convolutions (SiLU) at 8x8 and 4x4, a linear head, plus the confining term of
    [`EnergyMLP`][probgen.models.ebm.nets.EnergyMLP] around the mid-grey image.
    """

    def __init__(self, channels: int = 32, tau: float = 3.0) -> None:
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(2 * c * 16, 1))
        self.dim, self.tau = 64, float(tau)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], 64)
        e = self.net(flat.reshape(-1, 1, 8, 8)).squeeze(-1)
        return e + ((flat - 0.5) ** 2).sum(-1) / (2 * self.tau ** 2)


class QuadraticEnergy(nn.Module):
    """``E(x) = (x - mu)^T P (x - mu) / 2`` with ``P = L L^T`` (``L`` lower triangular with a
    positive diagonal): the energy of ``N(mu, P^{-1})`` up to its constant.

    Examples:
        >>> q = QuadraticEnergy(2)
        >>> q(torch.tensor([[1.0, 0.0]])), q.precision()
        (tensor([0.5000], grad_fn=<MulBackward0>), tensor([[1., 0.],
                [0., 1.]], grad_fn=<MmBackward0>))
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(dim))
        self.raw = nn.Parameter(torch.zeros(dim, dim))  # strict lower part + log-diagonal
        self.dim = dim

    def cholesky(self) -> Tensor:
        return torch.tril(self.raw, -1) + torch.diag(torch.exp(torch.diagonal(self.raw)))

    def precision(self) -> Tensor:
        low = self.cholesky()
        return low @ low.T

    def forward(self, x: Tensor) -> Tensor:
        d = x - self.mu
        return 0.5 * ((d @ self.cholesky()) ** 2).sum(-1)


class NoiseScoreNet(nn.Module):
    """The noise-conditional score ``s(x, sigma) = TimeMLP(x, log sigma) / sigma`` for vectors
    ``(N, dim)`` (images are flattened and reshaped back).

    Args:
        dim: data dimension.
        hidden: hidden widths of the [`TimeMLP`][probgen.nn.time_embedding.TimeMLP].
        num_classes: > 0 adds a label input (index ``num_classes`` is "no label"), for
            classifier-free guidance.
    """

    def __init__(self, dim: int, hidden: tuple[int, ...] = (256, 256, 256),
                 num_classes: int = 0) -> None:
        super().__init__()
        self.net = TimeMLP(dim, hidden=hidden, time_scale=1.0, num_classes=num_classes)
        self.dim = dim

    def forward(self, x: Tensor, sigma: Tensor, y: Tensor | None = None) -> Tensor:
        shape = x.shape
        flat = x.reshape(shape[0], -1)
        sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype).expand(shape[0])
        out = self.net(flat, torch.log(sigma), y) / sigma[:, None]
        return out.reshape(shape)
