"""Time conditioning shared by diffusion, score and flow-matching networks.

- [`sinusoidal_embedding`][probgen.nn.time_embedding.sinusoidal_embedding]: the transformer
  position code applied to a (continuous or integer) time ``t`` (Vaswani et al. 2017,
  sec. 3.5; used for the diffusion step by Ho et al. 2020, appendix B);
- [`TimeMLP`][probgen.nn.time_embedding.TimeMLP]: an MLP ``f(x, t[, y])`` for vectors, with the
  time (and an optional class label) embedded and added to every hidden layer: the 2-D score /
  noise / velocity network.

Examples:
    >>> import torch
    >>> sinusoidal_embedding(torch.tensor([0.0, 0.5]), 8).shape
    torch.Size([2, 8])
    >>> net = TimeMLP(2, hidden=(32, 32))
    >>> net(torch.randn(5, 2), torch.rand(5)).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from probgen.errors import ProbgenError

__all__ = ["sinusoidal_embedding", "TimeEmbedding", "TimeMLP"]


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """``(N,)`` times -> ``(N, dim)`` features ``[cos(t w_k), sin(t w_k)]`` with geometric
    frequencies ``w_k = max_period^(-k / (dim/2))``; ``dim`` must be even."""
    if dim < 2 or dim % 2:
        raise ProbgenError(f"dim: must be an even number >= 2, got {dim}")
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of ``t`` scaled by ``scale`` (e.g. 1000 for ``t`` in [0, 1]),
    then a two-layer MLP: ``(N,) -> (N, dim)``."""

    def __init__(self, dim: int, scale: float = 1.0, features: int | None = None) -> None:
        super().__init__()
        self.scale, self.features = float(scale), features or dim
        self.net = nn.Sequential(nn.Linear(self.features, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.net(sinusoidal_embedding(t * self.scale, self.features))


class TimeMLP(nn.Module):
    """``f(x, t[, y])`` for vectors ``x`` ``(N, D)``: output ``(N, out_dim or D)``.

    Args:
        dim: size of ``x``.
        hidden: hidden widths (SiLU activations).
        out_dim: output size (default ``dim``: a noise, score or velocity).
        time_scale: multiplies ``t`` before the sinusoidal code (1000 for ``t`` in [0, 1],
            1 for integer steps).
        num_classes: > 0 adds a label embedding (index ``num_classes`` is "no label", for
            classifier-free guidance).
        dropout: dropout probability after every hidden activation (0: none).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (128, 128, 128),
                 out_dim: int | None = None, time_scale: float = 1000.0,
                 num_classes: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        if dim < 1 or not hidden or min(hidden) < 1:
            raise ProbgenError(f"dim, hidden: need positive sizes, got {dim}, {tuple(hidden)}")
        if not 0.0 <= dropout < 1.0:
            raise ProbgenError(f"dropout: must be in [0, 1), got {dropout!r}")
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        width = hidden[0]
        self.time = TimeEmbedding(width, time_scale)
        self.label = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.num_classes = num_classes
        self.inp = nn.Linear(dim, width)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(hidden[:-1], hidden[1:]))
        self.cond = nn.ModuleList(nn.Linear(width, b) for b in hidden[1:])
        self.out = nn.Linear(hidden[-1], out_dim or dim)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        t = torch.as_tensor(t, device=x.device).float().expand(x.shape[0])
        c = self.time(t)
        if self.label is not None:
            if y is None:  # unconditional: the extra "no label" index
                y = torch.full((x.shape[0],), self.num_classes, device=x.device)
            c = c + self.label(y)
        elif y is not None:
            raise ProbgenError("y: this network has no label input (num_classes=0)")
        h = self.drop(torch.nn.functional.silu(self.inp(x) + c))
        for layer, cond in zip(self.layers, self.cond):
            h = self.drop(torch.nn.functional.silu(layer(h) + cond(c)))
        return self.out(h)
