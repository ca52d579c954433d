"""A DDPM sampled through the VP SDE of its own schedule: marginals agree at the grid times,
and with the exact noise predictor of Gaussian data every sampler returns that Gaussian."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from probgen.errors import ProbgenError
from probgen.models.diffusion.ddpm import DDPM
from probgen.models.diffusion.ddpm_sde import ScheduleVPSDE, ddpm_score, ddpm_sde_sample
from probgen.models.diffusion.samplers import sample
from probgen.models.diffusion.schedules import NoiseSchedule

S2 = 0.25  # data N(0, S2 I)


class OracleEps(nn.Module):
    """E[z | x_t] for x0 ~ N(0, S2 I): sqrt(1 - ab) x_t / (ab S2 + 1 - ab), at t = step / T."""

    def __init__(self, sde: ScheduleVPSDE) -> None:
        super().__init__()
        self.sde = sde

    def forward(self, x, t, y=None):
        ab = (self.sde.mean_coeff(t) ** 2).to(x.dtype)[:, None]
        return (1 - ab).sqrt() * x / (ab * S2 + 1 - ab)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedule_sde_marginals_equal_the_chain_at_every_step(name):
    s = NoiseSchedule.make(name, 50)
    sde = ScheduleVPSDE(s)
    t = torch.arange(51, dtype=torch.float64) / 50
    ab = sde.mean_coeff(t) ** 2
    assert torch.allclose(ab, s.alpha_bars.double(), rtol=1e-5, atol=1e-12)
    assert torch.allclose(sde.std(t) ** 2, 1 - s.alpha_bars.double(), atol=1e-6)
    # d log alpha_bar / dt = -beta(t): a finite difference inside one segment
    u = torch.tensor([0.313], dtype=torch.float64)
    h = 1e-5
    fd = (torch.log(sde.mean_coeff(u + h) ** 2) - torch.log(sde.mean_coeff(u - h) ** 2)) / (2 * h)
    assert torch.allclose(-fd, sde.beta(u), rtol=1e-4)
    # on step i's segment beta(t) / T = -log(1 - beta_i) (= beta_i to first order)
    mid = (torch.arange(1, 51, dtype=torch.float64) - 0.5) / 50
    assert torch.allclose(sde.beta(mid) / 50, -torch.log1p(-s.betas.double()), rtol=1e-5)


@pytest.mark.parametrize("method", ["em", "pc", "ode"])
def test_oracle_ddpm_samples_its_gaussian_through_the_vp_sde(method):
    torch.manual_seed(0)
    schedule = NoiseSchedule.make("linear", 200)
    ddpm = DDPM(OracleEps(ScheduleVPSDE(schedule)), schedule, (2,))
    score = ddpm_score(ddpm)
    x = torch.randn(3, 2)
    t = torch.full((3,), 0.4)
    ab = ScheduleVPSDE(schedule).mean_coeff(t[:, None]) ** 2
    assert torch.allclose(score(x, t), -x / (ab * S2 + 1 - ab), atol=1e-5)  # closed form
    g = torch.Generator().manual_seed(1)
    samples = ddpm_sde_sample(ddpm, 4000, steps=200, method=method, generator=g)
    var = samples.var(0)
    assert samples.shape == (4000, 2)
    assert torch.allclose(var, torch.full((2,), S2), rtol=0.08), var
    assert samples.mean(0).abs().max() < 0.05
    ancestral = sample(ddpm.denoise, schedule.alpha_bars, (4000, 2), seed=2)
    assert torch.allclose(ancestral.var(0), torch.full((2,), S2), rtol=0.08)


def test_ddpm_sde_sample_rejects_bad_arguments():
    schedule = NoiseSchedule.make("linear", 10)
    ddpm = DDPM(OracleEps(ScheduleVPSDE(schedule)), schedule, (2,))
    with pytest.raises(ProbgenError, match="steps"):
        ddpm_sde_sample(ddpm, 4, steps=0, method="em")
    with pytest.raises(ProbgenError, match="n:"):
        ddpm_sde_sample(ddpm, 0)
    with pytest.raises(ProbgenError, match="schedule"):
        ScheduleVPSDE(torch.ones(3))
