"""Diffusion models, discrete and continuous time (tutorials 08 and 09).

Discrete time (DDPM, DDIM, guidance, latent diffusion) and continuous time (score SDEs, the
probability-flow ODE, flow matching) share one package: schedules, noise / score networks and
samplers are written once here.

Discrete time: `schedules` (noise schedules, parameterisations), `ddpm` (the Pyro program),
`decoder` (the discrete decoder at t = 0), `elbo` (the ELBO term by term and the objective),
`samplers` (DDPM, DDIM), `guidance` (classifier-free and classifier guidance), `conditional`
(label agreement, guidance sweeps, the noise-aware classifier), `latent` (latent diffusion on
a probgen VAE), `pipeline` (a diffusers text-to-image pipeline taken apart), `denoising_plots`
(denoising trajectories), `train` (the ``diffusion`` family), `ddpm_sde` (a trained DDPM
sampled through the VP SDE of its own schedule).
"""

__all__: list[str] = []

# -- continuous time (score SDEs, the probability-flow ODE, flow matching) ---------------------
from probgen.models.diffusion.ddpm_sde import (  # noqa: E402
    ScheduleVPSDE,
    ddpm_score,
    ddpm_sde_sample,
)
from probgen.models.diffusion.flow_matching import (  # noqa: E402
    OTFM,
    FlowMatcher,
    FlowMatchingLoss,
    GaussianFM,
    RectifiedFlow,
    euler_sample,
    ode_sample,
    ot_coupling,
    straightness,
    velocity_cnf,
)
from probgen.models.diffusion.pf_ode import (  # noqa: E402
    ProbabilityFlow,
    pf_ode_log_prob,
    pf_ode_sample,
)
from probgen.models.diffusion.score_sde import ScoreMatchingSDE, ScoreModel  # noqa: E402
from probgen.models.diffusion.sde import (  # noqa: E402
    SDE,
    VESDE,
    VPSDE,
    OrnsteinUhlenbeck,
    SubVPSDE,
)
from probgen.models.diffusion.sde_sampling import (  # noqa: E402
    euler_maruyama,
    predictor_corrector_sample,
    reverse_sde_sample,
    torchsde_integrate,
)

__all__ += [
    "SDE", "VESDE", "VPSDE", "SubVPSDE", "OrnsteinUhlenbeck", "ScoreModel", "ScoreMatchingSDE",
    "euler_maruyama", "torchsde_integrate", "reverse_sde_sample", "predictor_corrector_sample",
    "ProbabilityFlow", "pf_ode_sample", "pf_ode_log_prob", "FlowMatcher", "GaussianFM", "OTFM",
    "RectifiedFlow", "FlowMatchingLoss", "ot_coupling", "euler_sample", "ode_sample",
    "straightness", "velocity_cnf", "ScheduleVPSDE", "ddpm_score", "ddpm_sde_sample",
]
