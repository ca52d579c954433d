"""Diffusion models, discrete and continuous time (tutorials 08 and 09).

Discrete time (DDPM, DDIM, guidance, latent diffusion) and continuous time (score SDEs, the
probability-flow ODE, flow matching) share one package: schedules, noise / score networks and
samplers are written once here.

Discrete time: `schedules` (noise schedules, parameterisations), `ddpm` (the Pyro program),
`decoder` (the discrete decoder at t = 0), `elbo` (the ELBO term by term and the objective),
`samplers` (DDPM, DDIM), `guidance` (classifier-free and classifier guidance), `conditional`
(label agreement, guidance sweeps, the noise-aware classifier), `latent` (latent diffusion on
a probgen VAE), `pipeline` (a diffusers text-to-image pipeline taken apart), `plots`
(denoising trajectories), `train` (the ``diffusion`` family).
"""

__all__: list[str] = []
