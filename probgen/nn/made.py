"""MADE: a masked MLP whose output ``d`` depends only on inputs ``< d`` (Germain et al. 2015).

Every autoregressive network in [`probgen.nn`][probgen.nn] shares one interface: it maps one-hot
inputs ``(B, D, K)`` (``D`` variables with ``K`` levels each, in the autoregressive order)
to logits ``(B, D, K)`` of ``p(x_d | x_<d)``. An all-zero one-hot row means "unknown",
which is how input dropout and the first sampling step are expressed.

Masks (Germain et al. 2015, Sec. 4): inputs of variable ``d`` get degree ``d`` (1-based),
hidden units degrees in ``1 .. D-1``; a hidden unit of degree ``m`` sees inputs with degree
``<= m``, and output ``d`` sees hidden units with degree ``< d``. So ``x_1`` is predicted
from the output bias alone.

Examples:
    >>> import torch
    >>> net = MADE(dims=5, num_levels=3, hidden=(32, 32))
    >>> x = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 5)), 3).float()
    >>> net(x).shape
    torch.Size([2, 5, 3])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from probgen.errors import ProbgenError

__all__ = ["MaskedLinear", "MADE"]


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask ``(out, in)``.

    Examples:
        >>> layer = MaskedLinear(2, 2, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        >>> layer.weight.grad is None
        True
    """

    def __init__(self, in_features: int, out_features: int, mask: Tensor, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        if mask.shape != (out_features, in_features):
            raise ProbgenError(f"mask: shape {tuple(mask.shape)} != {(out_features, in_features)}")
        self.register_buffer("mask", mask.float())

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ProbgenError(f"{name} must be a positive integer, got {value!r}")
    return value


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation over ``dims`` ``num_levels``-way variables.

    Args:
        dims: number of variables ``D`` (in autoregressive order).
        num_levels: levels ``K`` per variable.
        hidden: widths of the hidden layers.
        dropout: dropout after each hidden activation.
        seed: seed of the (fixed) hidden-degree assignment.
    """

    def __init__(self, dims: int, num_levels: int, hidden: Sequence[int] = (512, 512),
                 dropout: float = 0.0, seed: int = 0):
        super().__init__()
        self.dims = _positive(dims, "dims")
        self.num_levels = _positive(num_levels, "num_levels")
        hidden = [_positive(h, "hidden width") for h in hidden]
        if not hidden:
            raise ProbgenError("hidden: MADE needs at least one hidden layer")
        gen = torch.Generator().manual_seed(seed)
        k = self.num_levels
        deg_in = torch.arange(1, dims + 1).repeat_interleave(k)  # (D*K,) variable-major
        degrees = [deg_in]
        for h in hidden:
            low = int(degrees[-1].min()) if len(degrees) > 1 else 1
            # cycling 1..D-1 keeps every degree represented; a random offset varies the masks
            start = int(torch.randint(0, max(dims - 1, 1), (1,), generator=gen))
            deg = (torch.arange(h) + start) % max(dims - 1, 1) + 1
            degrees.append(torch.clamp(deg, min=low))
        layers: list[nn.Module] = []
        for i, h in enumerate(hidden):
            mask = degrees[i + 1][:, None] >= degrees[i][None, :]
            layers += [MaskedLinear(len(degrees[i]), h, mask), nn.ReLU(), nn.Dropout(dropout)]
        deg_out = torch.arange(1, dims + 1).repeat_interleave(k)
        layers.append(MaskedLinear(hidden[-1], dims * k, deg_out[:, None] > degrees[-1][None, :]))
        self.net = nn.Sequential(*layers)

    def forward(self, onehot: Tensor) -> Tensor:
        """``(B, D, K)`` one-hot inputs -> ``(B, D, K)`` logits of ``p(x_d | x_<d)``."""
        b = onehot.shape[0]
        return self.net(onehot.reshape(b, -1)).reshape(b, self.dims, self.num_levels)
