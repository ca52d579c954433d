"""The flow-matching family (``probgen train flowmatch``): a velocity field trained by flow
matching, sampled and scored as a continuous normalizing flow.

``--data swiss_roll`` (or any 2-D density, or a local ``(N, D)`` array) or ``--data digits``.
The velocity network is a [`TimeMLP`][probgen.nn.time_embedding.TimeMLP]; ``method`` picks the
matcher of [`probgen.models.diffusion.flow_matching`][probgen.models.diffusion.flow_matching]
(``fm``: Lipman et al.'s Gaussian path, ``ot``: minibatch OT-CFM, ``rectified``: rectified
flow), and ``reflow=k`` then runs ``k`` reflow rounds, each a second ``fit`` (in the run
folder's ``reflow1/``, ``reflow2/``, ...) on ``reflow_pairs`` pairs ``(x0, ODE(x0))`` drawn from
the previous flow. Training goes through ``fit`` with
[`FlowMatchingLoss`][probgen.models.diffusion.flow_matching.FlowMatchingLoss].

Reported figures (``metrics.json``):

- vectors: ``test_nll``, the exact NLL in nats per point by the instantaneous change of
  variables (dopri5, the exact Jacobian trace in 2-D), and ``straightness`` (Liu et al. 2023);
- digits: pixels are dequantized, ``y = (x + u) / levels``, and modelled as ``2 y - 1``;
  ``test_nll`` is a *discrete* NLL bound in nats per image, ``test_bpd`` the same in bits per
  pixel, and ``fd``. With ``trace=exact`` the bound is importance-weighted over
  ``eval_samples`` noise draws (a true bound up to solver error, 64 backward passes per
  solver step); with the default ``trace=auto`` (Hutchinson above 2-D) it is the one-sample
  dequantization bound (Ho et al. 2019's ``K = 1``), estimated without bias by averaging
  ``eval_samples`` draws of ``u`` and of the trace probe (``test_nll_stderr`` its standard
  error) — an importance-weighted mix of noisy log-densities would not be a bound.

Examples:
    >>> from probgen.models.family import train
    >>> run = train("flowmatch", data="moons", fast=True, progress=False)
    >>> run.metrics["nll_kind"], run.sample(4).shape
    ('exact', torch.Size([4, 2]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from probgen.data.splits import DataSplits
from probgen.errors import ProbgenError
from probgen.models.config import ConfigError, RunConfig, option
from probgen.models.diffusion.flow_matching import (
    OTFM,
    FlowMatcher,
    FlowMatchingLoss,
    GaussianFM,
    RectifiedFlow,
    euler_sample,
    ode_sample,
    straightness,
    velocity_cnf,
)
from probgen.models.family import Family, Run, TrainContext
from probgen.models.flows.dequantize import DiscreteNLL, UniformDequantization
from probgen.nn.time_embedding import TimeMLP

__all__ = ["FlowMatchConfig", "FlowMatchRun", "Dequantize", "FAMILY"]


@dataclass
class FlowMatchConfig(RunConfig):
    """Settings of ``probgen train flowmatch`` (defaults for 2-D data; digits have a preset)."""

    steps: int = option(3000, "training steps of the first flow")
    batch_size: int = option(256, "examples per step")
    lr: float = option(2e-3, "learning rate")
    val_every: int = option(250, "steps between validations")
    patience: int | None = option(None, "validations without improvement before stopping")
    method: Literal["fm", "ot", "rectified"] = option("ot", "fm (Gaussian path), ot (OT-CFM), "
                                                      "rectified (rectified flow)")
    sigma_min: float = option(1e-4, "fm: the path's final std")
    sigma: float = option(0.0, "ot / rectified: noise around the straight path")
    hidden: tuple[int, ...] = option((256, 256, 256), "velocity MLP widths")
    time_scale: float = option(10.0, "t is multiplied by this before its sinusoidal code "
                                     "(small: a smooth field in t, few ODE steps)")
    reflow: int = option(0, "reflow rounds after the first flow")
    reflow_pairs: int = option(5000, "pairs (x0, ODE(x0)) per reflow round")
    reflow_steps: int = option(2000, "training steps per reflow round")
    sample_steps: int = option(0, "Euler steps of the sampler (0: adaptive dopri5)")
    rtol: float = option(1e-5, "ODE relative tolerance (sampling and likelihood)")
    atol: float = option(1e-5, "ODE absolute tolerance (sampling and likelihood)")
    eval_samples: int = option(4, "dequantization draws per test image (digits)")
    trace: Literal["auto", "exact", "hutchinson"] = option(
        "auto", "the likelihood's Jacobian trace: exact (D backward passes per solver step), "
                "hutchinson (one probe per example, unbiased), auto: exact up to 2-D")

    def validate(self) -> None:
        super().validate()
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"hidden: need positive widths, got {self.hidden}")
        for name in ("reflow", "sample_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("reflow_pairs", "reflow_steps", "eval_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.sigma_min < 1:
            raise ConfigError(f"sigma_min: must be in [0, 1), got {self.sigma_min}")
        if not self.sigma >= 0:
            raise ConfigError(f"sigma: must be >= 0, got {self.sigma}")
        for name in ("rtol", "atol"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")


_DIGITS: dict[str, Any] = {"steps": 8000, "batch_size": 128, "lr": 1e-3,
                           "hidden": (512, 512, 512), "reflow_pairs": 5000}


class Dequantize(nn.Module):
    """Integer levels ``x`` -> ``2 (x + u) / levels - 1`` with fresh ``u ~ U[0, 1)``: the
    training input of a flow on digits (the scaling adds ``D log 2`` to log-densities).

    Examples:
        >>> y = Dequantize(17)(torch.tensor([[0, 16]]))
        >>> bool((y >= -1).all() and (y < 1).all())
        True
    """

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.uniform = UniformDequantization(levels)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.uniform(x, 1)
        return 2 * y[0] - 1


def _matcher(config: FlowMatchConfig) -> FlowMatcher:
    if config.method == "fm":
        return GaussianFM(config.sigma_min)
    if config.method == "ot":
        return OTFM(config.sigma)
    return RectifiedFlow() if config.sigma == 0 else FlowMatcher(config.sigma)


class _Preprocessed(FlowMatchingLoss):
    """Flow matching on ``preprocess(x1)`` (digits: dequantized and scaled)."""

    def __init__(self, matcher: FlowMatcher, preprocess: nn.Module) -> None:
        super().__init__(matcher)
        self.preprocess = preprocess

    def loss(self, model: Any, guide: Any, *batch: Tensor) -> Tensor:
        return super().loss(model, guide, self.preprocess(batch[0]), *batch[1:])


class FlowMatchRun(Run):
    """A trained velocity field ``run.velocity`` and its CNF ``run.cnf`` (shared weights)."""

    family = "flowmatch"

    def __init__(self, velocity: nn.Module, config: FlowMatchConfig,
                 data: DataSplits | dict[str, Any], run_dir: str | Path | None = None) -> None:
        super().__init__(config, data, run_dir)
        self.velocity = velocity
        self.dim = int(math.prod(self.data_info["shape"]))
        self.levels = self.data_info.get("levels")
        self.exact_trace = (self.dim <= 2 if config.trace == "auto"
                            else config.trace == "exact")
        self.cnf = velocity_cnf(velocity, self.dim, exact_trace=self.exact_trace,
                                rtol=config.rtol, atol=config.atol)

    def modules(self) -> list[nn.Module]:
        return [self.velocity]

    def generate(self, x0: Tensor, steps: int | None = None) -> Tensor:
        """Model-space samples from noise ``x0``: ``steps`` Euler steps, or (``None`` /
        ``0``) the adaptive solver."""
        steps = self.config.sample_steps if steps is None else steps
        was = self.velocity.training
        self.velocity.eval()
        try:
            if steps:
                return euler_sample(self.velocity, x0, steps)
            return ode_sample(self.velocity, x0, rtol=self.config.rtol, atol=self.config.atol)
        finally:
            self.velocity.train(was)

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> Tensor:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ProbgenError(f"n: must be a positive integer, got {n!r}")
        device = next(self.velocity.parameters()).device
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            x = self.generate(torch.randn(n, self.dim, device=device)).cpu()
        if self.levels is None:
            return x
        y = (x + 1) / 2
        return (y * self.levels).floor().clamp(0, self.levels - 1).long()

    def log_prob(self, x: Tensor, batch_size: int = 1000) -> Tensor:
        """``log p(x)`` ``(N,)`` in model space, by the ODE (in batches): exact, or with
        ``trace=hutchinson`` (default above 2-D) an unbiased one-probe estimate."""
        was = self.velocity.training
        self.velocity.eval()
        try:
            with torch.no_grad():
                return torch.cat([self.cnf.log_prob(x[i:i + batch_size])
                                  for i in range(0, len(x), batch_size)])
        finally:
            self.velocity.train(was)

    def figures(self, progress: bool = False) -> dict[str, Any]:
        test = self.splits.test
        device = next(self.velocity.parameters()).device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            x0 = torch.randn(min(len(test), 2000), self.dim, device=device)
            out: dict[str, Any] = {"straightness": straightness(self.velocity.eval(), x0)}
            if self.levels is None:
                log_p = self.log_prob(test.float().to(device)).double().cpu()
                nll = float(-log_p.mean())
                return {**out, "test_nll": nll,
                        "test_nll_stderr": float(log_p.std() / math.sqrt(len(test))),
                        "test_bpd": nll / (self.dim * math.log(2)), "nll_kind": "exact"}
            k = self.config.eval_samples
            deq = UniformDequantization(self.levels)
            y, log_q = deq(test.to(device), k)  # (K, B, D), (K, B)
            log_p = self.log_prob(2 * y.reshape(-1, self.dim) - 1).reshape(k, -1)
            log_w = (log_p + self.dim * math.log(2) - log_q).double()
            if self.exact_trace:
                bound = torch.logsumexp(log_w, 0) - math.log(k)
                r = DiscreteNLL(float(-bound.mean()), self.dim, k, deq.name)
                kind = r.label
            else:
                bound = log_w.mean(0)  # per image: k draws of (u, probe) averaged
                r = DiscreteNLL(float(-bound.mean()), self.dim, 1, deq.name)
                kind = (f"NLL bound ({deq.name} dequantization, 1 sample; Hutchinson trace, "
                        f"mean of {k} draws)")
                out["test_nll_stderr"] = float(bound.std() / math.sqrt(len(bound)))
            return {**out, "test_nll": r.nats, "test_bpd": r.bits_per_dim, "nll_kind": kind}


def _build(config: FlowMatchConfig, data: DataSplits | dict[str, Any]) -> FlowMatchRun:
    info = data.info if isinstance(data, DataSplits) else data
    shape = tuple(info["shape"])
    if len(shape) != 1 or shape[0] < 1:
        raise ProbgenError(f"data: flowmatch takes vectors (N, D), got examples of shape {shape}")
    torch.manual_seed(config.seed)
    return FlowMatchRun(TimeMLP(shape[0], hidden=config.hidden, time_scale=config.time_scale),
                        config, data)


def _reflow_pairs(run: FlowMatchRun, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(x1, x0)``: noise ``x0`` and the current flow's (adaptive-solver) image ``x1``."""
    g = torch.Generator().manual_seed(seed)
    device = next(run.velocity.parameters()).device
    x0 = torch.randn(n, run.dim, generator=g).to(device)
    with torch.no_grad():
        x1 = torch.cat([run.generate(x0[i:i + 2000], steps=0) for i in range(0, n, 2000)])
    return x1, x0


def _fit(config: FlowMatchConfig, splits: DataSplits, ctx: TrainContext) -> FlowMatchRun:
    run = _build(config, splits)
    run.run_dir = ctx.out
    if splits.levels is None:
        objective: FlowMatchingLoss = FlowMatchingLoss(_matcher(config))
        train, val = splits.train.float(), splits.val.float()
    else:
        objective = _Preprocessed(_matcher(config), Dequantize(splits.levels))
        train, val = splits.train, splits.val
    picture = None
    if splits.levels is not None:
        picture = lambda n: run.sample(n).float() / (splits.levels - 1)  # noqa: E731
    common = dict(batch_size=config.batch_size, lr=config.lr, seed=config.seed,
                  log_every=config.val_every, sample_fn=picture)
    ctx.fit(run.velocity, None, train, objective=objective, steps=config.steps, val_data=val,
            val_every=config.val_every, patience=config.patience, **common)
    for k in range(1, config.reflow + 1):
        ctx.say(f"reflow {k}/{config.reflow}: {config.reflow_pairs} pairs from the ODE ...")
        pairs = _reflow_pairs(run, config.reflow_pairs, config.seed + 1000 * k)
        ctx.fit(run.velocity, None, pairs, objective=FlowMatchingLoss(RectifiedFlow()),
                steps=config.reflow_steps, out=f"reflow{k}", **common)
    if ctx.out is not None and run.dim == 2:
        from probgen.models.diffusion.plots import flow_path, plot_trajectories

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            x0 = torch.randn(300, 2, device=next(run.velocity.parameters()).device)
            paths = {config.method + (f" + {config.reflow} reflow" if config.reflow else ""):
                     flow_path(run.velocity.eval(), x0, steps=50)}
        plot_trajectories(paths, splits.test[:2000], ctx.out / "trajectories.png")
    return run


def _load(run_dir: Path, config: FlowMatchConfig, data: dict[str, Any]) -> FlowMatchRun:
    from probgen.infer import runs

    folder = run_dir / f"reflow{config.reflow}" if config.reflow else run_dir
    d = runs.require_files(folder, ("weights.safetensors",), "flowmatch")
    run = _build(config, data)
    weights = runs.load_tensors(d / "weights.safetensors")
    state = {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")}
    try:
        run.velocity.load_state_dict(state)
    except RuntimeError as exc:
        raise runs.RunFolderError(f"{d}/weights.safetensors does not match the velocity "
                                  f"network: {str(exc).splitlines()[0]}") from None
    run.velocity.eval()
    return run


FAMILY = Family(
    name="flowmatch",
    description="flow matching / rectified flow: an ODE from noise to data, exact likelihood",
    config=FlowMatchConfig,
    fit=_fit,
    load=_load,
    kinds=("vectors", "digits"),
    default_data="swiss_roll",
    data_names=("swiss_roll", "moons", "eight_gaussians", "checkerboard", "rings", "digits"),
    presets={"digits": _DIGITS},
    fast={"*": {"hidden": (32, 32), "steps": 40, "val_every": 20, "reflow_pairs": 256,
                "reflow_steps": 20, "rtol": 1e-3, "atol": 1e-3},
          "digits": {"eval_samples": 1, "sample_steps": 8, "batch_size": 64}},
)
