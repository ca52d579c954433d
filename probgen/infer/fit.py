"""``fit``: the one training loop every probgen family goes through.

``fit(model, guide, data, objective=...)`` draws minibatches, calls
``objective.loss(model, guide, *batch)``, steps one optimizer over every parameter it finds
(``nn.Module`` / ``PyroModule`` parameters, ``pyro.param`` / ``pyro.module`` sites found by
tracing one step, the objective's own), and optionally writes a run folder that resumes
bit for bit (see [`probgen.infer.runs`][probgen.infer.runs]).

A *family object* (e.g. a VAE) passed as ``model`` with ``guide=None`` trains through the
same call when it has ``model`` and ``guide`` methods; its ``objective`` attribute, a
``data_shape`` attribute (checked against the data) and a ``sample(n)`` method (for PNG
grids) are used when present.

Examples:
    >>> import torch, pyro, pyro.distributions as dist
    >>> def model(x):
    ...     loc = pyro.param("loc", torch.tensor(0.0))
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
    >>> pyro.clear_param_store()
    >>> res = fit(model, None, torch.full((64,), 2.0), steps=300, batch_size=16, lr=0.05,
    ...           progress=False)
    >>> round(pyro.param("loc").item(), 1)
    2.0
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.poutine as poutine
import torch

from probgen.errors import ProbgenError
from probgen.infer import distributed, runs
from probgen.infer.batches import BatchSampler, as_tensors, num_examples, take
from probgen.infer.objectives import Likelihood, Objective, resolve_objective
from probgen.infer.precision import Precision, compile_networks
from probgen.infer.scaling import Scaling, plan_scaling, scaled_program
from probgen.infer.streaming import make_batches

__all__ = ["fit", "FitResult", "NonFiniteLossError", "as_tensors", "BatchSampler",
           "cosine_schedule"]


class NonFiniteLossError(ProbgenError, FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint (if any) is kept."""


@dataclass
class FitResult:
    """What [`fit`][probgen.infer.fit.fit] returns: the history, final figures and the run
    folder."""

    steps: int
    history: list[dict]
    final: dict[str, Any]
    out: Path | None
    stopped_early: bool = False
    params: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


# ----------------------------------------------------------------------------- parameters


def _module_of(fn: Any) -> torch.nn.Module | None:
    if isinstance(fn, torch.nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


class _Params:
    """Every trainable tensor of a run, with stable names for saving."""

    def __init__(self, modules: dict[str, torch.nn.Module], pyro_params: dict[str, torch.Tensor],
                 extra: list[torch.Tensor]):
        self.modules = modules
        seen: set[int] = set()
        self.trainable: list[torch.Tensor] = []
        for m in modules.values():
            for p in m.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    self.trainable.append(p)
        self.pyro = {}
        for name, p in pyro_params.items():
            if id(p) not in seen:
                seen.add(id(p))
                self.pyro[name] = p
                self.trainable.append(p)
        self.extra = {}
        for i, p in enumerate(extra):
            if id(p) not in seen:
                seen.add(id(p))
                self.extra[f"objective.param{i}"] = p
                self.trainable.append(p)

    def state(self) -> dict[str, torch.Tensor]:
        out = {f"{role}.{k}": v
               for role, m in self.modules.items() for k, v in m.state_dict().items()}
        out.update({f"pyro.{k}": v for k, v in self.pyro.items()})
        out.update(self.extra)
        return out

    def load(self, weights: dict[str, torch.Tensor]) -> None:
        expected = set(self.state())
        if set(weights) != expected:
            missing = sorted(expected - set(weights))[:5]
            unknown = sorted(set(weights) - expected)[:5]
            raise runs.RunFolderError(
                f"checkpoint weights do not match this model (missing {missing}, unknown {unknown})"
            )
        for role, m in self.modules.items():
            p = f"{role}."
            m.load_state_dict({k[len(p):]: v for k, v in weights.items() if k.startswith(p)})
        with torch.no_grad():
            for k, v in {**{f"pyro.{n}": t for n, t in self.pyro.items()}, **self.extra}.items():
                v.copy_(weights[k])


def _discover(objective: Objective, model: Callable, guide: Callable | None, batch: tuple,
              modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """Run one loss evaluation to create and collect Pyro params; leave no other trace."""
    rng_t, rng_j = runs.rng_state()
    buffers = [(b, b.detach().clone()) for m in modules.values() for b in m.buffers()]
    with torch.no_grad(), poutine.trace(param_only=True) as tr:
        objective.loss(model, guide, *batch)
    with torch.no_grad():
        for b, saved in buffers:
            b.copy_(saved)
    runs.set_rng_state(rng_t, rng_j)
    return {name: site["value"].unconstrained() for name, site in tr.trace.nodes.items()
            if site["type"] == "param"}


def _make_optimizer(optimizer: str | Callable, params: list[torch.Tensor], lr: float):
    if callable(optimizer):
        return optimizer(params)
    table = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    if optimizer not in table:
        raise ProbgenError(
            f"optimizer: unknown {optimizer!r}; choose {sorted(table)} or a callable")
    if not params:
        raise ProbgenError("model/guide: no trainable parameters were found")
    kwargs: dict[str, Any] = {"lr": lr}
    if optimizer != "sgd":
        # one fused kernel for the whole update (CPU and CUDA): several times faster than
        # the default per-tensor loop, same arithmetic, deterministic
        fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        kwargs["fused" if fusable else "foreach"] = True
    return table[optimizer](params, **kwargs)


def _tensorboard_writer(out: Path | None) -> Any:
    if out is None:
        raise ProbgenError("tensorboard: logging needs a run folder (out=...)")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ProbgenError("tensorboard: the tensorboard package is not installed "
                           "(pip install 'probgen[tensorboard]')") from None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


# ----------------------------------------------------------------------------- the loop


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@torch.no_grad()
def _validate(objective: Objective, model: Callable, guide: Callable | None, data: Any,
              batch_size: int, seed: int, device: torch.device,
              modules: list[torch.nn.Module]) -> float:
    """Mean validation loss per example, with every module in eval mode."""
    rng_t, rng_j = runs.rng_state()
    torch.manual_seed(seed)
    n = num_examples(data)
    total = 0.0
    training = [(m, m.training) for m in modules]
    for m, _ in training:  # dropout off, batch-norm statistics frozen
        m.eval()
    try:
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n))
            total += float(objective.loss(model, guide, *take(data, idx, device)))
    finally:
        for m, mode in training:
            m.train(mode)
        runs.set_rng_state(rng_t, rng_j)
    return total / n


def _loss_and_grads(objective: Objective, model: Callable, guide: Callable | None, batch: tuple,
                    factor: float, trainable: list[torch.Tensor], step: int,
                    out: Path | None,
                    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward) -> float:
    """One loss evaluation; the gradients of ``factor * loss`` land in ``.grad`` (zeroed by the
    caller). Objectives with ``differentiable = False`` back-propagate themselves."""
    if getattr(objective, "differentiable", True) is False:
        value = float(objective.loss_and_grads(model, guide, *batch))  # type: ignore[attr-defined]
        _check_finite(value, step, out)
        if factor != 1.0:
            for p in trainable:
                if p.grad is not None:
                    p.grad.mul_(factor)
        return value
    loss = objective.loss(model, guide, *batch)
    value = loss.item()
    _check_finite(value, step, out)
    backward(loss if factor == 1.0 else loss * factor)  # under fp16 autocast: scaled
    return value


def _check_finite(value: float, step: int, out: Path | None) -> None:
    if not math.isfinite(value):
        kept = runs.latest_checkpoint(out) if out is not None else None
        raise NonFiniteLossError(
            f"loss is {value} at step {step}; last good checkpoint: {kept or 'none'} "
            "(lower lr, add grad_clip, or check the data)")


def _grad_factor(scaling: Scaling, reduction: str, n: int) -> float:
    """What the loss is multiplied by before ``backward``: the minibatch scaling of the
    ``"loss"`` mode, and ``1 / N`` for ``reduction="mean"``."""
    return scaling.loss_factor / (n if reduction == "mean" else 1)


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ProbgenError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def cosine_schedule(steps: int, warmup: int = 0, floor: float = 0.1) -> Callable[[int], float]:
    """A ``lr_schedule`` for [`fit`][probgen.infer.fit.fit]: a linear warm-up over ``warmup``
    steps, then a cosine from 1 down to ``floor`` at step ``steps`` (steps are 1-based).

    Examples:
        >>> f = cosine_schedule(100, floor=0.02)
        >>> f(1), round(f(51), 2), round(f(101), 2)
        (1.0, 0.51, 0.02)
    """
    def factor(step: int) -> float:
        if step <= warmup:
            return step / max(1, warmup)
        t = min(1.0, (step - 1 - warmup) / max(1, steps - warmup))
        return floor + (1 - floor) / 2 * (1 + math.cos(math.pi * t))
    return factor


def fit(
    model: Any,
    guide: Callable | None = None,
    data: Any = None,
    *,
    objective: Any = None,
    steps: int = 1000,
    batch_size: int | None = 128,
    lr: float = 1e-3,
    optimizer: str | Callable = "adam",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    out: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    log_every: int = 50,
    val_data: Any = None,
    val_every: int | None = None,
    patience: int | None = None,
    grad_clip: float | None = None,
    sample_fn: Callable[[int], torch.Tensor] | None = None,
    num_samples: int = 64,
    lr_schedule: Callable[[int], float] | None = None,
    run_config: dict[str, Any] | None = None,
    tensorboard: bool = False,
    precision: str = "fp32",
    compile: bool = False,  # noqa: A002 - the setting's name
    reduction: str = "sum",
) -> FitResult:
    """Train ``model``/``guide`` on ``data`` by minimising ``objective``.

    Args:
        model: a Pyro callable (function, ``nn.Module``/``PyroModule`` or a method), or a
            family object with ``guide=None``.
        guide: a Pyro callable, or ``None`` (empty guide, or the family's own).
        data: a tensor, a tuple of tensors (passed as ``model(*batch)``) or a Dataset.
        objective: an [`Objective`][probgen.infer.objectives.Objective], a Pyro ``ELBO`` or a
            name; default the family's objective, ``"elbo"`` with a guide, else
            ``"likelihood"``.
        steps: total optimisation steps (a resumed run continues up to it).
        batch_size: examples per step; ``None`` for the whole data set.
        out: the run folder (``None``: nothing written).
        resume: continue the run in ``out`` up to ``steps``.
        checkpoint_every: steps between checkpoints (always one at the end).
        val_data: validation data; its loss is computed every ``val_every`` steps (modules
            in eval mode) and the weights with the best validation loss are restored at
            the end.
        val_every: steps between validations.
        patience: stop after this many validations without improvement.
        lr_schedule: ``step -> factor``; before step ``s`` (1-based) every parameter group's
            learning rate is its initial one times ``lr_schedule(s)`` (a pure function of
            the step, so a resumed run follows the same schedule).
        run_config: what a family stores beside the engine's settings in ``config.json``
            (then ``{**run_config, "fit": <engine settings>}``).
        tensorboard: also log the history to TensorBoard event files in ``out/tensorboard``
            (needs the ``tensorboard`` package: ``pip install probgen[tensorboard]``).
        precision: ``"fp32"``, or ``"bf16"`` / ``"fp16"`` autocast of the loss (fp16 with a
            gradient scaler), see [`probgen.infer.precision`][probgen.infer.precision].
        compile: ``torch.compile`` the networks inside the trained modules.

    Under ``torchrun`` the run is data parallel over the processes, ``batch_size`` being
    the global batch (see [`probgen.infer.distributed`][probgen.infer.distributed]).
        reduction: ``"sum"`` (default, as Pyro's ``SVI``): the gradient is that of the
            estimated loss of the whole data set; ``"mean"``: of that loss divided by the
            number of examples ``N`` (a mean NLL, the step size plain SGD expects).

    Minibatch scaling: with ``batch_size = B < N`` the loss is an unbiased estimate of the
    loss on all ``N`` examples: sites in the data plate (the ``pyro.plate`` of size ``B``)
    count ``N / B`` times, global sites (shared latents, ``pyro.factor`` priors) once, as
    with ``pyro.plate("data", N, subsample_size=B)``. A program that subsamples itself
    (``subsample=`` / ``subsample_size=`` on its plate) is left as it is. See
    [`probgen.infer.scaling`][probgen.infer.scaling].

    The logged ``loss`` is per example: that full-data estimate over ``N`` (for full
    batches, the batch sum over ``batch_size``), whatever ``reduction``.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (the last checkpoint is kept).
    """
    family = None
    if guide is None and callable(getattr(model, "model", None)) and callable(
        getattr(model, "guide", None)
    ):
        family, model, guide = model, model.model, model.guide
    if objective is None:
        objective = getattr(family, "objective", None) or (
            "elbo" if guide is not None else Likelihood())
    objective = resolve_objective(objective)
    steps = _check_positive_int(steps, "steps")
    log_every = _check_positive_int(log_every, "log_every")
    if data is None:
        raise ProbgenError("data: training data is required")
    data = as_tensors(data, "data")
    n = num_examples(data)
    batch_size = n if batch_size is None else _check_positive_int(batch_size, "batch_size")
    if batch_size > n:
        raise ProbgenError(f"batch_size ({batch_size}) exceeds the number of examples ({n})")
    shape = getattr(family, "data_shape", None)
    if shape is not None and isinstance(data, tuple) and tuple(data[0].shape[1:]) != tuple(shape):
        raise ProbgenError(f"data: examples have shape {tuple(data[0].shape[1:])}, "
                           f"the model expects {tuple(shape)}")
    if val_data is not None:
        val_data = as_tensors(val_data, "val_data")
        val_every = _check_positive_int(val_every or log_every, "val_every")
    if checkpoint_every is not None:
        checkpoint_every = _check_positive_int(checkpoint_every, "checkpoint_every")
    if reduction not in ("sum", "mean"):
        raise ProbgenError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ProbgenError(f"lr must be a positive number, got {lr!r}")
    device = torch.device(device)
    device = distributed.setup(device)  # [dist] torchrun's process group; this rank's device
    amp = Precision(precision, device)  # [amp] autocast and the fp16 grad scaler
    objective = distributed.wrap_objective(amp.wrap(objective), device)  # [dist] [amp]
    progress = progress and distributed.is_main()  # [dist]
    out = Path(out) if out is not None else None

    config = {
        "objective": objective.config() if hasattr(objective, "config") else repr(objective),
        "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
        "optimizer": optimizer if isinstance(optimizer, str) else getattr(
            optimizer, "__qualname__", type(optimizer).__name__),
        "device": str(device), "precision": precision, "compile": bool(compile),
        "world_size": distributed.world_size(), "log_every": log_every,
        "checkpoint_every": checkpoint_every,
        "val_every": val_every, "patience": patience, "grad_clip": grad_clip,
        "reduction": reduction,
        "data": {"n": n,
                 "shapes": [list(t.shape[1:]) for t in data] if isinstance(data, tuple) else None},
        "versions": {"torch": torch.__version__, "pyro": pyro.__version__},
    }
    ckpt = None
    if out is not None:
        existing = runs.latest_checkpoint(out)
        if existing is not None and not resume:
            raise ProbgenError(f"out: {out} already holds a run; pass resume=True or a new folder")
        if resume and existing is not None:
            ckpt = runs.load_checkpoint(out)
            old = runs.read_json(out / "config.json")
            old = old.get("fit", old) if isinstance(old, dict) else {}
            for key in ("objective", "batch_size", "lr", "seed", "optimizer", "data",
                        "reduction"):
                saved = old.get(key, "sum" if key == "reduction" else None)
                if saved != config[key]:
                    raise ProbgenError(f"resume: {key} differs from the saved run "
                                       f"({saved!r} vs {config[key]!r})")
        if distributed.is_main():  # [dist]
            runs.atomic_write_json(out / "config.json",
                                   config if run_config is None else {**run_config, "fit": config})
    writer = _tensorboard_writer(out) if tensorboard and distributed.is_main() else None  # [dist]
    out = out if distributed.is_main() else None  # [dist] rank 0 alone writes

    _seed_all(seed)
    modules: dict[str, torch.nn.Module] = {}
    for role, fn in (("model", family if family is not None else model), ("guide", guide)):
        m = _module_of(fn)
        if m is not None and all(m is not x for x in modules.values()):
            modules[role] = m
    for k, m in (getattr(objective, "modules", dict)() or {}).items():
        modules[f"objective.{k}"] = m
    for m in modules.values():
        m.to(device)
    if compile:  # [amp]
        compile_networks(modules.values(), device)
    sampler = make_batches(data, batch_size, seed, device)  # [stream] DataLoader for big data
    first = take(data, sampler.order[:batch_size], device)
    pyro_params = _discover(objective, model, guide, first, modules)
    scaling = plan_scaling(model, guide, first, n,
                           bool(getattr(objective, "per_example_loss", False)))
    train_model, train_guide = scaled_program(model, scaling), scaled_program(guide, scaling)
    factor = _grad_factor(scaling, reduction, n)
    params = _Params(modules, pyro_params, list(getattr(objective, "parameters", list)()))
    opt = _make_optimizer(optimizer, params.trainable, lr)
    own_opts = dict(getattr(objective, "optimizers", dict)() or {})
    base_lrs = [[g["lr"] for g in o.param_groups] for o in (opt, *own_opts.values())]
    before = getattr(objective, "before_step", None)
    if isinstance(objective, Objective) and type(objective).before_step is Objective.before_step:
        before = None  # skip a no-op call per step
    n_pyro = len(pyro.get_param_store())

    start, history = 0, []
    best = {"value": math.inf, "step": 0, "bad": 0}
    best_state: dict[str, torch.Tensor] | None = None
    if ckpt is not None:
        try:
            params.load(ckpt.weights)
            opt.load_state_dict(ckpt.optimizers["main"])
            for k, o in own_opts.items():
                o.load_state_dict(ckpt.optimizers[k])
            sampler.load(ckpt.extra, ckpt.state["sampler_pos"])
            amp.load(ckpt.state.get("amp"))  # [amp]
            runs.set_rng_state({k[4:]: v for k, v in ckpt.extra.items() if k.startswith("rng.")},
                               ckpt.state["rng"])
            start, history, best = int(ckpt.state["step"]), ckpt.history, ckpt.state["best"]
        except runs.RunFolderError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise runs.RunFolderError(
                f"checkpoint {ckpt.path} does not fit this model/objective: {exc}") from None
        if start > steps:
            raise ProbgenError(f"steps ({steps}) is below the {start} steps the run already has")
    distributed.broadcast_tensors(params.state().values())  # [dist] rank 0's values everywhere

    def checkpoint(step: int, name: str | None = None) -> None:
        if out is None:
            return
        t, j = runs.rng_state()
        st, pos = sampler.state()
        extra = {**st, **{f"rng.{k}": v for k, v in t.items()}}
        optims = {"main": opt.state_dict(), **{k: o.state_dict() for k, o in own_opts.items()}}
        state = {"step": step, "sampler_pos": pos, "rng": j, "best": best, "amp": amp.state()}
        runs.save_checkpoint(out, step, params.state(), optims, state, history, extra, name=name)
        runs.save_tensors(out / "weights.safetensors", params.state())
        runs.write_history(out / "metrics.jsonl", history)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc="fit", dynamic_ncols=True)
    t0 = time.perf_counter()
    acc, cnt, stopped, step = 0.0, 0, False, start
    logs: dict[str, float] = {}
    try:
        for step in range(start + 1, steps + 1):
            batch = sampler.next()
            if lr_schedule is not None:
                lr_factor = float(lr_schedule(step))
                for o, lrs in zip((opt, *own_opts.values()), base_lrs):
                    for g, base_lr in zip(o.param_groups, lrs):
                        g["lr"] = base_lr * lr_factor
            if before is not None:
                logs = before(train_model, train_guide, *batch)
            opt.zero_grad(set_to_none=True)
            value = _loss_and_grads(objective, train_model, train_guide, batch, factor,
                                    params.trainable, step, out, amp.backward)
            distributed.sync_gradients(params.trainable)  # [dist] the global batch's gradient
            amp.unscale(opt)  # [amp]
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params.trainable, grad_clip)
            amp.step(opt)  # [amp] opt.step(); under fp16 skipped on overflow
            acc += value
            cnt += 1
            if bar is not None:
                bar.update(1)
            if len(pyro.get_param_store()) != n_pyro:
                raise ProbgenError("model/guide created new pyro.param sites after the first "
                                   "step; create every parameter on every call")
            validate = val_data is not None and step % val_every == 0
            if step % log_every == 0 or step == steps or validate:
                row = {"step": step, "loss": acc * scaling.loss_factor / (cnt * n),
                       "time": time.perf_counter() - t0, **logs}
                acc, cnt = 0.0, 0
                if validate:
                    row["val_loss"] = _validate(objective, model, guide, val_data, batch_size,
                                                seed + 1, device, list(modules.values()))
                    if row["val_loss"] < best["value"]:
                        best = {"value": row["val_loss"], "step": step, "bad": 0}
                        best_state = {k: v.detach().clone() for k, v in params.state().items()}
                        if out is not None:
                            runs.save_tensors(out / "best.safetensors", best_state)
                    else:
                        best["bad"] += 1
                        stopped = patience is not None and best["bad"] >= patience
                history.append(row)
                if writer is not None:
                    for key, value in row.items():
                        if key not in ("step", "time") and isinstance(value, (int, float)):
                            writer.add_scalar(key, value, step)
                    writer.flush()
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)
            if stopped or (checkpoint_every is not None and step % checkpoint_every == 0):
                checkpoint(step)
            if stopped:
                break
        if step == steps and (checkpoint_every is None or steps % checkpoint_every != 0):
            checkpoint(step)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    elapsed = time.perf_counter() - t0
    if val_data is not None and best_state is None and out is not None \
            and (out / "best.safetensors").exists():
        best_state = runs.load_tensors(out / "best.safetensors")  # best came before a resume
    if val_data is not None and best_state is not None:
        params.load(best_state)  # with validation, the result is the best weights seen
    distributed.broadcast_tensors(params.state().values())  # [dist] e.g. best read by rank 0
    final = {"steps": step, "time_s": elapsed,
             "steps_per_s": (step - start) / elapsed if elapsed > 0 else None,
             "train_loss": history[-1]["loss"] if history else None}
    if val_data is not None:
        final.update(best_val_loss=best["value"], best_step=best["step"])
    if out is not None:
        sample = sample_fn or getattr(family, "sample", None)
        if sample is not None:
            from probgen.metrics.grids import save_samples

            try:
                with torch.no_grad():
                    save_samples(sample(num_samples), out / "samples" / f"step-{step:08d}.png")
            except ProbgenError as exc:  # a picture must not fail a finished run
                warnings.warn(f"no sample grid written: {exc}", stacklevel=2)
        runs.save_tensors(out / "weights.safetensors", params.state())
        runs.atomic_write_json(out / "metrics.json", final)
    return FitResult(step, history, final, out, stopped, params.state())
