"""The family contract: every paradigm registers the same face, so the command line, the
report and the tests treat them alike.

A [`Family`][probgen.models.family.Family] is a name, a one-line description, a typed config (a
dataclass derived from [`RunConfig`][probgen.models.config.RunConfig]), the kinds of data it trains
on, and two functions:

``fit(config, splits, ctx) -> Run``
    build the model and train it through the engine (``ctx.fit`` is
    [`probgen.infer.fit.fit`][probgen.infer.fit.fit] with the run folder, resume flag, device and
    progress filled in);
``load(run_dir, config, data_info) -> Run``
    rebuild the trained model of a run folder.

A [`Run`][probgen.models.family.Run] can [`sample`][probgen.models.family.Run.sample] ``n`` examples
(data scale, the shape of the data set), [`evaluate`][probgen.models.family.Run.evaluate] on the
test split and [`save_samples`][probgen.models.family.Run.save_samples] to a file.
[`train`][probgen.models.family.train] is the one driver behind ``probgen train`` for every family:
it resolves the config (defaults, presets for the kind of data, fast mode, ``--config``, ``--set``),
guards the run folder (refuse / ``resume`` / ``overwrite``), sets the thread count, trains, then
evaluates and writes ``metrics.json`` with one set of keys for every family: ``test_nll`` /
``nll_kind`` / ``test_bpd`` where the family has a likelihood, ``fd`` on digits (Fréchet distance of
1000 samples against the test split), ``test_energy`` / ``test_mmd`` on vectors, ``train_seconds``
and ``num_params``. [`load_run`][probgen.models.family.load_run] reads any run folder back.

Threads: ``threads=0`` (the default) leaves torch alone when ``OMP_NUM_THREADS`` is set and
otherwise uses one thread per four cores available to the process, at most four (so one on
a 2-core machine). On a shared 2-core machine two threads ran the 2-D flow 45x slower
than one beside another busy process (``benchmarks/threads.py`` measures it).

Examples:
    >>> run = train("flow", data="moons", fast=True, progress=False)
    >>> run.sample(5).shape, sorted(k for k in run.metrics if k.startswith("test_"))[:2]
    (torch.Size([5, 2]), ['test_bpd', 'test_energy'])
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from probgen.data.splits import DataSplits, describe_kind, load_splits
from probgen.errors import ProbgenError
from probgen.infer import distributed, runs
from probgen.models.config import ConfigError, build_config, config_to_dict, describe_config

__all__ = ["Family", "Run", "TrainContext", "register", "get_family", "family_names",
           "train", "load_run", "auto_threads", "check_device", "yardstick"]


@dataclass(frozen=True)
class Family:
    """What a paradigm registers (see the module docstring)."""

    name: str
    description: str
    config: type
    fit: Callable[[Any, DataSplits, TrainContext], Run]
    load: Callable[[Path, Any, dict], Run]
    kinds: tuple[str, ...]
    default_data: str
    data_names: tuple[str, ...] = ()
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fast: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: ``False`` for a likelihood-free family (a GAN): no ``test_nll`` / ``nll_kind`` /
    #: ``test_bpd``; it is judged on the yardstick (``fd``, ``test_energy``) alone
    likelihood: bool = True

    def layers(self, kind: str, fast: bool) -> list[Mapping[str, Any]]:
        """The default overrides for ``kind`` of data (and fast mode), in order."""
        out = [self.presets.get(kind, {})]
        if fast:
            out += [self.fast.get("*", {}), self.fast.get(kind, {})]
        return out


_BUILTIN: dict[str, str] = {
    "arm": "probgen.models.arm.train",
    "gpt": "probgen.models.arm.gpt_train",
    "vae": "probgen.models.vae.train",
    "flow": "probgen.models.flows.train",
    "gan": "probgen.models.gan.train",
    "pix2pix": "probgen.models.gan.pix2pix",
    "cyclegan": "probgen.models.gan.cyclegan",
    "ebm": "probgen.models.ebm.train",
    "flowmatch": "probgen.models.diffusion.flowmatch_train",
    "diffusion": "probgen.models.diffusion.train",
}
_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family to the registry (the built-in ones register on first use)."""
    if not isinstance(family, Family):
        raise ProbgenError(f"family: expected a Family, got {type(family).__name__}")
    _REGISTRY[family.name] = family
    return family


def family_names() -> list[str]:
    """Names of every registered family, sorted."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def get_family(name: str) -> Family:
    """The registered family called ``name``; an unknown name lists the others."""
    if name not in _REGISTRY:
        if name not in _BUILTIN:
            raise ProbgenError(f"family: unknown {name!r}; choose one of "
                               f"{', '.join(family_names())}")
        module = importlib.import_module(_BUILTIN[name])
        register(module.FAMILY)
    return _REGISTRY[name]


# ----------------------------------------------------------------------------- runs


class Run:
    """A trained model of one family with its config, data and (optional) run folder.

    Subclasses implement [`sample`][probgen.models.family.Run.sample] and
    [`figures`][probgen.models.family.Run.figures] (the family's test figures) and list their
    networks in [`modules`][probgen.models.family.Run.modules].
    """

    family: str = "?"
    #: the file `train` writes samples to in the run folder
    sample_file: str = "samples.png"
    #: the family's sample-time settings (a [`SampleConfig`][probgen.models.config.SampleConfig]
    #: subclass), or ``None`` when sampling has no settings
    sample_config: type | None = None

    def __init__(self, config: Any, data: DataSplits | dict[str, Any],
                 run_dir: str | Path | None = None) -> None:
        self.config = config
        self._splits = data if isinstance(data, DataSplits) else None
        self.data_info: dict[str, Any] = data.info if isinstance(data, DataSplits) else data
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.metrics: dict[str, Any] = {}
        #: the current sample-time settings (see `set_sampling`)
        self.sampling: Any = build_config(self.sample_config) if self.sample_config else None

    def __repr__(self) -> str:
        where = f", run_dir='{self.run_dir}'" if self.run_dir else ""
        return f"{type(self).__name__}(family={self.family!r}, data={self.data_name!r}{where})"

    @property
    def data_name(self) -> str:
        return str(self.data_info.get("name"))

    @property
    def kind(self) -> str:
        return str(self.data_info.get("kind"))

    @property
    def splits(self) -> DataSplits:
        """The data splits (loaded again from ``data_info`` for a run read from a folder)."""
        if self._splits is None:
            self._splits = load_splits(self.data_info)
        return self._splits

    # -- what a family implements ----------------------------------------------------------
    def modules(self) -> list[torch.nn.Module]:
        """The trained networks (for parameter counts and eval mode)."""
        return []

    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` samples at data scale, shaped like the data set's examples."""
        raise NotImplementedError

    def figures(self, progress: bool = False) -> dict[str, Any]:
        """The family's test figures (``test_nll``, ``nll_kind``, ...)."""
        return {}

    # -- shared -------------------------------------------------------------------------------
    def set_sampling(self, sets: tuple[str, ...] | list[str] = (), **values: Any) -> Run:
        """Change sample-time settings (``"key=value"`` text as ``--set``, or keywords) for
        later [`sample`][probgen.models.family.Run.sample] / ``evaluate`` calls; unchanged keys
        keep their current values. Returns the run.

        Examples:
            >>> run = train("flow", data="moons", fast=True, progress=False)
            >>> run.set_sampling(sets=["steps=5"])
            Traceback (most recent call last):
            ...
            probgen.models.config.ConfigError: --set: flow runs have no sample-time settings
        """
        if self.sample_config is None:
            if list(sets) or values:
                raise ConfigError(f"--set: {self.family} runs have no sample-time settings")
            return self
        self.sampling = build_config(self.sample_config, [config_to_dict(self.sampling)],
                                     sets=sets, values=values)
        return self

    def describe_sampling(self) -> str:
        """Every sample-time key with its current value and help (empty when none)."""
        if self.sample_config is None:
            return ""
        return describe_config(self.sample_config, [config_to_dict(self.sampling)])

    def num_params(self) -> int:
        seen: set[int] = set()
        total = 0
        for m in self.modules():
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
        return total

    def evaluate(self, progress: bool = False) -> dict[str, Any]:
        """The family's test figures plus the shared yardstick (``fd`` on digits,
        ``test_energy`` / ``test_mmd`` on vectors)."""
        say = _sayer(progress)
        t0 = time.perf_counter()
        say(f"evaluating {self.family} on the test split of {self.data_name} ...")
        out = dict(self.figures(progress))
        out.update(yardstick(self, progress))
        say(f"evaluated in {time.perf_counter() - t0:.1f} s: " + ", ".join(
            f"{k} {v:.4g}" for k, v in out.items() if isinstance(v, float)
            and k in ("test_nll", "fd", "test_energy")))
        return out

    def save_samples(self, path: str | Path, n: int = 64, seed: int = 0) -> Path:
        """Write ``n`` samples: a PNG picture for ``.png``, the raw array for ``.npy`` /
        ``.pt`` (data scale, the data set's shape), decoded text for ``.txt``."""
        path = Path(path)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ProbgenError(f"n: must be a positive integer, got {n!r}")
        suffix = path.suffix.lower()
        if suffix not in (".png", ".npy", ".pt", ".txt"):
            raise ProbgenError(f"out: {path} must end in .png, .npy, .pt or .txt")
        samples = self.sample(n, seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            import numpy as np

            np.save(path, samples.detach().cpu().numpy())
            return path
        if suffix == ".pt":
            torch.save(samples.detach().cpu().contiguous(), path)
            return path
        if suffix == ".txt":
            path.write_text(self.as_text(samples), encoding="utf-8")
            return path
        return self.picture(samples, path)

    def as_text(self, samples: torch.Tensor) -> str:
        """Samples as text (``.txt`` files); only text families have it."""
        raise ProbgenError(f"out: {self.family} samples are not text; use .png, .npy or .pt")

    def picture(self, samples: torch.Tensor, path: Path) -> Path:
        """A PNG of samples: a grid of images, or a scatter of 2-D points over the test set."""
        from probgen.metrics.grids import save_grid, save_scatter

        if self.kind == "digits":
            levels = int(self.data_info.get("levels", 17))
            return save_grid(samples.float().reshape(-1, 1, 8, 8) / (levels - 1), path)
        if self.kind == "images":
            return save_grid(samples.float().clamp(0, 1), path)
        if self.kind == "vectors" and samples.shape[-1] == 2:
            return save_scatter(samples.float(), path, reference=self.splits.test[:2000])
        raise ProbgenError(f"out: {self.kind} samples of shape {tuple(samples.shape[1:])} have "
                           "no picture; use .npy or .pt")


def yardstick(run: Run, progress: bool = False) -> dict[str, Any]:
    """The sample-quality figures every family reports on its kind of data."""
    seed = int(getattr(run.config, "seed", 0))
    if run.kind == "digits":
        from probgen.metrics.frechet import digits_frechet_distance

        levels = int(run.data_info.get("levels", 17))
        samples = run.sample(1000, seed=seed + 12345).float().reshape(-1, 64) / (levels - 1)
        test = run.splits.test.float() / (levels - 1)
        return {"fd": digits_frechet_distance(samples.cpu(), test)}
    if run.kind == "vectors":
        from probgen.metrics.distances import energy_distance, mmd

        test = run.splits.test[:2000]
        samples = run.sample(len(test), seed=seed + 12345).float().cpu()
        return {"test_energy": energy_distance(samples, test), "test_mmd": mmd(samples, test)}
    return {}


@dataclass
class TrainContext:
    """What a family's ``fit`` needs besides its config and data."""

    out: Path | None
    resume: bool = False
    progress: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    run_config: dict[str, Any] = field(default_factory=dict)
    tensorboard: bool = False
    results: list[Any] = field(default_factory=list)
    precision: str = "fp32"
    compile: bool = False

    def fit(self, model: Any, guide: Any = None, data: Any = None, *,
            out: str | Path | None | bool = True, **kwargs: Any) -> Any:
        """[`probgen.infer.fit.fit`][probgen.infer.fit.fit] writing to the run folder
        (``out=True``), a sub-folder (a path relative to it) or nowhere (``None``)."""
        from probgen.infer.fit import fit

        folder = self.out if out is True else (
            None if out is None or self.out is None else self.out / out)
        res = fit(model, guide, data, out=folder, resume=self.resume and folder is not None,
                  progress=self.progress, device=self.device, run_config=self.run_config,
                  tensorboard=self.tensorboard, precision=self.precision,
                  compile=self.compile, **kwargs)
        self.results.append(res)
        return res

    def say(self, message: str) -> None:
        _sayer(self.progress)(message)


def _sayer(progress: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)
    return say


# ----------------------------------------------------------------------------- the driver


def auto_threads() -> int:
    """One torch thread per four available cores, at least one and at most four."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores // 4))


def _set_threads(threads: int) -> None:
    if threads == 0:
        if "OMP_NUM_THREADS" in os.environ:
            return
        threads = auto_threads()
    torch.set_num_threads(threads)


def check_device(device: str) -> torch.device:
    """``torch.device(device)`` after checking this machine has it (one-line errors)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device: {device!r} is not a torch device (cpu, cuda, cuda:1, mps)"
                          ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {device!r} requested but this machine has no CUDA "
                              f"(torch {torch.__version__}, cuda available: False)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {device!r} requested but only "
                              f"{torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device: {device!r} requested but MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device: {device!r} is not supported (cpu, cuda, mps)")
    return dev


def _guard_folder(out: Path, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Refuse to replace a run by accident; return the saved config when resuming."""
    if resume and overwrite:
        raise ProbgenError("resume, overwrite: give one of them, not both")
    if not out.exists():
        if resume:
            raise ProbgenError(f"resume: {out} does not exist; nothing to resume")
        return None
    if not out.is_dir():
        raise ProbgenError(f"out: {out} exists and is not a folder")
    is_run = (out / "config.json").is_file() or (out / "checkpoints").is_dir()
    if resume:
        if not (out / "config.json").is_file():
            raise ProbgenError(f"resume: {out} holds no run to resume (no config.json)")
        return runs.read_json(out / "config.json")
    if not any(out.iterdir()):
        return None
    if not overwrite:
        raise ProbgenError(f"out: {out} already holds a run; pass --resume to continue it or "
                           "--overwrite to replace it" if is_run else
                           f"out: {out} is a folder that is not empty; choose a new folder")
    if not is_run:
        raise ProbgenError(f"overwrite: {out} is not a probgen run folder; refusing to delete it")
    shutil.rmtree(out)
    return None


def train(family: str | Family, data: str | os.PathLike | DataSplits | None = None,
          out: str | os.PathLike | None = None, *, config: str | os.PathLike | None = None,
          sets: tuple[str, ...] | list[str] = (), fast: bool = False, progress: bool = True,
          resume: bool = False, overwrite: bool = False, tensorboard: bool = False,
          **values: Any) -> Run:
    """Train ``family`` on ``data`` (an embedded name, a local path, or splits) and evaluate.

    Settings: the config's defaults, the family's presets for the kind of data, fast-mode
    settings (``fast``), a YAML/JSON ``config`` file, ``sets`` (``"key=value"`` text, as
    ``--set``) and keyword ``values``, in that order. With ``out`` the run folder holds
    ``config.json`` (family, data, resolved config, engine settings), the weights,
    checkpoints, ``metrics.jsonl``, ``metrics.json`` and ``samples.png``; an existing run
    there is refused unless ``resume`` (continue from its last checkpoint, exactly; the
    saved config is the base, ``sets`` / ``values`` may change e.g. ``steps``) or
    ``overwrite``. Returns the [`Run`][probgen.models.family.Run] with its ``metrics``.
    """
    fam = family if isinstance(family, Family) else get_family(family)
    out_path = Path(out) if out is not None else None
    if out_path is None and resume:
        raise ProbgenError("resume: give the run folder to resume (--out)")
    if out_path is None:
        saved = None
    elif distributed.env_rank() == 0:  # under torchrun rank 0 alone may delete / refuse
        saved = _guard_folder(out_path, resume, overwrite)
    else:
        saved = runs.read_json(out_path / "config.json") if resume else None
    if saved is not None:
        if saved.get("family") != fam.name:
            raise ProbgenError(f"resume: {out_path} holds a {saved.get('family')!r} run, "
                               f"not {fam.name!r}")
        if data is not None and not isinstance(data, DataSplits) and \
                str(data) != saved["data"]["name"]:
            raise ProbgenError(f"data: the run in {out_path} trained on "
                               f"{saved['data']['name']!r}, not {str(data)!r}")
        data = data if isinstance(data, DataSplits) else saved["data"]
    if data is None:
        data = fam.default_data
    splits = data if isinstance(data, DataSplits) else load_splits(data)
    if splits.kind not in fam.kinds:
        raise ProbgenError(
            f"data: {fam.name} does not train on {describe_kind(splits.kind)} "
            f"({splits.name}); it takes {', '.join(describe_kind(k) for k in fam.kinds)}")
    layers = [saved["config"]] if saved is not None else fam.layers(splits.kind, fast)
    cfg = build_config(fam.config, layers, file=config, sets=sets, values=values)
    if splits.kind != "text" and cfg.batch_size > len(splits.train):
        raise ConfigError(f"batch_size: {cfg.batch_size} exceeds the {len(splits.train)} "
                          f"training examples of {splits.name}; lower it (--set batch_size=N)")
    device = distributed.setup(check_device(cfg.device))  # torchrun: this rank's device
    distributed.barrier()  # rank 0 has checked (or cleared) the run folder
    progress = progress and distributed.is_main()
    _set_threads(cfg.threads)
    run_config = {"family": fam.name, "data": splits.info, "config": config_to_dict(cfg),
                  "fast": bool(fast) if saved is None else saved.get("fast", False)}
    ctx = TrainContext(out_path, resume=saved is not None, progress=progress, device=device,
                       run_config=run_config, tensorboard=tensorboard,
                       precision=cfg.precision, compile=cfg.compile)
    sizes = " / ".join(str(s) for s in splits.sizes())
    ctx.say(f"training {fam.name} on {splits.name} ({splits.kind}, train/val/test {sizes}), "
            f"{torch.get_num_threads()} thread(s), {device}"
            + (f", {distributed.world_size()} processes" if distributed.world_size() > 1 else "")
            + (f", resuming {out_path}" if saved is not None else ""))
    t0 = time.perf_counter()
    run = fam.fit(cfg, splits, ctx)
    seconds = time.perf_counter() - t0
    metrics: dict[str, Any] = {}
    if ctx.results:
        res = ctx.results[-1]
        metrics.update(res.final)
        metrics["stopped_early"] = bool(res.stopped_early)
        if res.stopped_early:
            ctx.say(f"stopped early at step {res.steps} (no validation gain in "
                    f"{cfg.patience} checks; best at step {res.final.get('best_step')}, "
                    "its weights kept)")
    ctx.say(f"trained in {seconds:.1f} s")
    if not distributed.is_main():  # rank 0 evaluates and writes; the others wait for it
        run.metrics = _json_safe(metrics)
        distributed.barrier()
        return run
    metrics.update(train_seconds=seconds, num_params=run.num_params())
    metrics.update(run.evaluate(progress))
    run.metrics = _json_safe(metrics)
    run.run_dir = out_path
    if out_path is not None:
        old = runs.read_json(out_path / "config.json") if (out_path / "config.json").is_file() \
            else {}
        runs.atomic_write_json(out_path / "config.json", {**old, **run_config})
        runs.atomic_write_json(out_path / "metrics.json", run.metrics)
        run.save_samples(out_path / run.sample_file, n=64 if run.kind != "text" else 8,
                         seed=cfg.seed)
        ctx.say(f"run folder: {out_path}")
    distributed.barrier()  # the other ranks leave once the run folder is written
    return run


def _json_safe(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def load_run(run_dir: str | os.PathLike) -> Run:
    """The trained model of any family's run folder (written by
    [`train`][probgen.models.family.train]).

    Examples:
        >>> import tempfile
        >>> d = tempfile.mkdtemp() + "/run"
        >>> _ = train("flow", data="moons", out=d, fast=True, progress=False)
        >>> load_run(d).sample(3).shape
        torch.Size([3, 2])
    """
    d = Path(run_dir)
    if not d.is_dir():
        raise runs.RunFolderError(f"run: {str(run_dir)!r} is not a folder")
    if not (d / "config.json").is_file():
        raise runs.RunFolderError(f"run: {str(run_dir)!r} is not a run folder (no config.json)")
    saved = runs.read_json(d / "config.json")
    name = saved.get("family") if isinstance(saved, dict) else None
    if name not in family_names():
        raise runs.RunFolderError(f"run: cannot tell which family wrote {str(run_dir)!r} "
                                  f"({d / 'config.json'} names family {name!r})")
    fam = get_family(name)
    try:
        cfg = build_config(fam.config, [saved["config"]])
        data_info = dict(saved["data"])
    except (KeyError, TypeError) as exc:
        raise runs.RunFolderError(f"{d / 'config.json'} is malformed: missing {exc}") from None
    run = fam.load(d, cfg, data_info)
    run.run_dir = d
    if (d / "metrics.json").is_file():
        run.metrics = runs.read_json(d / "metrics.json")
    return run
