"""An autoregressive VAE decoder: ``p(x | z) = prod_d p(x_d | x_<d, z)`` (PixelVAE-style).

A factorised decoder ([`Decoder`][probgen.models.vae.nets.Decoder]) must explain every
pixel correlation through ``z``: neighbouring strokes come out blurred and the ELBO pays
for it. This decoder keeps the graph ``z -> x`` of the VAE and makes ``x``'s CPD a small
*conditional* gated PixelCNN ([`GatedPixelCNN`][probgen.nn.pixelcnn.GatedPixelCNN]): an MLP maps
``z`` (and a label ``y``) to a feature map over the image, which conditions every gated
layer, while the causal convolutions see the pixels already drawn (Gulrajani et al. 2017,
"PixelVAE"; van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders").

The PixelCNN is kept *local* on purpose (few layers: each sees about ``layers`` rows above
and pixels to the left). Global structure, which the local net cannot reach, must come
through ``z``, so the latent code stays in use instead of collapsing to the prior (Chen et
al. 2017, "Variational Lossy Autoencoder"). The KL term of a trained model says how much
``z`` carries (``probgen eval`` reports it).

``log_prob`` is one network pass (teacher forcing); ``sample`` draws pixels in raster
order, one pass per pixel.

Examples:
    >>> dec = PixelDecoder((8, 8), latent_dim=4, num_levels=17, channels=8, hidden=(16,))
    >>> d = dec(torch.zeros(3, 4))
    >>> d.batch_shape, d.event_shape
    (torch.Size([3]), torch.Size([64]))
    >>> x = d.sample()
    >>> x.shape, d.log_prob(x).shape
    (torch.Size([3, 64]), torch.Size([3]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch import Tensor, nn
from torch.distributions import constraints

from probgen.errors import ProbgenError
from probgen.models.arm.arm import check_levels
from probgen.nn.pixelcnn import GatedPixelCNN

__all__ = ["PixelDecoder", "PixelDecoderDistribution", "LocalPixelNet"]


class LocalPixelNet(nn.Module):
    """A conditional autoregressive net whose context is an exact, small neighbourhood.

    Pixel ``(i, j)`` sees the ``left`` pixels before it in its row and, for each of the
    ``up`` rows above, the pixels in columns ``j - left .. j + left``, through one masked
    convolution (a PixelCNN type-A mask, van den Oord et al. 2016), plus the conditioning
    map at ``(i, j)``; 1x1 layers then turn that into logits. Nothing further away reaches
    it, so structure beyond the neighbourhood has to come from the conditioning (the VAE's
    ``z``). Interface of [`probgen.nn.made`][probgen.nn.made]: one-hot ``(B, D, K)`` -> logits
    ``(B, D, K)``, here with ``cond`` ``(B, cond_channels, H, W)``.

    Examples:
        >>> net = LocalPixelNet((4, 4), num_levels=3, cond_channels=2, channels=8, left=1)
        >>> x = F.one_hot(torch.randint(0, 3, (2, 16)), 3).float()
        >>> net(x, torch.zeros(2, 2, 4, 4)).shape
        torch.Size([2, 16, 3])
    """

    def __init__(self, shape: Sequence[int], num_levels: int, cond_channels: int,
                 channels: int = 64, left: int = 2, up: int = 0, layers: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        for name, v in (("left", left), ("up", up)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ProbgenError(f"{name} must be an integer >= 0, got {v!r}")
        if left == 0 and up == 0:
            raise ProbgenError("left, up: the context is empty (use a factorised decoder)")
        self.shape = (int(shape[0]), int(shape[1]))
        self.dims, self.num_levels = self.shape[0] * self.shape[1], int(num_levels)
        self.left, self.up = left, up
        self.context = nn.Conv2d(num_levels, channels, (up + 1, 2 * left + 1))
        mask = torch.zeros(up + 1, 2 * left + 1)
        mask[:up] = 1.0  # rows above: the whole window
        mask[up, :left] = 1.0  # own row: strictly left of the pixel (type A)
        self.register_buffer("mask", mask, persistent=False)
        self.cond = nn.Conv2d(cond_channels, channels, 1)
        body: list[nn.Module] = []
        for _ in range(layers):
            body += [nn.ReLU(), nn.Dropout(dropout), nn.Conv2d(channels, channels, 1)]
        self.body = nn.Sequential(*body, nn.ReLU(), nn.Conv2d(channels, num_levels, 1))

    def forward(self, onehot: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None:
            raise ProbgenError("cond: LocalPixelNet needs a conditioning map")
        b = onehot.shape[0]
        x = onehot.transpose(1, 2).reshape(b, self.num_levels, *self.shape)
        x = F.pad(x, (self.left, self.left, self.up, 0))
        h = F.conv2d(x, self.context.weight * self.mask, self.context.bias) + self.cond(cond)
        return self.body(h).reshape(b, self.num_levels, self.dims).transpose(1, 2)


class PixelDecoderDistribution(TorchDistribution):
    """``prod_d Categorical(x_d | net(x_<d, cond))`` over ``D = H * W`` integer pixels.

    Args:
        net: a conditional net, [`LocalPixelNet`][probgen.models.vae.pixel_decoder.LocalPixelNet] or
            [`GatedPixelCNN`][probgen.nn.pixelcnn.GatedPixelCNN] with ``cond_channels > 0``.
        cond: its conditioning maps, shape ``(*batch_shape, C, H, W)``.

    Examples:
        >>> from probgen.nn.pixelcnn import GatedPixelCNN
        >>> net = GatedPixelCNN((1, 2), num_levels=2, channels=4, layers=1, cond_channels=1)
        >>> d = PixelDecoderDistribution(net, torch.zeros(1, 1, 2))
        >>> grid = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])  # all four images
        >>> round(float(d.log_prob(grid).exp().sum().detach()), 5)
        1.0
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, net: nn.Module, cond: Tensor, validate_args: bool | None = None):
        self.net, self.cond = net, cond
        self.num_levels, self.dims = net.num_levels, net.dims
        super().__init__(cond.shape[:-3], torch.Size([self.dims]), validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.integer_interval(0, self.num_levels - 1), 1)

    def expand(self, batch_shape: Sequence[int], _instance=None) -> PixelDecoderDistribution:
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        return PixelDecoderDistribution(self.net, self.cond.expand(*batch_shape,
                                                                    *self.cond.shape[-3:]))

    def _flat_cond(self, batch: torch.Size) -> Tensor:
        cond = self.cond.expand(*batch, *self.cond.shape[-3:])
        return cond.reshape(-1, *cond.shape[-3:])

    def logits(self, value: Tensor) -> Tensor:
        """``(..., D, K)`` logits of every pixel given the pixels before it (teacher forcing)."""
        return self._logits(check_levels(value, self.num_levels, self.dims))

    def _logits(self, x: Tensor) -> Tensor:
        batch = torch.broadcast_shapes(x.shape[:-1], self.batch_shape)
        flat = x.expand(*batch, self.dims).reshape(-1, self.dims)
        out = self.net(F.one_hot(flat, self.num_levels).float(), self._flat_cond(batch))
        return out.reshape(*batch, self.dims, self.num_levels)

    def log_prob(self, value: Tensor) -> Tensor:
        x = check_levels(value, self.num_levels, self.dims)
        logp = torch.log_softmax(self._logits(x), -1)
        x = x.expand(*logp.shape[:-1])
        return logp.gather(-1, x.unsqueeze(-1)).squeeze(-1).sum(-1)

    @torch.no_grad()
    def _decode(self, sample_shape: torch.Size, greedy: bool) -> tuple[Tensor, Tensor]:
        batch = torch.Size(sample_shape) + self.batch_shape
        cond = self._flat_cond(batch)
        n, k = cond.shape[0], self.num_levels
        x = torch.zeros(n, self.dims, dtype=torch.long, device=cond.device)
        expected = torch.zeros(n, self.dims, device=cond.device)
        onehot = torch.zeros(n, self.dims, k, device=cond.device)  # zero rows: not drawn yet
        levels = torch.arange(k, dtype=expected.dtype, device=cond.device)
        for d in range(self.dims):
            logits = self.net(onehot, cond)[:, d]
            expected[:, d] = (logits.softmax(-1) * levels).sum(-1)
            if greedy:
                x[:, d] = logits.argmax(-1)
            else:
                x[:, d] = torch.distributions.Categorical(logits=logits).sample()
            onehot[:, d] = F.one_hot(x[:, d], k).float()
        return x.reshape(*batch, self.dims), expected.reshape(*batch, self.dims)

    def sample(self, sample_shape: torch.Size | Sequence[int] = ()) -> Tensor:
        """Ancestral sampling in raster order (``D`` network passes)."""
        return self._decode(torch.Size(sample_shape), greedy=False)[0]

    def greedy_mean(self) -> Tensor:
        """A deterministic picture of ``p(x | z)``: pixels decoded in raster order, each
        set to its most likely level; returns the expected level of each pixel along the
        way (the decoder's mean has no closed form)."""
        return self._decode(torch.Size(), greedy=True)[1]


class PixelDecoder(nn.Module):
    """``p(x | z[, y])`` as a conditional gated PixelCNN over ``(H, W)`` integer images.

    Args:
        shape: ``(H, W)`` of one image (flattened to ``D = H * W`` levels in the data).
        latent_dim: size of ``z``.
        num_levels: levels ``K`` per pixel (17 for digits).
        num_classes: > 0 conditions on a label ``y`` too (a conditional VAE).
        hidden: widths of the MLP from ``z`` to the conditioning maps.
        cond_channels: channels of those maps.
        channels: features of the PixelCNN stacks; ``layers`` its depth (its reach).
        dropout: dropout in the MLP and the gated layers.

    Examples:
        >>> dec = PixelDecoder((8, 8), latent_dim=2, num_levels=17, channels=8, hidden=(8,))
        >>> dec.mean(torch.zeros(2, 2)).shape
        torch.Size([2, 64])
    """

    def __init__(self, shape: Sequence[int], latent_dim: int, *, num_levels: int = 17,
                 num_classes: int = 0, hidden: Sequence[int] = (256, 256),
                 cond_channels: int = 16, channels: int = 32, layers: int = 2,
                 dropout: float = 0.0, net: str = "local", left: int = 2, up: int = 0) -> None:
        super().__init__()
        from probgen.models.vae.nets import make_mlp

        if len(shape) != 2:
            raise ProbgenError(f"shape: the pixel decoder needs (H, W), got {tuple(shape)}")
        if num_levels is None or num_levels < 2:
            raise ProbgenError(f"num_levels: the pixel decoder needs >= 2, got {num_levels!r}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.num_levels, self.num_classes = int(num_levels), int(num_classes)
        self.cond_channels = int(cond_channels)
        d_in = latent_dim + num_classes
        self.to_cond = make_mlp([d_in, *hidden, self.cond_channels * math.prod(self.shape)],
                                dropout)
        self.net: nn.Module
        if net == "local":
            self.net = LocalPixelNet(self.shape, self.num_levels, self.cond_channels, channels,
                                     left, up, layers, dropout)
        elif net == "gated":
            self.net = GatedPixelCNN(self.shape, self.num_levels, channels, layers,
                                     dropout=dropout, cond_channels=self.cond_channels)
        else:
            raise ProbgenError(f"net: unknown {net!r}; choose 'local' or 'gated'")

    def conditioning(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The maps ``(..., cond_channels, H, W)`` that ``z`` (and ``y``) give every layer."""
        batch = z.shape[:-1]
        h = z.reshape(-1, z.shape[-1])
        if self.num_classes:
            if y is None:
                raise ProbgenError("y: a conditional pixel decoder needs labels y")
            onehot = F.one_hot(torch.as_tensor(y, device=z.device).long(), self.num_classes)
            h = torch.cat([h, onehot.to(h).expand(*batch, self.num_classes)
                           .reshape(-1, self.num_classes)], -1)
        return self.to_cond(h).reshape(*batch, self.cond_channels, *self.shape)

    def forward(self, z: Tensor, y: Tensor | None = None) -> PixelDecoderDistribution:
        return PixelDecoderDistribution(self.net, self.conditioning(z, y))

    @torch.no_grad()
    def mean(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Expected levels along a greedy raster decode (see
        [`greedy_mean`][probgen.models.vae.pixel_decoder.PixelDecoderDistribution.greedy_mean]),
        shape ``(..., H * W)``."""
        return self(z, y).greedy_mean()
