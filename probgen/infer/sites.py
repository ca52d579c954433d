"""The engine's light Pyro handler and what is built on it: per-site log-densities.

[`SiteRecorder`][probgen.infer.sites.SiteRecorder] records the sampled values of a model or guide
and sums their scaled, masked ``log_prob`` as the program runs, instead of building a full Pyro
trace; the objectives of [`probgen.infer.objectives`][probgen.infer.objectives] and the estimators
of [`probgen.infer.likelihood`][probgen.infer.likelihood] run programs under it.
[`per_example_log_weights`][probgen.infer.sites.per_example_log_weights] gives the importance
weights ``log p(x_i, z_ik) - log q(z_ik | x_i)`` of IWAE and of the importance-sampled NLL.

Examples:
    >>> import pyro, pyro.distributions as dist
    >>> def guide(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("z", dist.Normal(0.0, 1.0))
    >>> run_guide(guide, (torch.zeros(3),), per_example="data", keep=False).latent_log_prob.shape
    torch.Size([3])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pyro.distributions import Independent
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

from probgen.errors import ProbgenError

__all__ = ["SiteRecorder", "per_example_log_weights", "run_guide", "run_model",
           "find_data_plate", "check_batch", "require_observed", "apply_mask"]


def apply_mask(lp: torch.Tensor, mask: Any) -> torch.Tensor:
    """``lp`` where ``mask`` holds, 0 elsewhere; ``mask`` is ``None``, a Python bool (as
    ``poutine.mask(mask=True)`` leaves it) or a bool tensor, as in Pyro's ``scale_and_mask``.

    Examples:
        >>> apply_mask(torch.ones(2), False)
        tensor([0., 0.])
    """
    if mask is None or mask is True:
        return lp
    if mask is False:
        return torch.zeros_like(lp)
    return torch.where(mask, lp, lp.new_zeros(()))


class SiteRecorder(Messenger):
    """A light Pyro handler: records sample sites and sums their scaled, masked log-densities.

    With ``replay`` (a dict name -> value) latent sites take their values from it. With
    ``per_example`` set to a plate name, log-densities are kept per example (summed over
    every other dimension) instead of summed to a scalar.

    Examples:
        >>> import pyro, pyro.distributions as dist
        >>> with SiteRecorder() as rec:
        ...     _ = pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> sorted(rec.values)
        ['z']
    """

    def __init__(
        self,
        replay: dict[str, torch.Tensor] | None = None,
        per_example: str | None = None,
        keep_fns: bool = False,
    ) -> None:
        super().__init__()
        self.replay = replay
        self.per_example = per_example
        self.keep_fns = keep_fns
        self.values: dict[str, torch.Tensor] = {}
        self.fns: dict[str, Any] = {}
        self.latent_log_prob: Any = 0.0  # unobserved sites
        self.observed_log_prob: Any = 0.0  # observed sites (and factors)
        self.latent_names: list[str] = []
        self.not_reparameterized: list[str] = []
        self.enumerated: list[str] = []  # latent sites marked infer={"enumerate": ...}
        self.plate_nesting = 0  # deepest plate dim of any site, latent or observed

    def _pyro_sample(self, msg: dict) -> None:
        if self.replay is not None and not msg["is_observed"]:
            value = self.replay.get(msg["name"])
            if value is not None:
                msg["value"] = value
                msg["done"] = True

    def _pyro_post_sample(self, msg: dict) -> None:
        fn = msg["fn"]
        name = msg["name"]
        if type(fn) is _Subsample:  # a plate's index draw: replayed, never scored
            self.values[name] = msg["value"]
            return
        observed = msg["is_observed"]
        if not observed:
            self.values[name] = msg["value"]
            self.latent_names.append(name)
            if not fn.has_rsample:
                self.not_reparameterized.append(name)
            if msg["infer"].get("enumerate"):
                self.enumerated.append(name)
        for f in msg["cond_indep_stack"]:
            if f.dim is not None and -f.dim > self.plate_nesting:
                self.plate_nesting = -f.dim
        if self.keep_fns:
            self.fns[name] = (fn, msg["scale"], msg["mask"], msg["cond_indep_stack"])
        mask = msg["mask"]
        if (type(fn) is Independent and self.per_example is None and mask is None
                and isinstance(msg["scale"], float)):  # all summed below: skip the event sum
            lp = fn.base_dist.log_prob(msg["value"])
        else:
            lp = fn.log_prob(msg["value"])
        if mask is not None:
            lp = apply_mask(lp, mask)
        scale = msg["scale"]
        if not (isinstance(scale, float) and scale == 1.0):
            lp = lp * scale
        lp = self._reduce(lp, msg) if self.per_example is not None else lp.sum()
        if observed:  # the first term is stored as is: no "0.0 + lp" node in the graph
            old = self.observed_log_prob
            self.observed_log_prob = lp if isinstance(old, float) and old == 0.0 else old + lp
        else:
            old = self.latent_log_prob
            self.latent_log_prob = lp if isinstance(old, float) and old == 0.0 else old + lp

    def _reduce(self, lp: torch.Tensor, msg: dict) -> torch.Tensor:
        for frame in msg["cond_indep_stack"]:
            if frame.name == self.per_example and frame.dim is not None:
                if lp.dim() < -frame.dim:
                    break
                lp = lp.movedim(frame.dim, 0)
                return lp.reshape(lp.shape[0], -1).sum(-1)
        raise ProbgenError(
            f"site {msg['name']!r} is not inside plate {self.per_example!r}; per-example "
            "estimates need every site inside the data plate (argument plate)"
        )


def check_batch(batch: tuple) -> None:
    if not batch:
        raise ProbgenError("batch: the objective needs at least one data tensor")


def run_guide(guide: Callable, batch: tuple, per_example: str | None, keep: bool) -> SiteRecorder:
    with SiteRecorder(per_example=per_example, keep_fns=keep) as rec:
        guide(*batch)
    return rec


def run_model(
    model: Callable, batch: tuple, replay: dict, per_example: str | None, keep: bool
) -> SiteRecorder:
    with SiteRecorder(replay=replay, per_example=per_example, keep_fns=keep) as rec:
        model(*batch)
    return rec


def per_example_log_weights(
    model: Callable,
    guide: Callable | None,
    batch: tuple,
    num_samples: int,
    plate: str | None = None,
) -> torch.Tensor:
    """``log p(x_i, z_ik) - log q(z_ik | x_i)`` per example ``i`` and guide sample ``k``.

    Returns a ``(num_samples, B)`` tensor. Without a guide, the model must be fully
    observed and the result is ``log p(x_i)`` repeated. ``plate`` names the data plate;
    by default it is found as the plate whose size equals the batch size.

    Examples:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)
        >>> per_example_log_weights(model, None, (torch.zeros(3),), 2).shape
        torch.Size([2, 3])
    """
    check_batch(batch)
    plate = plate or find_data_plate(model, guide, batch)
    rows = []
    for _ in range(num_samples if guide is not None else 1):
        if guide is not None:
            g = run_guide(guide, batch, plate, False)
            m = run_model(model, batch, g.values, plate, False)
            rows.append(m.latent_log_prob + m.observed_log_prob - g.latent_log_prob)
        else:
            m = run_model(model, batch, {}, plate, False)
            require_observed(m)
            rows.append(m.observed_log_prob)
    out = torch.stack([torch.as_tensor(r).expand(len(batch[0])) for r in rows])
    if guide is None and num_samples > 1:
        out = out.expand(num_samples, -1)
    return out


def find_data_plate(model: Callable, guide: Callable | None, batch: tuple) -> str:
    n = len(batch[0])
    found: set[str] = set()

    class _Plates(Messenger):
        def _pyro_post_sample(self, msg: dict) -> None:
            for f in msg["cond_indep_stack"]:
                if f.dim is not None and f.size == n:
                    found.add(f.name)

    with torch.no_grad(), torch.random.fork_rng(devices=[]), _Plates():  # leaves RNG as is
        if guide is not None:
            with SiteRecorder() as g:
                guide(*batch)
            replay = g.values
        else:
            replay = {}
        with SiteRecorder(replay=replay):
            model(*batch)
    if len(found) != 1:
        raise ProbgenError(
            f"plate: cannot tell the data plate (plates of size {n}: {sorted(found)}); "
            "pass plate='name'"
        )
    return found.pop()


def require_observed(m: SiteRecorder) -> None:
    if m.latent_names:
        raise ProbgenError(
            f"model has latent sites {m.latent_names}; the exact likelihood needs a fully "
            "observed model (use an ELBO or IWAE objective with a guide)"
        )
