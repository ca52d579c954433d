"""Encoders and decoders of the VAE family: networks that *return distributions*.

An encoder maps data ``x`` (and optionally a label ``y``) to the guide's
``q(z | x) = Normal(loc, scale)`` over a ``latent_dim`` vector. A decoder maps ``z`` (and
``y``) to ``p(x | z)``, one of the reconstruction likelihoods of `LIKELIHOODS`:

- ``categorical``: integer levels 0..K-1, a Categorical per pixel (cross-entropy);
- ``bernoulli``: binary data, Bernoulli(logits) (BCE);
- ``bce``: values in [0, 1], Bernoulli(logits) without support check (BCE, soft targets);
- ``gaussian``: Normal(mean, learned per-pixel scale);
- ``mse``: Normal(mean, ``scale``), i.e. MSE / (2 s^2) plus a constant;
- ``l1``: Laplace(mean, ``scale``), i.e. L1 / s plus a constant.

For ``mse`` and ``l1`` the scale is either set (``scale=0.1``) or learned (``scale=None``: one
shared scalar trained with the rest, the calibrated decoder of Rybkin et al. 2021, "Simple and
Effective VAE Training with Calibrated Decoders"). A set scale fixes the weight of the
reconstruction against the KL once and for all (1 / (2 s^2) for MSE); a scale too large for the
data lets the KL win and the decoder ignore ``z`` (posterior collapse). A learned scale shrinks as
the reconstructions improve, which keeps raising the weight of the reconstruction, so ``z`` stays
in use; it is the default for images.

Both come as an MLP (``arch="mlp"``, flat data) and a small CNN (``arch="conv"``, images
``(C, H, W)`` with H, W divisible by 4). A conditional VAE passes ``num_classes``: the
one-hot label joins the encoder's features and the decoder's input.

Examples:
    >>> enc = Encoder((64,), latent_dim=8)
    >>> dec = Decoder((64,), latent_dim=8, likelihood="categorical", num_levels=17)
    >>> q = enc(torch.randint(0, 17, (5, 64)))
    >>> q.batch_shape, q.event_shape
    (torch.Size([5]), torch.Size([8]))
    >>> dec(q.rsample()).log_prob(torch.zeros(5, 64, dtype=torch.long)).shape
    torch.Size([5])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from probgen.errors import ProbgenError

__all__ = ["LIKELIHOODS", "Encoder", "Decoder", "make_mlp", "likelihood_dist", "to_unit"]

LIKELIHOODS = ("categorical", "bernoulli", "bce", "gaussian", "mse", "l1")


def make_mlp(sizes: Sequence[int], dropout: float = 0.0, final_act: bool = False) -> nn.Sequential:
    """Linear layers with LeakyReLU (and dropout) between them.

    Examples:
        >>> make_mlp([4, 8, 2])(torch.zeros(3, 4)).shape
        torch.Size([3, 2])
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_act:
            layers.append(nn.LeakyReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def to_unit(x: torch.Tensor, num_levels: int | None) -> torch.Tensor:
    """Network input: integer levels to ``[0, 1]`` floats; floats pass through.

    Examples:
        >>> to_unit(torch.tensor([0, 8, 16]), 17).tolist()
        [0.0, 0.5, 1.0]
    """
    if x.is_floating_point():
        return x
    return x.float() / (num_levels - 1 if num_levels else 1)


def _check_shape(data_shape: Sequence[int], arch: str,
                 hidden: Sequence[int] = (1,)) -> tuple[int, ...]:
    shape = tuple(int(s) for s in data_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ProbgenError(f"data_shape must be positive sizes, got {data_shape!r}")
    if arch not in ("mlp", "conv"):
        raise ProbgenError(f"arch: unknown {arch!r}; choose 'mlp' or 'conv'")
    if not hidden or min(hidden) < 1:
        raise ProbgenError(f"hidden: needs positive widths, got {tuple(hidden)!r}")
    f = 2 ** len(hidden)
    if arch == "conv" and (len(shape) != 3 or shape[1] % f or shape[2] % f):
        raise ProbgenError(f"data_shape: arch='conv' with {len(hidden)} stride-2 stages "
                           f"(hidden={tuple(hidden)}) needs (C, H, W) with H, W divisible by "
                           f"{f}, got {shape}")
    return shape


def _conv_encoder(c: int, widths: Sequence[int]) -> nn.Sequential:
    """One stride-2 4x4 convolution per width (each halves H and W), SiLU after each."""
    layers: list[nn.Module] = []
    for a, b in zip([c, *widths[:-1]], widths):
        layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.SiLU()]
    return nn.Sequential(*layers, nn.Flatten())


def _conv_decoder(d_in: int, c_out: int, widths: Sequence[int],
                  grid: tuple[int, int, int]) -> nn.Sequential:
    """The mirror of `_conv_encoder`: a linear map to the smallest grid, then one stride-2
    transposed convolution per width (each doubles H and W), the last one to the output
    channels. No layer runs at full resolution but the last: cheap on a CPU."""
    rev = list(reversed(widths))
    layers: list[nn.Module] = [nn.Linear(d_in, math.prod(grid)), nn.SiLU(),
                               nn.Unflatten(1, grid)]
    for a, b in zip(rev, [*rev[1:], c_out]):
        layers += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), nn.SiLU()]
    return nn.Sequential(*layers[:-1])


def _one_hot(y: torch.Tensor | None, num_classes: int, like: torch.Tensor) -> torch.Tensor | None:
    if num_classes == 0:
        return None
    if y is None:
        raise ProbgenError("y: a conditional VAE needs the label y")
    return F.one_hot(y.long(), num_classes).to(like.dtype)


class Encoder(nn.Module):
    """``q(z | x[, y]) = Normal(loc(x), scale(x))``, a diagonal Gaussian over ``latent_dim``.

    Args:
        data_shape: shape of one example, e.g. ``(64,)`` or ``(3, 32, 32)``.
        latent_dim: size of z.
        arch: ``"mlp"`` (input flattened) or ``"conv"`` (images).
        hidden: MLP hidden widths, or the conv width (first entry).
        num_levels: levels of integer data (scaled to [0, 1] on input).
        num_classes: > 0 for a conditional encoder taking a label ``y``.
        dropout: dropout after each hidden layer (a regulariser for small data sets).

    Examples:
        >>> Encoder((1, 8, 8), 4, arch="conv", hidden=(16,))(torch.rand(2, 1, 8, 8)).mean.shape
        torch.Size([2, 4])
    """

    def __init__(self, data_shape: Sequence[int], latent_dim: int, *, arch: str = "mlp",
                 hidden: Sequence[int] = (256, 256), num_levels: int | None = None,
                 num_classes: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.data_shape = _check_shape(data_shape, arch, hidden)
        if latent_dim < 1:
            raise ProbgenError(f"latent_dim must be >= 1, got {latent_dim!r}")
        self.latent_dim, self.num_levels, self.num_classes = latent_dim, num_levels, num_classes
        self.arch = arch
        d_in = math.prod(self.data_shape)
        if arch == "mlp":
            self.body = make_mlp([d_in, *hidden], dropout, final_act=True)
            feat = hidden[-1]
        else:
            c, h, w = self.data_shape
            self.body = _conv_encoder(c, hidden)
            f = 2 ** len(hidden)
            feat = hidden[-1] * (h // f) * (w // f)
        self.head = nn.Linear(feat + num_classes, 2 * latent_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        u = to_unit(x, self.num_levels)
        u = u.reshape(u.shape[0], -1) if self.arch == "mlp" else u.reshape(-1, *self.data_shape)
        h = self.body(u)
        onehot = _one_hot(y, self.num_classes, h)
        if onehot is not None:
            h = torch.cat([h, onehot], -1)
        loc, raw = self.head(h).chunk(2, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)


def likelihood_dist(likelihood: str, out: torch.Tensor, scale: torch.Tensor | float,
                    event_dims: int) -> dist.Distribution:
    """Turn a decoder's raw output into ``p(x | z)`` with ``event_dims`` event dimensions.

    ``out`` holds logits ``(..., *shape, K)`` for ``"categorical"``, else ``(..., *shape)``.

    Examples:
        >>> likelihood_dist("mse", torch.zeros(2, 3), 1.0, 1).log_prob(torch.zeros(2, 3)).shape
        torch.Size([2])
    """
    if likelihood == "categorical":
        d = dist.Categorical(logits=out)
    elif likelihood == "bernoulli":
        d = dist.Bernoulli(logits=out)
    elif likelihood == "bce":
        d = dist.Bernoulli(logits=out, validate_args=False)
    elif likelihood in ("gaussian", "mse"):
        d = dist.Normal(out, scale)
    elif likelihood == "l1":
        d = dist.Laplace(out, scale)
    else:
        raise ProbgenError(f"likelihood: unknown {likelihood!r}; choose one of {LIKELIHOODS}")
    return d.to_event(event_dims)


class Decoder(nn.Module):
    """``p(x | z[, y])``: a network producing the parameters of one of `LIKELIHOODS`.

    Args:
        data_shape: as for [`Encoder`][probgen.models.vae.nets.Encoder].
        latent_dim: as for [`Encoder`][probgen.models.vae.nets.Encoder].
        arch: as for [`Encoder`][probgen.models.vae.nets.Encoder].
        hidden: as for [`Encoder`][probgen.models.vae.nets.Encoder] (read in reverse for the MLP).
        num_classes: as for [`Encoder`][probgen.models.vae.nets.Encoder].
        dropout: as for [`Encoder`][probgen.models.vae.nets.Encoder].
        likelihood: the reconstruction distribution (module table).
        num_levels: K for ``"categorical"``.
        scale: the scale of ``"mse"`` / ``"l1"`` (``None``: one learned scalar, starting at
            0.1), the initial one of ``"gaussian"`` (learned per pixel).

    ``decoder.mean(z)`` gives the expected image (levels for categorical data).

    Examples:
        >>> dec = Decoder((3, 8, 8), 2, arch="conv", hidden=(8,), likelihood="bce")
        >>> dec.mean(torch.zeros(4, 2)).shape
        torch.Size([4, 3, 8, 8])
    """

    def __init__(self, data_shape: Sequence[int], latent_dim: int, *, arch: str = "mlp",
                 hidden: Sequence[int] = (256, 256), likelihood: str = "bernoulli",
                 num_levels: int | None = None, num_classes: int = 0, dropout: float = 0.0,
                 scale: float | None = 0.1) -> None:
        super().__init__()
        self.data_shape = _check_shape(data_shape, arch, hidden)
        if likelihood not in LIKELIHOODS:
            raise ProbgenError(f"likelihood: unknown {likelihood!r}; choose one of {LIKELIHOODS}")
        if likelihood == "categorical" and (num_levels is None or num_levels < 2):
            raise ProbgenError(f"num_levels: categorical needs >= 2 levels, got {num_levels!r}")
        if scale is not None and not scale > 0:
            raise ProbgenError(f"scale must be positive (or None: learned), got {scale!r}")
        self.likelihood, self.num_levels, self.num_classes = likelihood, num_levels, num_classes
        self.arch = arch
        self.k = num_levels if likelihood == "categorical" else 1
        d_out = math.prod(self.data_shape) * self.k
        d_in = latent_dim + num_classes
        if arch == "mlp":
            self.body = make_mlp([d_in, *reversed(hidden), d_out], dropout)
        else:
            c, h, w = self.data_shape
            f = 2 ** len(hidden)
            self.body = _conv_decoder(d_in, c * self.k, hidden, (hidden[-1], h // f, w // f))
        init = math.log(0.1 if scale is None else scale)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.full(self.data_shape, init))
        elif scale is None and likelihood in ("mse", "l1"):
            self.log_scale = nn.Parameter(torch.tensor(init))
        else:
            self.register_buffer("log_scale", torch.tensor(init), persistent=False)

    def raw(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Raw output ``(..., *data_shape[, K])`` for ``z`` of shape ``(..., latent_dim)``."""
        batch = z.shape[:-1]
        z = z.reshape(-1, z.shape[-1])
        if self.num_classes:
            onehot = _one_hot(y, self.num_classes, z).expand(*batch, self.num_classes)
            z = torch.cat([z, onehot.reshape(-1, self.num_classes)], -1)
        out = self.body(z)
        if self.arch == "conv" and self.k > 1:  # (B, C*K, H, W) -> (B, C, H, W, K)
            c, h, w = self.data_shape
            out = out.reshape(-1, c, self.k, h, w).permute(0, 1, 3, 4, 2)
        shape = (*self.data_shape, self.k) if self.k > 1 else self.data_shape
        return out.reshape(*batch, *shape)

    #: a switch the VAE's warm-up sets: while it returns True an ``l1`` decoder is a Gaussian
    warming: Callable[[], bool] | None = None

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        lik = self.likelihood
        if lik == "l1" and self.warming is not None and self.warming():
            lik = "mse"
        return likelihood_dist(lik, self.raw(z, y), self.log_scale.exp(), len(self.data_shape))

    def mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The mean image: expected level (categorical), probability, or location."""
        out = self.raw(z, y)
        if self.likelihood == "categorical":
            levels = torch.arange(self.k, dtype=out.dtype, device=out.device)
            return (out.softmax(-1) * levels).sum(-1)
        if self.likelihood in ("bernoulli", "bce"):
            return out.sigmoid()
        return out
