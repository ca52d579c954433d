"""Diffusion models, discrete and continuous time (tutorials 08 and 09).

Discrete time (DDPM, DDIM, guidance, latent diffusion) and continuous time (score SDEs, the
probability-flow ODE, flow matching) share one package: schedules, noise / score networks and
samplers are written once here.
"""

__all__: list[str] = []
