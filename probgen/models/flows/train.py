"""Train a flow on digits or a 2-D density through [`probgen.infer.fit.fit`][probgen.infer.fit.fit];
read runs back.

The hook of ``probgen train flow --data digits|swissroll|moons|8gaussians|checkerboard|rings``.
There is no flow-specific loop: the flow becomes a Pyro model whose log joint is the
log-likelihood ([`flow_model`][probgen.models.flows.flows.flow_model]) or, for discrete digits, the
dequantization bound ([`dequantized_model`][probgen.models.flows.dequantize.dequantized_model]), and
``fit`` minimises it with the ``"likelihood"`` objective, stopping early on the validation loss.

The default model ([`coupling_flow`][probgen.models.flows.train.coupling_flow]) stacks
``num_layers`` x (actnorm, a fixed permutation, a rational-quadratic spline coupling; Durkan et
al. 2019). Its conditioner networks use dropout: with 1000 training images the flow overfits within
a few hundred steps otherwise. Dropout is active only while gradients are being taken (training
steps); validation, evaluation and sampling run the deterministic network.

Reported figures (``metrics.json``):

- digits: ``test_nll`` is the importance-weighted *discrete* NLL bound in nats per image
  over ``eval_samples`` dequantization noise draws (``nll_kind`` names it), ``test_bpd`` the
  same in bits per pixel, ``test_nll_1sample`` the one-sample bound;
- 2-D data: ``test_nll`` is the exact NLL in nats per point (a density, not a probability),
  plus ``test_mmd`` and ``test_energy`` between samples and test points.

Examples:
    >>> m = train_flow("moons", fast=True, progress=False)
    >>> m["nll_kind"], m["test_nll"] < 5.0
    ('exact', True)
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions.transforms as T
import torch
from torch import Tensor, nn

from probgen.errors import ProbgenError
from probgen.models.flows.dequantize import (
    UniformDequantization,
    VariationalDequantization,
    dequantized_model,
    discrete_nll,
)
from probgen.models.flows.flows import Flow, build_flow, flow_model
from probgen.nn.flow_layers import ActNorm, Permutation

__all__ = [
    "SplineConditioner",
    "coupling_flow",
    "DEFAULTS",
    "DATA_NAMES",
    "FlowRun",
    "train_flow",
    "evaluate_flow",
    "load_flow_run",
]

#: accepted ``data`` names -> probgen's density names (``"digits"`` is the image data)
DATA_NAMES: dict[str, str] = {
    "digits": "digits",
    "swissroll": "swiss_roll", "swiss_roll": "swiss_roll",
    "moons": "moons",
    "8gaussians": "eight_gaussians", "eight_gaussians": "eight_gaussians",
    "checkerboard": "checkerboard",
    "rings": "rings",
}

#: default settings per kind of data; every key can be overridden in `train_flow`
DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"num_layers": 6, "hidden": 128, "depth": 2, "bins": 8, "bound": 3.0,
               "dropout": 0.2, "permutation": "random", "dequantization": "uniform",
               "steps": 3000, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.0,
               "val_every": 50, "patience": 5, "eval_samples": 100},
    "2d": {"num_layers": 6, "hidden": 64, "depth": 2, "bins": 16, "bound": 4.0,
           "dropout": 0.0, "permutation": "reverse", "num_train": 5000, "num_val": 1000,
           "num_test": 2000, "steps": 3000, "batch_size": 256, "lr": 2e-3,
           "weight_decay": 0.0, "val_every": 100, "patience": 5},
}
_FAST: dict[str, dict[str, Any]] = {
    "digits": {"num_layers": 2, "hidden": 32, "steps": 30, "val_every": 10, "eval_samples": 4},
    "2d": {"num_layers": 2, "hidden": 16, "num_train": 500, "num_val": 200, "num_test": 300,
           "steps": 40, "val_every": 20},
}
_LEVELS = 17  # probgen's digits


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


# ----------------------------------------------------------------------------- runs


@dataclass
class FlowRun:
    """A trained flow and what it needs: the dequantizer (digits), the settings, the figures.

    ``sample(n)`` returns digits as 17-level integers ``(n, 64)`` or 2-D points ``(n, 2)``.
    """

    flow: Flow
    data: str
    config: dict[str, Any]
    dequantizer: UniformDequantization | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def sample(self, n: int = 64, seed: int | None = None) -> Tensor:
        """``n`` samples in eval mode (``seed`` leaves the global RNG untouched)."""
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            was = self.flow.training
            self.flow.eval()
            try:
                y = self.flow.sample((n,))
            finally:
                self.flow.train(was)
        if self.dequantizer is None:
            return y
        return (y * _LEVELS).floor().clamp(0, _LEVELS - 1).long()

    def sample_images(self, n: int = 64, seed: int | None = None) -> Tensor:
        """Samples as pictures: unit-range images for digits, points for 2-D data."""
        s = self.sample(n, seed)
        return s if self.dequantizer is None else s.float() / (_LEVELS - 1)

    def save_samples(self, path: str | Path, n: int = 64, seed: int = 0) -> Path:
        """A PNG grid of digit samples, or a scatter of 2-D samples over the test data."""
        from probgen.metrics.grids import save_grid, save_scatter

        if self.dequantizer is None:
            test = _splits(self.data, self.config)[2]
            return save_scatter(self.sample(n, seed), path, reference=test)
        return save_grid(self.sample_images(n, seed), path)

    def evaluate(self, seed: int = 0) -> dict[str, Any]:
        """Recompute the test figures (see
        [`evaluate_flow`][probgen.models.flows.train.evaluate_flow])."""
        return evaluate_flow(self, seed=seed)


def _settings(data: str, fast: bool, steps: int | None, overrides: dict[str, Any]
              ) -> tuple[str, dict[str, Any]]:
    if data not in DATA_NAMES:
        raise ProbgenError(f"data: unknown {data!r}; choose one of {sorted(DATA_NAMES)}")
    name = DATA_NAMES[data]
    kind = "digits" if name == "digits" else "2d"
    unknown = set(overrides) - set(DEFAULTS[kind])
    if unknown:
        raise ProbgenError(f"train_flow: unknown settings {sorted(unknown)} for {data!r}")
    cfg = {**DEFAULTS[kind], **(_FAST[kind] if fast else {}), **overrides}
    if steps is not None:
        cfg["steps"] = steps
    return name, cfg


def _splits(name: str, cfg: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
    if name == "digits":
        from probgen.data.digits import load_digits

        return tuple(load_digits(s, "levels") for s in ("train", "val", "test"))  # type: ignore
    from probgen.data.densities import load_density

    return (load_density(name, cfg["num_train"], seed=0),
            load_density(name, cfg["num_val"], seed=1),
            load_density(name, cfg["num_test"], seed=2))


def _build(name: str, cfg: dict[str, Any], seed: int
           ) -> tuple[Flow, UniformDequantization | None]:
    dim = 64 if name == "digits" else 2
    flow = coupling_flow(dim, cfg["num_layers"], cfg["hidden"], cfg["depth"], cfg["bins"],
                         cfg["bound"], cfg["dropout"], cfg["permutation"], seed)
    if name != "digits":
        return flow, None
    kind = cfg["dequantization"]
    if kind == "uniform":
        return flow, UniformDequantization(_LEVELS)
    if kind == "variational":
        flow_q = build_flow(dim, "affine_coupling", num_layers=4, hidden=(64,), context_dim=dim)
        return flow, VariationalDequantization(_LEVELS, flow_q)
    raise ProbgenError(f"dequantization must be 'uniform' or 'variational', got {kind!r}")


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


def evaluate_flow(run: FlowRun, seed: int = 0, eval_samples: int | None = None
                  ) -> dict[str, Any]:
    """Test figures of a trained flow, in eval mode.

    Digits: the importance-weighted discrete NLL bound (``eval_samples`` noise draws, default
    the run's setting) and the one-sample bound. 2-D data: the exact NLL, its standard error,
    and MMD / energy distance between ``num_test`` samples and the test points.

    Examples:
        >>> flow = coupling_flow(2, num_layers=1, hidden=8)
        >>> run = FlowRun(flow, "moons", {**DEFAULTS["2d"], "num_test": 50})
        >>> sorted(evaluate_flow(run))[:3]
        ['nll_kind', 'test_bpd', 'test_energy']
    """
    from probgen.metrics.distances import energy_distance, mmd

    test = _splits(run.data, run.config)[2]
    flow, deq = run.flow, run.dequantizer
    modes = [(m, m.training) for m in (flow, deq) if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            if deq is not None:
                k = eval_samples or run.config.get("eval_samples", 100)
                iw = discrete_nll(flow, deq, test, num_samples=k, batch_size=64)
                one = discrete_nll(flow, deq, test, num_samples=1)
                return {"test_nll": iw.nats, "test_bpd": iw.bits_per_dim, "nll_kind": iw.label,
                        "test_nll_1sample": one.nats, "nll_1sample_kind": one.label}
            log_p = flow.log_prob(test).double()
            nll = float(-log_p.mean())
            samples = flow.sample((test.shape[0],))
            return {"test_nll": nll, "test_nll_stderr": float(log_p.std() / math.sqrt(len(test))),
                    "test_bpd": nll / (test.shape[1] * math.log(2)), "nll_kind": "exact",
                    "test_mmd": mmd(samples, test), "test_energy": energy_distance(samples, test)}
    finally:
        for m, mode in modes:
            m.train(mode)


def train_flow(data: str = "digits", out: str | Path | None = None, steps: int | None = None,
               *, seed: int = 0, fast: bool = False, progress: bool = True,
               **overrides: Any) -> dict[str, Any]:
    """Train the default flow on ``data`` through ``fit`` (likelihood objective) and evaluate.

    Settings come from `DEFAULTS` (``"digits"`` or ``"2d"``), any overridden by
    keyword; ``fast`` shrinks the model and the step count (tests, tutorials in CI). Training
    stops when the validation loss has not improved for ``patience`` validations and the best
    weights are kept.

    With ``out`` the run folder holds the engine's files (``config.json`` with
    ``"family": "flow"``, ``weights.safetensors``, ``metrics.jsonl``), ``flow.json`` (what
    [`load_flow_run`][probgen.models.flows.train.load_flow_run] needs), ``samples.png`` (and
    ``density.png`` for 2-D data) and ``metrics.json``: the engine's figures plus the test figures
    of [`evaluate_flow`][probgen.models.flows.train.evaluate_flow]. Returns those metrics.

    Examples:
        >>> m = train_flow("digits", fast=True, progress=False)
        >>> m["nll_kind"]
        'NLL bound (uniform dequantization, importance-weighted, K=4)'
    """
    from probgen.infer import runs
    from probgen.infer.fit import fit

    name, cfg = _settings(data, fast, steps, overrides)
    train, val, _ = _splits(name, cfg)
    pyro.clear_param_store()
    torch.manual_seed(seed)
    flow, deq = _build(name, cfg, seed)
    run = FlowRun(flow, name, cfg, deq)
    program = _FlowProgram(flow, deq)
    wd, lr = cfg["weight_decay"], cfg["lr"]

    def adamw(params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(out) if out is not None else Path(tmp) / "run"
        res = fit(program.model, None, train, objective="likelihood", steps=cfg["steps"],
                  batch_size=cfg["batch_size"], lr=lr, optimizer=adamw if wd else "adam",
                  seed=seed, out=run_dir, progress=progress, val_data=val,
                  val_every=cfg["val_every"], patience=cfg["patience"],
                  log_every=cfg["val_every"], sample_fn=run.sample_images)
        best = run_dir / "best.safetensors"
        if not res.stopped_early and best.is_file():  # fit restores the best only on a stop
            _load_weights(program, runs.load_tensors(best))
        metrics = {**res.final, **evaluate_flow(run, seed)}
        if out is not None:
            runs.save_tensors(run_dir / "weights.safetensors", _weights(program))
            config = runs.read_json(run_dir / "config.json")
            runs.atomic_write_json(run_dir / "config.json", {**config, "family": "flow"})
            runs.atomic_write_json(run_dir / "flow.json", {"data": name, "seed": seed, **cfg})
            run.save_samples(run_dir / "samples.png", seed=seed)
            if deq is None:
                from probgen.metrics.plots import plot_density_2d

                plot_density_2d(flow, train[:2000], run_dir / "density.png", grid=120)
            runs.atomic_write_json(run_dir / "metrics.json", metrics)
    run.metrics = metrics
    return metrics


def _weights(program: _FlowProgram) -> dict[str, Tensor]:
    return {f"model.{k}": v for k, v in program.state_dict().items()}


def _load_weights(program: _FlowProgram, weights: dict[str, Tensor]) -> None:
    state = {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")}
    missing, unexpected = program.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ProbgenError(f"weights do not match the flow (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")


def load_flow_run(run_dir: str | Path) -> FlowRun:
    """Rebuild the trained flow of a folder written by
    [`train_flow`][probgen.models.flows.train.train_flow] (eval mode).

    Examples:
        >>> d = tempfile.mkdtemp() + "/run"
        >>> _ = train_flow("moons", out=d, fast=True, progress=False)
        >>> load_flow_run(d).sample(3).shape
        torch.Size([3, 2])
    """
    from probgen.infer import runs

    d = runs.require_files(run_dir, ("flow.json", "weights.safetensors"), "flow")
    cfg = runs.read_json(d / "flow.json")
    name, seed = cfg.pop("data"), cfg.pop("seed")
    flow, deq = _build(name, cfg, seed)
    run = FlowRun(flow, name, cfg, deq)
    _load_weights(_FlowProgram(flow, deq), runs.load_tensors(d / "weights.safetensors"))
    if (d / "metrics.json").is_file():
        run.metrics = runs.read_json(d / "metrics.json")
    flow.eval()
    if deq is not None:
        deq.eval()
    return run
