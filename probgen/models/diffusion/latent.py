"""Latent diffusion in miniature (Rombach et al. 2022): a DDPM on the latent codes of a
trained probgen [`VAE`][probgen.models.vae.vae.VAE], conditioned on a label embedding (the
stand-in for a text encoder), decoded back to images by the VAE's decoder.

The VAE is reused as it is (``train("vae", ...)`` or any ``VAE``): its encoder's posterior
means ``E_q[z | x]`` are the diffusion's data, standardised per dimension (the "scale factor"
of Stable Diffusion, sec. 4.3.2 there); the DDPM is a
[`TimeMLP`][probgen.nn.time_embedding.TimeMLP] with a label embedding, trained through
``fit`` with [`DiffusionELBO`][probgen.models.diffusion.elbo.DiffusionELBO] (``L_simple`` with
label dropout) and sampled with the shared samplers and classifier-free guidance.

Examples:
    >>> import torch
    >>> from probgen.models.vae.vae import VAE
    >>> vae = VAE((64,), latent_dim=4, hidden=(32,))
    >>> x, y = torch.randint(0, 17, (64, 64)), torch.arange(64) % 10
    >>> ldm = LatentDiffusion.fit(vae, x, y, steps=5, T=10, hidden=(16,))
    >>> ldm.sample(3, torch.tensor([1, 2, 3]), steps=5).shape
    torch.Size([3, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from probgen.errors import ProbgenError
from probgen.models.diffusion.ddpm import DDPM
from probgen.models.diffusion.elbo import DiffusionELBO
from probgen.models.diffusion.guidance import guided_denoiser
from probgen.models.diffusion.samplers import sample
from probgen.models.diffusion.schedules import NoiseSchedule
from probgen.nn.ema import EMA
from probgen.nn.time_embedding import TimeMLP

__all__ = ["LatentDiffusion"]


class LatentDiffusion(nn.Module):
    """A VAE (frozen) and a label-conditional DDPM on its standardised latent means.

    Args:
        vae: the trained autoencoder (encoder to ``z``, decoder back to ``x``).
        ddpm: the diffusion model on ``(latent_dim,)`` vectors (``num_classes > 0``).
        shift: per-dimension mean of the codes (``z_diffusion = (z - shift) / scale``).
        scale: per-dimension standard deviation of the codes.
    """

    def __init__(self, vae: nn.Module, ddpm: DDPM, shift: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.vae, self.ddpm = vae, ddpm
        self.register_buffer("shift", torch.as_tensor(shift).float())
        self.register_buffer("scale", torch.as_tensor(scale).float())

    @torch.no_grad()
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Standardised latent means of ``x`` (data scale), ``(N, latent_dim)``."""
        return (self.vae.encode(x, None) - self.shift) / self.scale

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Images (the decoder's mean, rounded to integer levels for discrete data)."""
        x = self.vae.decode(z * self.scale + self.shift, None)
        levels = getattr(self.vae, "num_levels", None)
        return x.round().clamp(0, levels - 1).long() if levels else x

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, guidance: float = 2.0,
               sampler: str = "ddim", steps: int | None = 50, eta: float = 0.0,
               seed: int | None = None) -> Tensor:
        """``n`` images for labels ``y`` (default ``0..K-1`` in turn) with classifier-free
        guidance ``guidance``: diffusion in latent space, then the VAE's decoder."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ProbgenError(f"n: must be a positive integer, got {n!r}")
        k = self.ddpm.num_classes
        y = torch.arange(n) % k if y is None else torch.as_tensor(y).long()
        if y.shape != (n,):
            raise ProbgenError(f"y: expected {n} labels, got shape {tuple(y.shape)}")
        self.eval()
        d = self.ddpm
        steps = None if steps is None else min(steps, d.T)
        z = sample(guided_denoiser(d, y, guidance), d.alpha_bars, (n, *d.data_shape),
                   sampler=sampler, steps=steps, eta=eta, seed=seed,
                   device=d.alpha_bars.device)
        return self.decode(z).cpu()

    @staticmethod
    def fit(vae: nn.Module, x: Tensor, y: Tensor, steps: int = 3000, T: int = 200,
            hidden: Sequence[int] = (256, 256, 256), schedule: str = "cosine",
            label_dropout: float = 0.1, lr: float = 1e-3, batch_size: int = 128,
            ema: float = 0.999, seed: int = 0, progress: bool = False,
            **fit_kwargs: Any) -> LatentDiffusion:
        """Encode ``x`` with ``vae``, then train a label-conditional DDPM on the codes through
        [`fit`][probgen.infer.fit.fit] (``fit_kwargs`` go to it: ``out``, ``val_data``, ...).
        """
        if len(x) != len(y):
            raise ProbgenError(f"y: {len(y)} labels for {len(x)} examples")
        vae.eval()
        for p in vae.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            z = vae.encode(x, None).float().cpu()
        shift, scale = z.mean(0), z.std(0).clamp(min=1e-3)
        k = int(y.max()) + 1
        torch.manual_seed(seed)
        net = TimeMLP(z.shape[1], hidden=hidden, num_classes=k)
        ddpm = DDPM(net, NoiseSchedule.make(schedule, T), (z.shape[1],), num_classes=k)
        avg = EMA(net, ema) if ema > 0 else None
        from probgen.infer.fit import fit

        fit(ddpm, None, ((z - shift) / scale, y.long()),
            objective=DiffusionELBO("simple", label_dropout, avg), steps=steps,
            batch_size=min(batch_size, len(z)), lr=lr, seed=seed, progress=progress,
            grad_clip=1.0, **fit_kwargs)
        if avg is not None:
            ddpm = DDPM(avg.net, ddpm.schedule, ddpm.data_shape, num_classes=k)
        return LatentDiffusion(vae, ddpm.eval(), shift, scale)
