"""The flow family (``probgen train flow``): a spline-coupling flow on digits or on vectors.

``--data digits``, a 2-D density (``swiss_roll``, ``moons``, ``eight_gaussians``,
``checkerboard``, ``rings``) or a local ``(N, D)`` array. There is no flow-specific loop:
the flow becomes a Pyro model whose log joint is the log-likelihood
([`flow_model`][probgen.models.flows.flows.flow_model]) or, for discrete digits, the dequantization
bound ([`dequantized_model`][probgen.models.flows.dequantize.dequantized_model]), and ``fit``
minimises it with the ``"likelihood"`` objective, stopping early on the validation loss.

The default model ([`coupling_flow`][probgen.models.flows.train.coupling_flow]) stacks
``num_layers`` x (actnorm, a fixed permutation, a rational-quadratic spline coupling; Durkan et
al. 2019). Its conditioner networks use dropout: with 1000 training images the flow overfits within
a few hundred steps otherwise. Dropout is active only while gradients are being taken (training
steps); validation, evaluation and sampling run the deterministic network.

Reported figures (``metrics.json``):

- digits: ``test_nll`` is the importance-weighted *discrete* NLL bound in nats per image
  over ``eval_samples`` dequantization noise draws (``nll_kind`` names it), ``test_bpd`` the
  same in bits per pixel, ``test_nll_1sample`` the one-sample bound; and ``fd``;
- vectors: ``test_nll`` is the exact NLL in nats per point (a density, not a probability),
  plus ``test_mmd`` and ``test_energy`` between samples and test points.

Examples:
    >>> from probgen.models.family import train
    >>> run = train("flow", data="moons", fast=True, progress=False)
    >>> run.metrics["nll_kind"], run.metrics["test_nll"] < 5.0
    ('exact', True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyro
import pyro.distributions.transforms as T
import torch
from torch import Tensor, nn

from probgen.data.splits import DataSplits
from probgen.errors import ProbgenError
from probgen.models.config import ConfigError, RunConfig, option
from probgen.models.family import Family, Run, TrainContext
from probgen.models.flows.dequantize import (
    UniformDequantization,
    VariationalDequantization,
    dequantized_model,
    discrete_nll,
)
from probgen.models.flows.flows import Flow, build_flow, flow_model
from probgen.nn.flow_layers import ActNorm, Permutation

__all__ = ["SplineConditioner", "coupling_flow", "FlowConfig", "FlowRun", "FAMILY"]


@dataclass
class FlowConfig(RunConfig):
    """Settings of ``probgen train flow`` (defaults for digits; vectors have their presets)."""

    steps: int = option(3000, "training steps (early stopping may end sooner)")
    batch_size: int = option(64, "examples per step")
    val_every: int = option(50, "steps between validations")
    patience: int | None = option(5, "validations without improvement before stopping")
    num_layers: int = option(6, "(actnorm, permutation, spline coupling) blocks")
    hidden: int = option(128, "conditioner width")
    depth: int = option(2, "conditioner depth")
    bins: int = option(8, "spline bins")
    bound: float = option(3.0, "the splines act on [-bound, bound]")
    dropout: float = option(0.2, "dropout in the conditioners")
    permutation: Literal["random", "reverse"] = option("random", "permutation between blocks")
    dequantization: Literal["uniform", "variational"] = option("uniform", "digits only")
    weight_decay: float = option(0.0, "AdamW weight decay (0: Adam)")
    eval_samples: int = option(100, "dequantization draws per test image (digits)")

    def validate(self) -> None:
        super().validate()
        for name in ("num_layers", "hidden", "depth", "bins", "eval_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ConfigError(f"bound: must be a positive number, got {self.bound}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay: must be >= 0, got {self.weight_decay}")


_VECTORS: dict[str, Any] = {"hidden": 64, "bins": 16, "bound": 4.0, "dropout": 0.0,
                            "permutation": "reverse", "batch_size": 256, "lr": 2e-3,
                            "val_every": 100}


class SplineConditioner(nn.Module):
    """MLP ``x1 -> (widths, heights, derivatives)`` of quadratic splines for ``out_dim`` values.

    Hidden layers are ReLU + dropout; the output layer starts at zero (uniform bins) with the
    knot derivatives' bias set so that Pyro's ``1e-3 + softplus(d)`` is 1: a new coupling
    layer is exactly the identity (a stable start for deep stacks).

    Examples:
        >>> net = SplineConditioner(3, out_dim=2, hidden=8, bins=4)
        >>> [t.shape[-1] for t in net(torch.zeros(5, 3))]
        [8, 8, 6]
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, depth: int = 2,
                 bins: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ProbgenError(f"dropout must be in [0, 1), got {dropout!r}")
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout)]
            d = hidden
        self.body = nn.Sequential(*layers)
        self.sizes = [out_dim * bins, out_dim * bins, out_dim * (bins - 1)]
        self.head = nn.Linear(d, sum(self.sizes))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        with torch.no_grad():
            self.head.bias[-self.sizes[-1]:] = math.log(math.expm1(1.0 - 1e-3))

    def forward(self, x1: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.head(self.body(x1)).split(self.sizes, dim=-1))


def coupling_flow(dim: int, num_layers: int = 6, hidden: int = 128, depth: int = 2,
                  bins: int = 8, bound: float = 3.0, dropout: float = 0.0,
                  permutation: str = "random", seed: int = 0) -> Flow:
    """``num_layers`` x (actnorm, permutation, spline coupling) over vectors of size ``dim``.

    Args:
        dim: data dimension (>= 2).
        num_layers: number of (actnorm, permutation, coupling) blocks.
        hidden: conditioner width.
        depth: conditioner depth.
        bins: spline bins.
        bound: the splines act on ``[-bound, bound]`` (identity outside).
        dropout: dropout rate inside the conditioners (a regulariser for small data sets).
        permutation: ``"random"`` (fixed random permutations drawn from ``seed``; mixes
            pixels far better than reversing) or ``"reverse"`` (the classic for 2-D).

    Examples:
        >>> flow = coupling_flow(4, num_layers=2, hidden=8)
        >>> flow.log_prob(torch.randn(3, 4)).shape
        torch.Size([3])
    """
    if not isinstance(dim, int) or dim < 2:
        raise ProbgenError(f"dim must be an int >= 2, got {dim!r}")
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ProbgenError(f"num_layers must be a positive int, got {num_layers!r}")
    if permutation not in ("random", "reverse"):
        raise ProbgenError(f"permutation must be 'random' or 'reverse', got {permutation!r}")
    gen = torch.Generator().manual_seed(seed)
    split = dim // 2
    scoring: list[nn.Module] = []  # data -> base order
    for i in range(num_layers):
        scoring.append(ActNorm(dim))
        if permutation == "random":
            scoring.append(Permutation(torch.randperm(dim, generator=gen)))
        elif i % 2:
            scoring.append(Permutation(torch.arange(dim - 1, -1, -1)))
        net = SplineConditioner(split, dim - split, hidden, depth, bins, dropout)
        scoring.append(T.SplineCoupling(dim, split, net, bins, bound, order="quadratic",
                                        identity=True))
    return Flow(scoring[::-1], event_shape=(dim,))


class FlowRun(Run):
    """A trained flow (``run.flow``) and, for digits, its dequantizer.

    ``sample(n)`` returns digits as integer levels ``(n, 64)`` or vectors ``(n, D)``.
    """

    family = "flow"

    def __init__(self, flow: Flow, dequantizer: UniformDequantization | None, config: FlowConfig,
                 data: DataSplits | dict[str, Any], run_dir: str | Path | None = None) -> None:
        super().__init__(config, data, run_dir)
        self.flow, self.dequantizer = flow, dequantizer

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.flow, self.dequantizer) if m is not None]

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """``n`` samples in eval mode (``seed`` leaves the global RNG untouched)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ProbgenError(f"n: must be a positive integer, got {n!r}")
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            was = self.flow.training
            self.flow.eval()
            try:
                y = self.flow.sample((n,)).cpu()
            finally:
                self.flow.train(was)
        if self.dequantizer is None:
            return y
        levels = self.dequantizer.levels
        return (y * levels).floor().clamp(0, levels - 1).long()

    def figures(self, progress: bool = False) -> dict[str, Any]:
        """Digits: the importance-weighted discrete NLL bound (``eval_samples`` noise draws)
        and the one-sample bound. Vectors: the exact NLL and its standard error."""
        test = self.splits.test
        flow, deq = self.flow, self.dequantizer
        device = next(flow.parameters()).device
        modes = [(m, m.training) for m in self.modules()]
        for m, _ in modes:
            m.eval()
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(self.config.seed)
                if deq is not None:
                    iw = discrete_nll(flow, deq, test.to(device),
                                      num_samples=self.config.eval_samples, batch_size=64)
                    one = discrete_nll(flow, deq, test.to(device), num_samples=1)
                    return {"test_nll": iw.nats, "test_bpd": iw.bits_per_dim,
                            "nll_kind": iw.label, "test_nll_1sample": one.nats,
                            "nll_1sample_kind": one.label}
                log_p = flow.log_prob(test.to(device)).double().cpu()
                nll = float(-log_p.mean())
                return {"test_nll": nll,
                        "test_nll_stderr": float(log_p.std() / math.sqrt(len(test))),
                        "test_bpd": nll / (test.shape[1] * math.log(2)), "nll_kind": "exact"}
        finally:
            for m, mode in modes:
                m.train(mode)


def _build(config: FlowConfig, shape: tuple[int, ...], levels: int | None, seed: int
           ) -> tuple[Flow, UniformDequantization | None]:
    if len(shape) != 1 or shape[0] < 2:
        raise ProbgenError(f"data: the flow family takes vectors (N, D) with D >= 2, got "
                           f"examples of shape {shape}")
    dim = shape[0]
    flow = coupling_flow(dim, config.num_layers, config.hidden, config.depth, config.bins,
                         config.bound, config.dropout, config.permutation, seed)
    if levels is None:
        return flow, None
    if config.dequantization == "uniform":
        return flow, UniformDequantization(levels)
    flow_q = build_flow(dim, "affine_coupling", num_layers=4, hidden=(64,), context_dim=dim)
    return flow, VariationalDequantization(levels, flow_q)


class _FlowProgram(nn.Module):
    """Holds the flow (and dequantizer) so that ``fit`` saves them, buffers included, under
    ``model.``; ``model(x)`` is the Pyro model. Dropout is on only for gradient steps."""

    def __init__(self, flow: Flow, dequantizer: UniformDequantization | None) -> None:
        super().__init__()
        self.flow, self.dequantizer = flow, dequantizer
        self._program = (flow_model(flow) if dequantizer is None
                         else dequantized_model(flow, dequantizer))

    def model(self, x: Tensor) -> None:
        self.train(torch.is_grad_enabled())  # validation (no grad) scores deterministically
        self._program(x)


def _fit(config: FlowConfig, splits: DataSplits, ctx: TrainContext) -> FlowRun:
    if splits.levels is None and config.dequantization != "uniform":
        raise ConfigError("dequantization: only for discrete data (digits); "
                          f"{splits.name} is continuous")
    pyro.clear_param_store()
    torch.manual_seed(config.seed)
    flow, deq = _build(config, splits.shape, splits.levels, config.seed)
    run = FlowRun(flow, deq, config, splits, ctx.out)
    program = _FlowProgram(flow, deq)
    wd, lr = config.weight_decay, config.lr

    def adamw(params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)

    ctx.fit(program.model, None, splits.train, objective="likelihood", steps=config.steps,
            batch_size=config.batch_size, lr=lr, optimizer=adamw if wd else "adam",
            seed=config.seed, val_data=splits.val, val_every=config.val_every,
            patience=config.patience, log_every=config.val_every,
            sample_fn=_picture_fn(run) if deq is not None else None)
    if ctx.out is not None and deq is None and splits.shape == (2,):
        from probgen.metrics.plots import plot_density_2d

        plot_density_2d(flow, splits.train[:2000], ctx.out / "density.png", grid=120)
    return run


def _picture_fn(run: FlowRun) -> Any:
    return lambda n: run.sample(n).float() / (run.dequantizer.levels - 1)


def _load(run_dir: Path, config: FlowConfig, data: dict[str, Any]) -> FlowRun:
    from probgen.infer import runs

    d = runs.require_files(run_dir, ("weights.safetensors",), "flow")
    flow, deq = _build(config, tuple(data["shape"]), data.get("levels"), config.seed)
    weights = runs.load_tensors(d / "weights.safetensors")
    state = {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")}
    missing, unexpected = _FlowProgram(flow, deq).load_state_dict(state, strict=False)
    if missing or unexpected:
        raise runs.RunFolderError(f"{d}/weights.safetensors does not match the flow "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    flow.eval()
    if deq is not None:
        deq.eval()
    return FlowRun(flow, deq, config, data, run_dir)


FAMILY = Family(
    name="flow",
    description="normalizing flow: x = f(z), exact likelihood by the change of variables",
    config=FlowConfig,
    fit=_fit,
    load=_load,
    kinds=("digits", "vectors"),
    default_data="digits",
    data_names=("digits", "swiss_roll", "moons", "eight_gaussians", "checkerboard", "rings"),
    presets={"vectors": _VECTORS},
    fast={"digits": {"num_layers": 2, "hidden": 32, "steps": 30, "val_every": 10,
                     "eval_samples": 4},
          "vectors": {"num_layers": 2, "hidden": 16, "steps": 40, "val_every": 20}},
)
