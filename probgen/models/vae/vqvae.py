"""VQ-VAE (van den Oord et al. 2017): a discrete latent grid through a learned codebook.

The encoder maps an image to a grid of vectors ``z_e`` ``(B, D, h, w)``; each is replaced by
its nearest codebook entry ``e_k`` ([`VectorQuantizer`][probgen.models.vae.vqvae.VectorQuantizer]).
As a Bayesian network:

- guide ``q(codes | x)``: a point mass (``Delta``) on the nearest-code indices ``(B, h, w)``;
- model: ``codes ~ p(codes)``, ``x ~ p(x | e[codes])`` through the decoder.

With a point-mass guide the ELBO is ``log p(x | e[codes]) + log p(codes)``, and for the
*uniform* prior used during training ``log p(codes) = -h w log K`` is a constant — eq. (3)
of the paper. Gradients reach the encoder by the straight-through estimator
``z_q = z_e + sg(e - z_e)``; the codebook learns by exponential moving averages (``ema=True``,
the paper's appendix) or by the codebook loss ``||sg(z_e) - e||^2``; the commitment loss
``beta ||z_e - sg(e)||^2`` keeps the encoder near its codes. Both enter the model as
``pyro.factor`` terms, so ``fit(vqvae, None, x)`` trains it with the plain ELBO.

The model's own code prior is uniform, so [`VQVAE.sample`][probgen.models.vae.vqvae.VQVAE.sample]
gives poor samples. The learned prior — a gated PixelCNN (the ARM family) fitted to
``encode_indices(x)`` — lives in [`probgen.models.vae.vq_prior`][probgen.models.vae.vq_prior]
(``fit_code_prior``, ``sample_with_prior``, ``nll_bound``).

Examples:
    >>> import pyro
    >>> from probgen.infer.fit import fit
    >>> pyro.clear_param_store()
    >>> vq = VQVAE((1, 8, 8), num_codes=16, code_dim=4, hidden=16, downsample=1)
    >>> x = torch.rand(32, 1, 8, 8)
    >>> _ = fit(vq, None, x, steps=3, batch_size=16, progress=False)
    >>> vq.encode_indices(x[:2]).shape, vq.decode_indices(vq.encode_indices(x[:2])).shape
    (torch.Size([2, 4, 4]), torch.Size([2, 1, 8, 8]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from probgen.errors import ProbgenError
from probgen.models.vae.nets import likelihood_dist, to_unit

__all__ = ["VectorQuantizer", "VQVAE"]


class VectorQuantizer(nn.Module):
    """A codebook of ``num_codes`` vectors of size ``code_dim``, with EMA or gradient updates.

    With EMA, a code whose running count falls below ``dead_below`` (unused for a long
    while) restarts at a random encoder output of the current batch.

    ``forward(z_e)`` takes ``(B, D, h, w)`` and returns ``(z_q, indices, commitment,
    codebook_loss)``: the straight-through quantised grid, the code indices ``(B, h, w)``
    and the two per-example losses ``(B,)`` (the codebook loss is zero with EMA).

    Examples:
        >>> vq = VectorQuantizer(8, 2)
        >>> z_q, idx, commit, cb = vq(torch.randn(3, 2, 4, 4))
        >>> z_q.shape, idx.shape, commit.shape
        (torch.Size([3, 2, 4, 4]), torch.Size([3, 4, 4]), torch.Size([3]))
    """

    def __init__(self, num_codes: int, code_dim: int, *, ema: bool = True, decay: float = 0.99,
                 eps: float = 1e-5, dead_below: float = 0.05, seed: int = 0) -> None:
        super().__init__()
        if num_codes < 2 or code_dim < 1:
            raise ProbgenError(f"num_codes must be >= 2 and code_dim >= 1, got "
                               f"{num_codes!r}, {code_dim!r}")
        if not 0 < decay < 1:
            raise ProbgenError(f"decay must be in (0, 1), got {decay!r}")
        self.num_codes, self.code_dim, self.ema, self.decay, self.eps = (
            num_codes, code_dim, ema, decay, eps)
        self.dead_below = dead_below
        gen = torch.Generator().manual_seed(seed)
        init = torch.randn(num_codes, code_dim, generator=gen) / math.sqrt(code_dim)
        # codes start at random encoder outputs of the first training batch (fewer dead codes)
        self.register_buffer("initialised", torch.tensor(False))
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each row of ``flat`` ``(N, D)``."""
        d = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.T
             + self.codebook.pow(2).sum(1))
        return d.argmin(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors of ``indices`` ``(B, h, w)`` as a grid ``(B, D, h, w)``."""
        return self.codebook[indices].permute(0, 3, 1, 2)

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        pick = torch.randint(0, flat.shape[0], (self.num_codes,), device=flat.device)
        self.codebook.copy_(flat[pick])
        if self.ema:
            self.ema_sum.copy_(flat[pick])
            self.ema_count.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        onehot = F.one_hot(idx, self.num_codes).to(flat.dtype)  # (N, K)
        self.ema_count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
        n = self.ema_count.sum()
        count = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n  # Laplace
        self.codebook.copy_(self.ema_sum / count[:, None])
        dead = self.ema_count < self.dead_below  # unused for a long while: restart at data
        if bool(dead.any()):
            pick = torch.randint(0, flat.shape[0], (int(dead.sum()),), device=flat.device)
            self.codebook[dead] = flat[pick]
            self.ema_sum[dead] = flat[pick]
            self.ema_count[dead] = 1.0

    def forward(self, z_e: torch.Tensor):
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        learning = self.training and torch.is_grad_enabled()
        if learning and not bool(self.initialised):
            self._init_from(flat.detach())
        idx = self.nearest(flat.detach())
        if self.ema and learning:
            self._ema_update(flat.detach(), idx)
        idx = idx.reshape(b, h, w)
        e = self.lookup(idx)
        commitment = (z_e - e.detach()).pow(2).flatten(1).sum(1)
        codebook_loss = ((z_e.detach() - e).pow(2).flatten(1).sum(1) if not self.ema
                         else z_e.new_zeros(b))
        z_q = z_e + (e - z_e).detach()  # straight-through
        return z_q, idx, commitment, codebook_loss


def _down(c: int, width: int, code_dim: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1), nn.LeakyReLU()]
    for _ in range(n):
        layers += [nn.Conv2d(width, width, 4, stride=2, padding=1), nn.LeakyReLU()]
    layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(),
               nn.Conv2d(width, code_dim, 1)]
    return nn.Sequential(*layers)


def _up(code_dim: int, width: int, c_out: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(code_dim, width, 3, padding=1), nn.LeakyReLU()]
    for _ in range(n):
        layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.LeakyReLU()]
    layers += [nn.Conv2d(width, c_out, 3, padding=1)]
    return nn.Sequential(*layers)


class VQVAE(nn.Module):
    """A convolutional VQ-VAE compiled to a Pyro model / guide pair (see the module docs).

    Args:
        data_shape: ``(C, H, W)``, H and W divisible by ``2**downsample``.
        num_codes: codebook size K.
        code_dim: code vector size D.
        hidden: conv width; ``downsample``: number of stride-2 layers (grid = H / 2**n).
        likelihood: ``"bce"``, ``"mse"``, ``"l1"``, ``"gaussian"`` or ``"categorical"``.
        num_levels: levels of integer data (categorical decoder input scaling).
        beta: commitment weight (0.25 in the paper); ``ema``: EMA codebook updates.
    """

    def __init__(self, data_shape: Sequence[int] = (1, 8, 8), num_codes: int = 32,
                 code_dim: int = 16, *, hidden: int = 64, downsample: int = 1,
                 likelihood: str = "bce", num_levels: int | None = None, beta: float = 0.25,
                 ema: bool = True, scale: float = 0.1) -> None:
        super().__init__()
        shape = tuple(int(s) for s in data_shape)
        f = 2 ** downsample
        if len(shape) != 3 or shape[1] % f or shape[2] % f:
            raise ProbgenError(f"data_shape must be (C, H, W) with H, W divisible by {f}, "
                               f"got {data_shape!r}")
        if likelihood == "categorical" and not num_levels:
            raise ProbgenError("num_levels: a categorical decoder needs the number of levels")
        if not beta >= 0:
            raise ProbgenError(f"beta must be >= 0, got {beta!r}")
        self.data_shape, self.likelihood, self.num_levels, self.beta = (
            shape, likelihood, num_levels, beta)
        self.grid = (shape[1] // f, shape[2] // f)
        self.k = num_levels if likelihood == "categorical" else 1
        self.encoder = _down(shape[0], hidden, code_dim, downsample)
        self.quantizer = VectorQuantizer(num_codes, code_dim, ema=ema)
        self.decoder = _up(code_dim, hidden, shape[0] * self.k, downsample)
        self.register_buffer("log_scale", torch.tensor(math.log(scale)), persistent=False)
        self.data_plate = "data"
        self.objective = "elbo"

    # ------------------------------------------------------------------ networks
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(to_unit(x, self.num_levels).reshape(-1, *self.data_shape))

    def _px(self, z_q: torch.Tensor) -> dist.Distribution:
        out = self.decoder(z_q)
        c, h, w = self.data_shape
        if self.k > 1:
            out = out.reshape(-1, c, self.k, h, w).permute(0, 1, 3, 4, 2)
        return likelihood_dist(self.likelihood, out, self.log_scale.exp(), 3)

    def _code_prior(self, n: int) -> dist.Distribution:
        logits = self.log_scale.new_zeros(self.quantizer.num_codes)  # uniform, for now
        return dist.Categorical(logits=logits).expand([n, *self.grid]).to_event(2)

    # ------------------------------------------------------------------ Pyro programs
    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """``q(codes | x)``: a point mass on the nearest codes (updates the EMA codebook)."""
        z_e = self._encode(x)
        with pyro.plate(self.data_plate, x.shape[0]):
            _, idx, _, _ = self.quantizer(z_e)
            return pyro.sample("codes", dist.Delta(idx.float(), event_dim=2))

    def model(self, x: torch.Tensor | None = None, num_rows: int | None = None) -> torch.Tensor:
        """``codes ~ p(codes)``, ``x ~ p(x | e[codes])``, with the VQ losses as factors."""
        n = x.shape[0] if x is not None else int(num_rows or 1)
        with pyro.plate(self.data_plate, n):
            codes = pyro.sample("codes", self._code_prior(n)).long()
            if x is None:
                z_q = self.quantizer.lookup(codes)
            else:
                z_e = self._encode(x)
                e = self.quantizer.lookup(codes)
                z_q = z_e + (e - z_e).detach()  # straight-through
                commit = (z_e - e.detach()).pow(2).flatten(1).sum(1)
                pyro.factor("commitment", -self.beta * commit)
                if not self.quantizer.ema:
                    pyro.factor("codebook", -(z_e.detach() - e).pow(2).flatten(1).sum(1))
            return pyro.sample("x", self._px(z_q), obs=x)

    # ------------------------------------------------------------------ helpers
    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices ``(B, h, w)`` (``torch.long``) of images ``x``: the data of a prior."""
        z_e = self._encode(x)
        b, d, h, w = z_e.shape
        return self.quantizer.nearest(z_e.permute(0, 2, 3, 1).reshape(-1, d)).reshape(b, h, w)

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Mean images ``(B, C, H, W)`` of code grids ``(B, h, w)``."""
        indices = torch.as_tensor(indices).long()
        if indices.dim() != 3 or tuple(indices.shape[1:]) != self.grid:
            raise ProbgenError(f"indices must be (B, {self.grid[0]}, {self.grid[1]}), "
                               f"got {tuple(indices.shape)}")
        if bool((indices < 0).any()) or bool((indices >= self.quantizer.num_codes).any()):
            raise ProbgenError(f"indices must lie in [0, {self.quantizer.num_codes})")
        out = self.decoder(self.quantizer.lookup(indices))
        c, h, w = self.data_shape
        if self.k > 1:
            probs = out.reshape(-1, c, self.k, h, w).softmax(2)
            levels = torch.arange(self.k, dtype=out.dtype, device=out.device)
            return (probs * levels[:, None, None]).sum(2) / (self.k - 1)
        return out.sigmoid() if self.likelihood in ("bce", "bernoulli") else out

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean reconstructions through the codebook (in [0, 1] for categorical/BCE data)."""
        return self.decode_indices(self.encode_indices(x))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Mean images of ``n`` code grids from the uniform code prior (for the learned prior
        see [`sample_with_prior`][probgen.models.vae.vq_prior.sample_with_prior])."""
        return self.decode_indices(self._code_prior(n).sample())

    def codebook_usage(self, x: torch.Tensor) -> float:
        """Fraction of codes used by the images ``x`` (dead codes lower it)."""
        used = torch.unique(self.encode_indices(x)).numel()
        return used / self.quantizer.num_codes
