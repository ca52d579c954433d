"""The ``ebm`` family: an energy-based model trained by score matching, its variants,
contrastive divergence or NCE, through the one engine ([`fit`][probgen.infer.fit.fit]).

The model is the Pyro program of ``graphs/ebm.yaml``
([`EnergyProgram`][probgen.models.ebm.program.EnergyProgram]: one factor
``pyro.factor("energy", -E(x))``), with an [`EnergyMLP`][probgen.models.ebm.nets.EnergyMLP] for
vectors and an [`EnergyConv`][probgen.models.ebm.nets.EnergyConv] for digits. ``objective``
picks the training criterion:

- ``score_matching``: [`ScoreMatching`][probgen.models.ebm.score_matching.ScoreMatching]
  (Hyvarinen 2005, eq. 4);
- ``sliced``: [`SlicedScoreMatching`][probgen.models.ebm.score_matching.SlicedScoreMatching]
  (Song et al. 2019, eq. 8);
- ``dsm``: [`DenoisingScoreMatching`][probgen.models.ebm.score_matching.DenoisingScoreMatching]
  (Vincent 2011, eq. 11);
- ``ncsn``: [`NCSNLoss`][probgen.models.ebm.score_matching.NCSNLoss] on a score network
  (Song & Ermon 2019, eqs. 5-6), the digits default;
- ``cd``: [`ContrastiveDivergence`][probgen.models.ebm.contrastive.ContrastiveDivergence]
  (Du & Mordatch 2019);
- ``nce``: [`NCE`][probgen.models.ebm.contrastive.NCE] (Gutmann & Hyvarinen 2010), the default
  on 2-D data (test NLL 0.06-0.17 nats below the flow's on the swiss roll, seeds 0-2).

Energy models are sampled by parallel tempering with MALA moves by default (``sampler=pt``),
then a short small-step MALA phase; ``sampler=mala`` is the two-phase MALA chain.

``ncsn`` trains a noise-conditional score network
([`NoiseScoreNet`][probgen.models.ebm.nets.NoiseScoreNet]) and samples by annealed Langevin
dynamics; it is the digits default. On 2-D data the energy models report an exact test NLL
(normaliser by quadrature, ``nll_kind`` says so); on digits no likelihood is reported (an EBM's
normaliser in 64-D is intractable), only the shared ``fd``.

Examples:
    >>> from probgen.models.family import train
    >>> run = train("ebm", data="swiss_roll", fast=True, progress=False)
    >>> run.metrics["nll_kind"].startswith("exact"), run.sample(4).shape
    (True, torch.Size([4, 2]))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyro
import torch
from torch import nn

from probgen.data.splits import DataSplits
from probgen.errors import ProbgenError
from probgen.infer import runs
from probgen.infer.fit import cosine_schedule
from probgen.infer.objectives import Objective
from probgen.models.config import ConfigError, RunConfig, option
from probgen.models.ebm.contrastive import NCE, ContrastiveDivergence
from probgen.models.ebm.nets import EnergyConv, EnergyMLP, NoiseScoreNet
from probgen.models.ebm.program import EnergyProgram
from probgen.models.ebm.run import EBMRun
from probgen.models.ebm.score_matching import (
    DenoisingScoreMatching,
    NCSNLoss,
    ScoreMatching,
    SlicedScoreMatching,
)
from probgen.models.family import Family, TrainContext
from probgen.nn.ema import EMA

__all__ = ["EBMConfig", "build_net", "build_objective", "FAMILY"]

Objectives = Literal["score_matching", "sliced", "dsm", "ncsn", "cd", "nce"]


@dataclass
class EBMConfig(RunConfig):
    """Settings of ``probgen train ebm`` (defaults for 2-D data; digits have their preset)."""

    steps: int = option(4000, "training steps")
    batch_size: int = option(256, "examples per step")
    lr: float = option(1e-3, "learning rate")
    lr_decay: Literal["cosine", "none"] = option(
        "cosine", "learning-rate schedule: cosine from lr to lr / 50 over decay_steps, or "
                  "constant")
    decay_steps: int | None = option(None, "horizon of the cosine (none: steps; set it to "
                                           "resume a shorter run into a longer one exactly)")
    patience: int | None = option(None, "validations without improvement before stopping")
    objective: Objectives = option("nce", "training objective (see the module)")
    hidden: int = option(128, "width of the energy / score network")
    depth: int = option(3, "hidden layers of the energy MLP / score net")
    tau: float = option(3.0, "scale of the energy's confining term |x|^2 / (2 tau^2)")
    channels: int = option(32, "conv energy channels (digits)")
    sigma: float = option(0.1, "dsm: the noise level")
    num_projections: int = option(1, "sliced: random projections per example")
    sigma_max: float = option(1.0, "ncsn: largest noise level")
    sigma_min: float = option(0.01, "ncsn: smallest noise level")
    num_levels: int = option(10, "ncsn: geometric noise levels")
    ema: float = option(0.999, "ncsn: EMA decay of the sampled score-net weights (0: none)")
    steps_per_level: int = option(100, "ncsn sampling: Langevin steps per level (T)")
    anneal_step: float = option(2e-5, "ncsn sampling: eps of Song & Ermon Alg. 1")
    cd_steps: int = option(20, "cd: Langevin steps per training step")
    cd_step: float = option(0.005, "cd: Langevin step size")
    cd_alpha: float = option(0.1, "cd: energy-magnitude regulariser")
    buffer: int = option(10000, "cd: replay-buffer size")
    nce_nu: int = option(4, "nce: noise samples per data point")
    sampler: Literal["mala", "ula", "pt"] = option(
        "pt", "energy models: Langevin sampler (pt: parallel tempering with MALA moves; mala: "
              "the two-phase MALA chain; ula: unadjusted Langevin)")
    sample_steps: int = option(1000, "energy models: Langevin steps of the exploring phase")
    sample_step: float = option(0.05, "energy models: Langevin step size of the exploring phase "
                                      "(large: MALA's rare accepted jumps move chains between "
                                      "modes)")
    refine_steps: int = option(200, "energy models: Langevin steps of the refining phase "
                                    "(0: none)")
    refine_step: float = option(0.005, "energy models: Langevin step size of the refining phase")
    pt_levels: int = option(8, "pt: temperatures of the replica-exchange ladder")
    pt_beta_min: float = option(0.05, "pt: the hottest inverse temperature")
    pt_step: float = option(0.01, "pt: MALA step at beta = 1 (step / beta at beta)")
    pt_steps: int = option(1000, "pt: replica-exchange steps (then the refining phase)")
    grid: int = option(400, "2-D: quadrature cells per side for the normaliser")
    margin: float = option(1.0, "2-D: quadrature box = data box widened by this")

    def validate(self) -> None:
        super().validate()
        for name in ("hidden", "depth", "channels", "num_projections", "num_levels",
                     "steps_per_level", "cd_steps", "buffer", "nce_nu", "sample_steps", "pt_levels",
                     "pt_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("tau", "sigma", "sigma_max", "sigma_min", "anneal_step", "cd_step",
                     "sample_step", "refine_step", "margin", "pt_step", "pt_beta_min"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name}: must be a positive number, got {v}")
        if self.sigma_min > self.sigma_max:
            raise ConfigError(f"sigma_min: must be <= sigma_max ({self.sigma_max}), got "
                              f"{self.sigma_min}")
        if self.pt_beta_min > 1:
            raise ConfigError(f"pt_beta_min: must be <= 1, got {self.pt_beta_min}")
        if self.refine_steps < 0:
            raise ConfigError(f"refine_steps: must be >= 0, got {self.refine_steps}")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise ConfigError(f"decay_steps: must be >= 1 (or none), got {self.decay_steps}")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema: must be in [0, 1), got {self.ema}")
        if self.cd_alpha < 0:
            raise ConfigError(f"cd_alpha: must be >= 0, got {self.cd_alpha}")
        if self.grid < 4 or self.grid % 2:
            raise ConfigError(f"grid: must be an even number >= 4, got {self.grid}")


def build_net(config: EBMConfig, shape: tuple[int, ...], digits: bool) -> nn.Module:
    """The network of a run: a score net for ``ncsn``, else a conv (digits) or MLP energy."""
    dim = math.prod(shape)
    if config.objective == "ncsn":
        return NoiseScoreNet(dim, hidden=(config.hidden,) * config.depth)
    if digits:
        return EnergyConv(config.channels, config.tau)
    if len(shape) != 1:
        raise ProbgenError(f"data: the ebm family takes vectors (N, D) or digits, got examples "
                           f"of shape {shape}")
    return EnergyMLP(dim, config.hidden, config.depth, config.tau)


def build_objective(config: EBMConfig, train: torch.Tensor, net: nn.Module | None = None
                    ) -> Objective:
    """The objective named by ``config.objective``; CD and NCE take their box / noise from the
    training data (``train`` at model scale); ``ncsn`` keeps an EMA of ``net`` when
    ``config.ema > 0``."""
    name = config.objective
    if name == "score_matching":
        return ScoreMatching()
    if name == "sliced":
        return SlicedScoreMatching(config.num_projections)
    if name == "dsm":
        return DenoisingScoreMatching(config.sigma)
    if name == "ncsn":
        return NCSNLoss(sigma_max=config.sigma_max, sigma_min=config.sigma_min,
                        num_levels=config.num_levels,
                        ema_of=net if config.ema > 0 else None, ema_decay=config.ema or 0.999)
    flat = train.reshape(train.shape[0], -1)
    if name == "cd":
        lo, hi = flat.min(0).values, flat.max(0).values
        pad = 0.1 * (hi - lo) + 1e-3
        return ContrastiveDivergence(lo - pad, hi + pad, step_size=config.cd_step,
                                     num_steps=config.cd_steps, alpha=config.cd_alpha,
                                     capacity=config.buffer, seed=config.seed)
    return NCE(flat.mean(0), 1.5 * flat.std(0) + 1e-3, nu=config.nce_nu)


def _lr_schedule(config: EBMConfig) -> Callable[[int], float] | None:
    """``lr_decay=cosine``: from lr to lr / 50 over ``decay_steps`` (default: the run's steps).
    On the swiss roll it takes the last iterate's noise out of the normalised density: exact
    draws from NCE models of seeds 0-2 come to energy distance 1.2x the flow's, against up to
    3.8x at a constant rate (README, "Measured here")."""
    if config.lr_decay != "cosine":
        return None
    return cosine_schedule(config.decay_steps or config.steps, floor=0.02)


def _model_scale(splits: DataSplits, x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(x.shape[0], -1).float()
    return x / (splits.levels - 1) if splits.levels else x


def _fit(config: EBMConfig, splits: DataSplits, ctx: TrainContext) -> EBMRun:
    pyro.clear_param_store()
    torch.manual_seed(config.seed)
    digits = splits.levels is not None
    net = build_net(config, splits.shape, digits)
    train = _model_scale(splits, splits.train)
    val = _model_scale(splits, splits.val)
    objective = build_objective(config, train, net)
    model = net if config.objective == "ncsn" else EnergyProgram(net).model
    ema = getattr(objective, "ema", None)
    run = EBMRun(net, config, splits, ctx.out, sample_net=None if ema is None else ema.net)
    use_val = config.objective != "cd"  # CD's loss is not a criterion: it is ~0 at any fit
    ctx.fit(model, None, train, objective=objective, steps=config.steps,
            batch_size=config.batch_size, lr=config.lr, seed=config.seed,
            val_data=val if use_val else None, val_every=config.val_every,
            patience=config.patience if use_val else None, log_every=config.val_every,
            grad_clip=10.0, lr_schedule=_lr_schedule(config))
    net.eval()
    if ctx.out is not None and run.is_energy and run.dim == 2:
        from probgen.models.ebm.plots import plot_energy_2d

        plot_energy_2d(run, ctx.out / "energy.png")
    return run


def _load(run_dir: Path, config: EBMConfig, data: dict[str, Any]) -> EBMRun:
    d = runs.require_files(run_dir, ("weights.safetensors",), "ebm")
    net = build_net(config, tuple(data["shape"]), data.get("levels") is not None)
    weights = runs.load_tensors(d / "weights.safetensors")
    prefix = "model." if config.objective == "ncsn" else "model.energy."
    state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise runs.RunFolderError(f"{d}/weights.safetensors does not match the ebm network "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    net.eval()
    ema = None
    if config.objective == "ncsn" and config.ema > 0:
        ema = EMA(net, config.ema)
        state = {k[len("objective.ema."):]: v for k, v in weights.items()
                 if k.startswith("objective.ema.")}
        if state:  # a run saved without its average samples with the trained weights
            missing, unexpected = ema.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise runs.RunFolderError(f"{d}/weights.safetensors: the EMA does not match "
                                          f"the score network (missing {missing[:3]})")
            ema.net.eval()
        else:
            ema = None
    return EBMRun(net, config, data, run_dir, sample_net=None if ema is None else ema.net)


FAMILY = Family(
    name="ebm",
    description="energy-based model: p(x) ∝ exp(-E(x)), score matching / CD / NCE, Langevin",
    config=EBMConfig,
    fit=_fit,
    load=_load,
    kinds=("vectors", "digits"),
    default_data="swiss_roll",
    data_names=("swiss_roll", "moons", "eight_gaussians", "checkerboard", "rings", "digits"),
    presets={"digits": {"objective": "ncsn", "lr_decay": "none", "hidden": 256, "depth": 3,
                        "batch_size": 128,
                        "steps": 4000, "lr": 1e-3, "sigma_max": 3.0, "sigma_min": 0.02,
                        "num_levels": 10, "steps_per_level": 100, "anneal_step": 2e-5,
                        "sample_step": 1e-4, "refine_step": 1e-4}},
    fast={"*": {"steps": 40, "val_every": 20, "hidden": 32, "depth": 2, "grid": 100,
                "sample_steps": 50, "pt_steps": 30, "refine_steps": 10, "buffer": 500,
                "cd_steps": 5},
          "digits": {"steps": 30, "steps_per_level": 5, "num_levels": 4, "channels": 8}},
)
