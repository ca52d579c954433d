"""Minibatch scaling: how [`fit`][probgen.infer.fit.fit] turns a minibatch loss into an estimate
of the loss on the whole data set.

A program run on ``B`` of ``N`` examples scores its data-plate sites on ``B`` examples only.
The unbiased estimate of the full-data objective multiplies them by ``N / B`` and keeps the
global sites (latents shared by every example, ``pyro.factor`` priors) once, which is what
``pyro.plate("data", N, subsample_size=B)`` does in Pyro (Hoffman et al. 2013, "Stochastic
variational inference", eq. 9). [`plan_scaling`][probgen.infer.scaling.plan_scaling] looks at
the program once and picks:

- ``"none"``: full batch (``B == N``), or the program subsamples itself (a plate given
  ``subsample=`` or ``subsample_size=``): left as it is;
- ``"loss"``: every site is inside the data plate (or there is no latent at all), so the
  estimate is the minibatch sum times ``N / B``; the engine multiplies the loss, no handler;
- ``"plate"``: global sites exist; the data plate's sites are scaled by ``N / B`` through
  [`DataPlateScale`][probgen.infer.scaling.DataPlateScale] around the model and the guide.

Examples:
    >>> import pyro, pyro.distributions as dist
    >>> def model(x):
    ...     loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
    >>> plan_scaling(model, None, (torch.zeros(10),), 100)
    Scaling(mode='plate', factor=10.0, plate='data')
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

from probgen.errors import ProbgenError

__all__ = ["Scaling", "DataPlateScale", "plan_scaling", "scaled_program"]


@dataclass(frozen=True)
class Scaling:
    """The minibatch scaling [`plan_scaling`][probgen.infer.scaling.plan_scaling] chose.

    ``factor`` is ``N / B``; ``mode`` says where it goes (module docstring); ``plate`` names
    the data plate in ``"plate"`` mode.

    Examples:
        >>> Scaling("loss", 4.0).loss_factor
        4.0
    """

    mode: str
    factor: float = 1.0
    plate: str | None = None

    @property
    def loss_factor(self) -> float:
        """What the engine multiplies the objective's loss by (``N / B`` in ``"loss"`` mode)."""
        return self.factor if self.mode == "loss" else 1.0


class DataPlateScale(Messenger):
    """Multiplies the scale of every sample site inside plate ``plate`` by ``factor``.

    Examples:
        >>> import pyro, pyro.distributions as dist, pyro.poutine as poutine
        >>> def model():
        ...     with pyro.plate("data", 2):
        ...         pyro.sample("x", dist.Normal(0.0, 1.0), obs=torch.zeros(2))
        >>> with DataPlateScale("data", 5.0):
        ...     tr = poutine.trace(model).get_trace()
        >>> tr.nodes["x"]["scale"]
        5.0
    """

    def __init__(self, plate: str, factor: float):
        super().__init__()
        self.plate = plate
        self.factor = factor

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and any(f.name == self.plate
                                           for f in msg["cond_indep_stack"]):
            msg["scale"] = msg["scale"] * self.factor


def scaled_program(program: Callable | None, scaling: Scaling) -> Callable | None:
    """``program`` run under [`DataPlateScale`][probgen.infer.scaling.DataPlateScale] in
    ``"plate"`` mode; ``program`` itself otherwise.

    Examples:
        >>> f = lambda: 1
        >>> scaled_program(f, Scaling("loss", 2.0)) is f
        True
    """
    if program is None or scaling.mode != "plate":
        return program
    plate, factor = scaling.plate, scaling.factor

    def scaled(*args: Any, **kwargs: Any) -> Any:
        with DataPlateScale(plate, factor):  # type: ignore[arg-type]
            return program(*args, **kwargs)

    scaled.__name__ = getattr(program, "__name__", "program")
    return scaled


class _Scan(Messenger):
    """Records each sample site's plates, observedness and scale; replays guide values."""

    def __init__(self, replay: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.replay = replay
        self.values: dict[str, torch.Tensor] = {}
        self.sites: list[tuple[str, bool, tuple]] = []

    def _pyro_sample(self, msg: dict) -> None:
        if self.replay is not None and not msg["is_observed"] and msg["name"] in self.replay:
            msg["value"] = self.replay[msg["name"]]
            msg["done"] = True

    def _pyro_post_sample(self, msg: dict) -> None:
        if type(msg["fn"]) is _Subsample:  # a plate's index draw, not a site of the program
            return
        if not msg["is_observed"]:
            self.values[msg["name"]] = msg["value"]
        self.sites.append((msg["name"], msg["is_observed"], tuple(msg["cond_indep_stack"])))


def _scan(model: Callable, guide: Callable | None, batch: tuple) -> list:
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # leaves the RNG as it was
        replay: dict[str, torch.Tensor] = {}
        sites = []
        if guide is not None:
            with _Scan() as g:
                guide(*batch)
            replay, sites = g.values, g.sites
        with _Scan(replay) as m:
            model(*batch)
    return sites + m.sites


def plan_scaling(model: Callable, guide: Callable | None, batch: tuple, n: int,
                 per_example: bool = False) -> Scaling:
    """Choose how to scale a minibatch of ``len(batch[0])`` of ``n`` examples (module docstring).

    ``per_example``: the objective declares its loss a batch sum of per-example terms
    (``per_example_loss = True``, e.g. flow matching on a plain network): ``"loss"`` mode,
    without running ``model`` as a Pyro program.

    Raises:
        ProbgenError: global latents but no single plate of the batch size to scale.

    Examples:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)
        >>> plan_scaling(model, None, (torch.zeros(10),), 40)
        Scaling(mode='loss', factor=4.0, plate='data')
    """
    b = len(batch[0])
    if b == n:
        return Scaling("none")
    if per_example:
        return Scaling("loss", n / b)
    try:
        sites = _scan(model, guide, batch)
    except Exception as exc:  # a program that only runs under its objective's handlers
        warnings.warn(f"minibatch scaling: the model/guide did not run on their own ({exc!r});"
                      f" the whole loss is scaled by N/B = {n / b:g}", stacklevel=3)
        return Scaling("loss", n / b)
    for _, _, frames in sites:
        if any(f.full_size not in (None, f.size) for f in frames):
            return Scaling("none")  # the program subsamples itself
    plates = sorted({f.name for _, _, frames in sites for f in frames
                     if f.dim is not None and f.size == b})
    factor = n / b
    outside = [(name, observed) for name, observed, frames in sites
               if not any(f.name in plates for f in frames)]
    latent_outside = [name for name, observed in outside if not observed]
    if not outside or (not plates and not latent_outside):
        return Scaling("loss", factor, plates[0] if len(plates) == 1 else None)
    if len(plates) != 1:
        shared = sorted({name for name, _ in outside})[:4]
        raise ProbgenError(
            f"batch_size: {b} of {n} examples per step, and sites {shared} "
            f"are shared by every example, but fit finds {len(plates)} plates of size {b} "
            f"({plates}) to scale by N/B; put the data in one pyro.plate('data', "
            "x.shape[0]), subsample it yourself (pyro.plate(..., subsample=...)), or use "
            "batch_size=None")
    return Scaling("plate", factor, plates[0])
