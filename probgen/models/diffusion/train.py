"""The diffusion family (``probgen train diffusion``): DDPM on digits (default) or 2-D vectors.

The model is the Pyro program of [`DDPM`][probgen.models.diffusion.ddpm.DDPM] (the chain
``x_T -> ... -> x_0`` with the forward process as its guide), trained by the engine's ``fit``
with [`DiffusionELBO`][probgen.models.diffusion.elbo.DiffusionELBO]: ``weighting="simple"``
(Ho et al.'s ``L_simple``, the default: better samples) or ``"elbo"`` (the bound itself).

Defaults on digits: the cosine schedule truncated to log-SNR ``[-10, 7]`` (``cosine_snr``:
``L_T ~ 1e-3`` nats, first-step noise 0.03, a quarter of a level's width), the posterior
variance, and ``prediction="levels"``: the network gives per-pixel logits over the 17 levels,
the exact likelihood of ``x_t`` is added in closed form, and ``L_simple`` is the
cross-entropy of that level posterior (so the chain rounds to the levels at low noise without
learning it, and ``L_0`` is the categorical itself). The network is a
[`TimeMLP`][probgen.nn.time_embedding.TimeMLP] with dropout (``net=unet``: a
[`UNet`][probgen.nn.unet.UNet] on the 8x8 image, about 12x slower on CPU); vectors use an MLP
predicting ``epsilon``. Samples come from an exponential moving average of the weights
([`EMA`][probgen.nn.ema.EMA]). ``conditional=true`` trains a class-conditional model with
label dropout (classifier-free guidance).

Reported figures (``metrics.json``): ``test_nll`` is the negative ELBO in nats per example with
all ``T + 1`` terms (a discrete decoder on digits, so it bounds the discrete NLL;
a Gaussian decoder on vectors, a density bound), ``nll_kind`` ``"ELBO bound, T steps"``,
``test_bpd``, its terms ``test_prior_kl`` (``L_T``) and ``test_decoder_nll`` (``L_0``); ``fd``
(digits) or ``test_energy`` / ``test_mmd`` (vectors) with the current sample-time settings.

Sample-time settings ([`DiffusionSampling`][probgen.models.diffusion.train.DiffusionSampling]):
``sampler`` (``ddpm`` / ``ddim``), ``steps``, ``eta``, ``guidance``, ``label``:
``probgen sample RUN --set sampler=ddim steps=50``, ``run.set_sampling(sampler="ddim")``.

Examples:
    >>> from probgen.models.family import train
    >>> run = train("diffusion", data="moons", fast=True, progress=False)
    >>> run.metrics["nll_kind"], run.set_sampling(sampler="ddim", steps=5).sample(3).shape
    ('ELBO bound, 20 steps', torch.Size([3, 2]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyro
import torch
from torch import Tensor, nn

from probgen.data.splits import DataSplits
from probgen.errors import ProbgenError
from probgen.models.config import ConfigError, RunConfig, SampleConfig, option
from probgen.models.diffusion.ddpm import DDPM
from probgen.models.diffusion.decoder import unit_interval_to_levels
from probgen.models.diffusion.elbo import DiffusionELBO, elbo_terms
from probgen.models.diffusion.guidance import guided_denoiser
from probgen.models.diffusion.samplers import sample
from probgen.models.diffusion.schedules import NoiseSchedule
from probgen.models.family import Family, Run, TrainContext
from probgen.nn.ema import EMA
from probgen.nn.time_embedding import TimeMLP
from probgen.nn.unet import UNet

__all__ = ["DiffusionConfig", "DiffusionSampling", "DiffusionRun", "build_ddpm", "FAMILY"]


@dataclass
class DiffusionConfig(RunConfig):
    """Settings of ``probgen train diffusion`` (defaults for digits; vectors have presets)."""

    steps: int = option(4000, "training steps")
    batch_size: int = option(128, "examples per step")
    lr: float = option(1e-3, "learning rate")
    val_every: int = option(500, "steps between validations")
    patience: int | None = option(None, "validations without improvement before stopping")
    T: int = option(1000, "diffusion steps")
    schedule: Literal["cosine_snr", "cosine", "linear"] = option(
        "cosine_snr", "noise schedule (cosine_snr: the cosine truncated to a log-SNR range)")
    log_snr_min: float = option(-10.0, "log-SNR of the last step (cosine_snr)")
    log_snr_max: float = option(7.0, "log-SNR of the first step (cosine_snr)")
    prediction: Literal["levels", "epsilon", "x0", "v"] = option(
        "levels", "what the network predicts (levels: logits over the digits' levels)")
    variance: Literal["posterior", "beta"] = option("posterior", "reverse-process variance")
    weighting: Literal["simple", "elbo"] = option("simple", "L_simple or the ELBO itself")
    net: Literal["mlp", "unet"] = option("mlp", "network on digits: MLP on the 64 pixels, or "
                                                "U-Net on the 8x8 image (12x slower on CPU)")
    channels: int = option(32, "U-Net width (digits)")
    mults: tuple[int, ...] = option((1, 2), "U-Net width multipliers per level (digits)")
    res_blocks: int = option(1, "U-Net residual blocks per level (digits)")
    hidden: tuple[int, ...] = option((512, 512, 512), "MLP widths")
    dropout: float = option(0.2, "dropout in the network (U-Net or MLP)")
    ema: float = option(0.999, "EMA decay of the sampled weights (0: none)")
    grad_clip: float | None = option(1.0, "gradient-norm clip (none: off)")
    conditional: bool = option(False, "class-conditional (digits labels)")
    label_dropout: float = option(0.1, "label dropout for classifier-free guidance")

    def validate(self) -> None:
        super().validate()
        for name in ("T", "channels", "res_blocks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not self.mults or min(self.mults) < 1 or not self.hidden or min(self.hidden) < 1:
            raise ConfigError("mults, hidden: need positive sizes")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout}")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema: must be in [0, 1), got {self.ema}")
        if not self.log_snr_min < self.log_snr_max:
            raise ConfigError(f"log_snr_min, log_snr_max: need min < max, got "
                              f"{self.log_snr_min}, {self.log_snr_max}")
        if not 0 <= self.label_dropout < 1:
            raise ConfigError(f"label_dropout: must be in [0, 1), got {self.label_dropout}")


@dataclass
class DiffusionSampling(SampleConfig):
    """Sample-time settings of a diffusion run (``probgen sample RUN --set key=value``)."""

    sampler: Literal["ddpm", "ddim"] = option("ddpm", "ancestral DDPM or DDIM")
    steps: int | None = option(None, "steps visited (none: all T)")
    eta: float = option(0.0, "DDIM noise (0: deterministic; 1 with all steps: DDPM)")
    guidance: float = option(2.0, "classifier-free guidance scale (conditional runs)")
    label: int | None = option(None, "requested class (none: labels 0..9 in turn)")
    clip: bool = option(True, "clamp predicted x_0 to [-1, 1] (digits)")

    def validate(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps: must be >= 1 or none, got {self.steps}")
        if not (math.isfinite(self.eta) and self.eta >= 0):
            raise ConfigError(f"eta: must be >= 0, got {self.eta}")
        if not math.isfinite(self.guidance):
            raise ConfigError(f"guidance: must be a number, got {self.guidance}")
        if self.label is not None and not 0 <= self.label:
            raise ConfigError(f"label: must be >= 0, got {self.label}")


_VECTORS: dict[str, Any] = {"prediction": "epsilon", "dropout": 0.0, "steps": 4000,
                            "batch_size": 256, "lr": 1e-3, "T": 200,
                            "hidden": (128, 128, 128), "val_every": 500}


def build_ddpm(config: DiffusionConfig, shape: tuple[int, ...], levels: int | None,
               num_classes: int = 0) -> DDPM:
    """The DDPM of a config for examples of ``shape`` (U-Net on 8x8 digits, MLP on vectors)."""
    extra = ({"log_snr_min": config.log_snr_min, "log_snr_max": config.log_snr_max}
             if config.schedule == "cosine_snr" else {})
    sched = NoiseSchedule.make(config.schedule, config.T, **extra)
    if len(shape) != 1:
        raise ProbgenError(f"data: the diffusion family takes digits or vectors (N, D), got "
                           f"examples of shape {shape}")
    if config.prediction == "levels" and not levels:
        raise ConfigError("prediction: 'levels' needs integer-level data such as digits; use "
                          "epsilon, x0 or v for vectors")
    k = int(levels) if config.prediction == "levels" else 1
    side = math.isqrt(shape[0])
    if config.net == "unet" and levels is not None and side * side == shape[0]:
        net: nn.Module = UNet(1, k, channels=config.channels, mults=config.mults,
                              num_res_blocks=config.res_blocks, num_classes=num_classes,
                              dropout=config.dropout)
        net_shape: tuple[int, ...] = (1, side, side)
    elif config.net == "unet":
        raise ConfigError(f"net: the U-Net needs square images at integer levels, got examples "
                          f"of shape {shape}")
    else:
        net, net_shape = TimeMLP(shape[0], config.hidden, out_dim=shape[0] * k,
                                 num_classes=num_classes, dropout=config.dropout), shape
    return DDPM(net, sched, shape, net_shape, config.prediction, config.variance, levels,
                num_classes)


class DiffusionRun(Run):
    """A trained DDPM (``run.ddpm``) and the EMA network it samples with (``run.sampler``).

    ``sample(n)`` returns digits as integer levels ``(n, 64)`` or vectors ``(n, D)``.
    """

    family = "diffusion"
    sample_config = DiffusionSampling

    def __init__(self, ddpm: DDPM, ema: EMA | None, config: DiffusionConfig,
                 data: DataSplits | dict[str, Any], run_dir: str | Path | None = None) -> None:
        super().__init__(config, data, run_dir)
        self.ddpm, self.ema = ddpm, ema
        self.sampler = ddpm if ema is None else DDPM(
            ema.net, ddpm.schedule, ddpm.data_shape, ddpm.net_shape, ddpm.prediction,
            ddpm.variance, ddpm.levels, ddpm.num_classes).to(ddpm.alpha_bars.device)

    def modules(self) -> list[nn.Module]:
        return [self.ddpm]

    def labels(self, n: int) -> Tensor | None:
        """The labels ``sample(n)`` asks for (``None`` for an unconditional run)."""
        if not self.ddpm.num_classes:
            if self.sampling.label is not None:
                raise ConfigError("label: this run is not class-conditional")
            return None
        k = self.ddpm.num_classes
        if self.sampling.label is not None:
            if self.sampling.label >= k:
                raise ConfigError(f"label: must be in 0..{k - 1}, got {self.sampling.label}")
            return torch.full((n,), self.sampling.label, dtype=torch.long)
        return torch.arange(n) % k

    @torch.no_grad()
    def sample_model_space(self, n: int, seed: int | None = None, y: Tensor | None = None,
                           callback: Any = None) -> Tensor:
        """``n`` samples on the chain's scale (``[-1, 1]`` for digits), with the current
        sample-time settings; ``y`` overrides the labels."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ProbgenError(f"n: must be a positive integer, got {n!r}")
        s, m = self.sampling, self.sampler
        y = self.labels(n) if y is None else y
        was = m.training
        m.eval()
        try:
            den = guided_denoiser(m, y, s.guidance if y is not None else 1.0)
            return sample(den, m.alpha_bars, (n, *m.data_shape), sampler=s.sampler,
                          steps=s.steps, eta=s.eta, variance=m.variance,
                          clip=1.0 if (s.clip and m.levels) else None, seed=seed,
                          device=m.alpha_bars.device, callback=callback).cpu()
        finally:
            m.train(was)

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """``n`` samples at data scale (levels for digits) with the sample-time settings."""
        x = self.sample_model_space(n, seed)
        return unit_interval_to_levels(x, self.ddpm.levels) if self.ddpm.levels else x

    def figures(self, progress: bool = False) -> dict[str, Any]:
        """The negative ELBO with all ``T + 1`` terms on the test split (EMA weights)."""
        m = self.sampler
        test = self.splits.test
        labels = self.splits.labels[2] if (self.splits.labels and m.num_classes) else None
        was = m.training
        m.eval()
        rows = []
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(self.config.seed)
                dev = m.alpha_bars.device
                for i in range(0, len(test), 512):
                    y = None if labels is None else labels[i:i + 512].to(dev)
                    rows.append(elbo_terms(m, test[i:i + 512].to(dev), y).double().cpu())
        finally:
            m.train(was)
        terms = torch.cat(rows, dim=1)
        nll = terms.sum(0)
        dim = math.prod(m.data_shape)
        out = {"test_nll": float(nll.mean()), "nll_kind": f"ELBO bound, {m.T} steps",
               "test_bpd": float(nll.mean()) / (dim * math.log(2)),
               "test_nll_stderr": float(nll.std() / math.sqrt(len(nll))),
               "test_prior_kl": float(terms[-1].mean()),
               "test_decoder_nll": float(terms[0].mean())}
        if m.num_classes and self.kind == "digits":
            from probgen.models.diffusion.conditional import label_agreement

            n = 200
            out["label_agreement"] = label_agreement(self.sample(n, seed=self.config.seed),
                                                     self.labels(n), m.levels or 17)
            out["label_agreement_guidance"] = self.sampling.guidance
        return out


def _data(splits: DataSplits, conditional: bool, part: int) -> Any:
    x = (splits.train, splits.val)[part]
    if not conditional:
        return x
    return (x, splits.labels[part])


def _fit(config: DiffusionConfig, splits: DataSplits, ctx: TrainContext) -> DiffusionRun:
    if config.conditional and not splits.labels:
        raise ConfigError(f"conditional: {splits.name} has no labels")
    pyro.clear_param_store()
    torch.manual_seed(config.seed)
    k = 10 if config.conditional else 0
    if config.conditional:
        k = int(splits.labels[0].max()) + 1
    ddpm = build_ddpm(config, splits.shape, splits.levels, k)
    ema = EMA(ddpm.net, config.ema) if config.ema > 0 else None
    objective = DiffusionELBO(config.weighting, config.label_dropout if k else 0.0, ema)
    run = DiffusionRun(ddpm, ema, config, splits, ctx.out)
    ctx.fit(ddpm, None, _data(splits, config.conditional, 0), objective=objective,
            steps=config.steps, batch_size=config.batch_size, lr=config.lr, seed=config.seed,
            val_data=_data(splits, config.conditional, 1), val_every=config.val_every,
            patience=config.patience, log_every=config.val_every, grad_clip=config.grad_clip)
    if ctx.out is not None and splits.kind == "digits":
        from probgen.models.diffusion.denoising_plots import save_trajectory

        save_trajectory(run, ctx.out / "trajectory.png", seed=config.seed)
    return run


def _load(run_dir: Path, config: DiffusionConfig, data: dict[str, Any]) -> DiffusionRun:
    from probgen.data.splits import load_splits
    from probgen.infer import runs

    d = runs.require_files(run_dir, ("weights.safetensors",), "diffusion")
    k = 0
    if config.conditional:
        k = int(load_splits(data).labels[0].max()) + 1
    ddpm = build_ddpm(config, tuple(data["shape"]), data.get("levels"), k)
    ema = EMA(ddpm.net, config.ema) if config.ema > 0 else None
    weights = runs.load_tensors(d / "weights.safetensors")
    for prefix, module in (("model.", ddpm), ("objective.ema.", ema)):
        if module is None:
            continue
        state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise runs.RunFolderError(f"{d}/weights.safetensors does not match the diffusion "
                                      f"model (missing {missing[:3]}, unexpected "
                                      f"{unexpected[:3]})")
    ddpm.eval()
    return DiffusionRun(ddpm, ema, config, data, run_dir)


FAMILY = Family(
    name="diffusion",
    description="diffusion model (DDPM): x_T -> ... -> x_0, forward process as the guide, "
                "diffusion ELBO",
    config=DiffusionConfig,
    fit=_fit,
    load=_load,
    kinds=("digits", "vectors"),
    default_data="digits",
    data_names=("digits", "swiss_roll", "moons", "eight_gaussians", "checkerboard", "rings"),
    presets={"vectors": _VECTORS},
    fast={"digits": {"steps": 30, "T": 20, "hidden": (64, 64), "channels": 8, "val_every": 10},
          "vectors": {"steps": 40, "T": 20, "hidden": (32, 32), "val_every": 20}},
)
