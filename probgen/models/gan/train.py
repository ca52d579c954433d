"""The GAN family (``probgen train gan``): DCGAN on digits, an MLP pair on 2-D densities.

The generator is the implicit program of [`GAN`][probgen.models.gan.gan.GAN]; the discriminator,
its optimizer, the loss and every stabiliser belong to one
[`Adversarial`][probgen.models.gan.objective.Adversarial] objective, and the engine's ``fit``
trains it like every other family (run folders resume both players and the EMA copy bit for bit).

- digits: pixels scaled to ``[-1, 1]`` (level ``l`` -> ``l / 8 - 1``), a DCGAN pair
  ([`DCGANGenerator`][probgen.nn.dcgan.DCGANGenerator],
  [`DCGANDiscriminator`][probgen.nn.dcgan.DCGANDiscriminator]) sized for 8x8; samples are
  rounded back to the 17 levels. ``conditional=true`` makes it a
  class-conditional GAN on the digits labels (generator and projection discriminator take ``y``;
  unconditional samples then draw ``y`` uniformly).
- vectors: an [`MLPGenerator`][probgen.nn.dcgan.MLPGenerator] /
  [`MLPDiscriminator`][probgen.nn.dcgan.MLPDiscriminator] pair.

A GAN has no likelihood: ``metrics.json`` has no ``test_nll``. On digits it reports ``fd`` and the
memorisation check: ``nn_train_samples`` (mean distance of 1000 samples to their nearest training
image, pixels in [0, 1]) beside ``nn_train_test`` (the same for the test images); on vectors
``test_energy`` / ``test_mmd`` and, on ``eight_gaussians``, the modes covered and the fraction of
high-quality samples ([`mode_report`][probgen.models.gan.properties.mode_report]).

Examples:
    >>> from probgen.models.family import train
    >>> run = train("gan", data="moons", fast=True, progress=False)
    >>> run.sample(4).shape, "test_nll" in run.metrics
    (torch.Size([4, 2]), False)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyro
import torch
from torch import Tensor, nn

from probgen.data.splits import DataSplits
from probgen.errors import ProbgenError
from probgen.infer import runs
from probgen.models.config import ConfigError, RunConfig, option
from probgen.models.family import Family, Run, TrainContext
from probgen.models.gan.gan import GAN
from probgen.models.gan.objective import LOSSES, Adversarial
from probgen.models.gan.properties import RING, mode_report, nearest_distance
from probgen.nn.dcgan import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    spectral_norm,
)

__all__ = ["GANConfig", "GANRun", "build_gan", "FAMILY"]

LossName = Literal["ns", "minimax", "hinge", "lsgan", "wgan_gp"]
assert set(LossName.__args__) == set(LOSSES)  # type: ignore[attr-defined]


@dataclass
class GANConfig(RunConfig):
    """Settings of ``probgen train gan`` (defaults for digits; vectors have their presets)."""

    steps: int = option(5000, "generator steps")
    batch_size: int = option(64, "examples per step")
    lr: float = option(2e-4, "generator learning rate")
    lr_d: float = option(2e-4, "discriminator learning rate (TTUR: may differ from lr)")
    beta1: float = option(0.5, "Adam beta1 of both players")
    beta2: float = option(0.999, "Adam beta2 of both players")
    val_every: int = option(100, "steps between log lines")
    patience: int | None = option(None, "unused: a GAN has no validation loss")
    loss: LossName = option("ns", "adversarial loss: ns, minimax, hinge, lsgan, wgan_gp")
    n_critic: int | None = option(None, "discriminator steps per generator step "
                                        "(none: 5 for wgan_gp, else 1)")
    gp: float | None = option(None, "WGAN-GP penalty weight (none: 10)")
    r1: float = option(0.0, "R1 penalty weight on real data (0: off)")
    instance_noise: float = option(0.0, "std of Gaussian noise on D's inputs (0: off)")
    spectral_norm: bool = option(False, "spectral normalisation in the discriminator")
    ema: float = option(0.999, "decay of the generator's EMA used for sampling (0: off)")
    latent_dim: int = option(32, "dimension of the noise z")
    width: int = option(64, "DCGAN base channels / MLP hidden units")
    depth: int = option(3, "MLP hidden layers (vectors)")
    norm: Literal["batch", "none"] = option("batch", "normalisation in the DCGAN generator")
    conditional: bool = option(False, "class-conditional GAN on the data's labels (digits)")

    def validate(self) -> None:
        super().validate()
        for name in ("latent_dim", "width", "depth"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not self.lr_d > 0:
            raise ConfigError(f"lr_d: must be > 0, got {self.lr_d}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema: must be in [0, 1), got {self.ema}")
        for name in ("r1", "instance_noise"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")


_VECTORS: dict[str, Any] = {"latent_dim": 2, "width": 128, "batch_size": 256, "lr": 1e-3,
                            "lr_d": 1e-3, "steps": 2000, "beta1": 0.5, "beta2": 0.9}
_DIGITS: dict[str, Any] = {"instance_noise": 0.05, "width": 32}


def build_gan(config: GANConfig, shape: tuple[int, ...], kind: str, num_classes: int = 0
              ) -> tuple[GAN, nn.Module]:
    """The generator program and the discriminator for data of ``shape`` and ``kind``.

    Examples:
        >>> from probgen.models.config import build_config
        >>> gan, d = build_gan(build_config(GANConfig, [{"width": 8}]), (64,), "digits")
        >>> d(gan.sample(2)).shape
        torch.Size([2])
    """
    if kind == "digits":
        g = DCGANGenerator(config.latent_dim, 1, 8, config.width, num_classes, config.norm)
        d: nn.Module = DCGANDiscriminator(1, 8, config.width, num_classes)
    elif kind == "images":
        c, h, w = shape
        if h != w:
            raise ProbgenError(f"data: the DCGAN nets take square images, got {h}x{w}")
        g = DCGANGenerator(config.latent_dim, c, h, config.width, num_classes, config.norm)
        d = DCGANDiscriminator(c, h, config.width, num_classes)
    elif kind == "vectors" and len(shape) == 1:
        g = MLPGenerator(config.latent_dim, shape[0], config.width, config.depth, num_classes)
        d = MLPDiscriminator(shape[0], config.width, config.depth, num_classes)
    else:
        raise ProbgenError(f"data: the GAN family takes digits, square images or vectors, got "
                           f"{kind} examples of shape {shape}")
    if config.spectral_norm:
        d = spectral_norm(d)
    return GAN(g, config.latent_dim, shape, num_classes), d


def make_objective(config: GANConfig, gan: GAN, d: nn.Module) -> Adversarial:
    """The family's [`Adversarial`][probgen.models.gan.objective.Adversarial] from its config."""
    return Adversarial(d, config.loss, lr=config.lr_d, betas=(config.beta1, config.beta2),
                       n_critic=config.n_critic, gp=config.gp, r1=config.r1,
                       instance_noise=config.instance_noise, generator=gan.generator,
                       ema=config.ema)


def to_model_scale(x: Tensor, kind: str, levels: int | None) -> Tensor:
    """Data as the GAN sees it: digits levels -> ``[-1, 1]``, images ``[0, 1]`` -> ``[-1, 1]``."""
    if kind == "digits":
        return x.float() / ((levels or 17) - 1) * 2 - 1
    if kind == "images":
        return x.float() * 2 - 1
    return x.float()


class GANRun(Run):
    """A trained GAN: ``run.gan`` (the program), ``run.discriminator`` and ``run.ema``.

    ``sample(n)`` uses the EMA generator when there is one, and returns digits as integer levels
    ``(n, 64)``, images in ``[0, 1]``, vectors as they are.
    """

    family = "gan"

    def __init__(self, gan: GAN, discriminator: nn.Module, ema: nn.Module | None,
                 config: GANConfig, data: DataSplits | dict[str, Any],
                 run_dir: str | Path | None = None) -> None:
        super().__init__(config, data, run_dir)
        self.gan, self.discriminator, self.ema = gan, discriminator, ema

    def modules(self) -> list[nn.Module]:
        return [self.gan.generator, self.discriminator]

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None, y: Tensor | None = None) -> Tensor:
        """``n`` samples at data scale (labels ``y`` for a conditional GAN, else uniform)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ProbgenError(f"n: must be a positive integer, got {n!r}")
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            if self.gan.num_classes and y is None:
                y = torch.randint(self.gan.num_classes, (n,))
            x = self.gan.sample(n, y, generator=self.ema).cpu()
        if self.kind == "digits":
            levels = int(self.data_info.get("levels", 17))
            return ((x + 1) / 2 * (levels - 1)).round().clamp(0, levels - 1).long()
        if self.kind == "images":
            return ((x + 1) / 2).clamp(0, 1)
        return x

    def figures(self, progress: bool = False) -> dict[str, Any]:
        """Digits: the memorisation check; ``eight_gaussians``: the modes of the ring."""
        seed = int(self.config.seed)
        if self.kind == "digits":
            levels = int(self.data_info.get("levels", 17)) - 1
            train, test = self.splits.train.float() / levels, self.splits.test.float() / levels
            s = self.sample(1000, seed=seed + 777).float() / levels
            return {"nn_train_samples": nearest_distance(s, train),
                    "nn_train_test": nearest_distance(test, train)}
        if self.data_name == "eight_gaussians":
            r = mode_report(self.sample(2500, seed=seed + 777), RING)
            return {"modes": r["modes"], "high_quality": r["high_quality"]}
        return {}


class _Program(nn.Module):
    """Holds the GAN program so that ``fit`` saves its generator under ``model.``."""

    def __init__(self, gan: GAN) -> None:
        super().__init__()
        self.gan = gan

    def model(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        return self.gan.model(x, y)


def _num_classes(config: GANConfig, splits: DataSplits | dict[str, Any]) -> int:
    if not config.conditional:
        return 0
    if isinstance(splits, dict):
        return int(splits.get("num_classes", 0)) or 10
    if splits.labels is None or splits.kind != "digits":
        raise ConfigError(f"conditional: {splits.name} has no class labels (digits has)")
    return int(splits.labels[0].max()) + 1


def _fit(config: GANConfig, splits: DataSplits, ctx: TrainContext) -> GANRun:
    pyro.clear_param_store()
    torch.manual_seed(config.seed)
    k = _num_classes(config, splits)
    gan, d = build_gan(config, splits.shape, splits.kind, k)
    objective = make_objective(config, gan, d)
    run = GANRun(gan, d, objective.ema, config, splits, ctx.out)
    data: Any = to_model_scale(splits.train, splits.kind, splits.levels)
    if k:
        data = (data, splits.labels[0])
    betas = (config.beta1, config.beta2)

    def adam(params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=config.lr, betas=betas)

    picture = None
    if splits.kind == "digits":
        picture = lambda n: run.sample(n).float() / (splits.levels - 1)  # noqa: E731
    ctx.fit(_Program(gan).model, None, data, objective=objective, steps=config.steps,
            batch_size=config.batch_size, lr=config.lr, optimizer=adam, seed=config.seed,
            log_every=config.val_every, sample_fn=picture)
    if ctx.out is not None:
        from probgen.models.gan.plots import plot_players

        plot_players(ctx.results[-1].history, ctx.out / "players.png")
    return run


def _load(run_dir: Path, config: GANConfig, data: dict[str, Any]) -> GANRun:
    d_dir = runs.require_files(run_dir, ("weights.safetensors",), "gan")
    k = _num_classes(config, data)
    gan, disc = build_gan(config, tuple(data["shape"]), data["kind"], k)
    ema = gan.ema_copy() if config.ema else None
    weights = runs.load_tensors(d_dir / "weights.safetensors")
    parts = [("model.gan.", gan), ("objective.discriminator.", disc)]
    if ema is not None:
        parts.append(("objective.ema.", ema))
    for prefix, module in parts:
        state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise runs.RunFolderError(f"{d_dir}/weights.safetensors does not match the GAN "
                                      f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return GANRun(gan, disc, ema, config, data, run_dir)


FAMILY = Family(
    name="gan",
    description="GAN: x = G(z), an implicit program trained against a discriminator",
    config=GANConfig,
    fit=_fit,
    load=_load,
    kinds=("digits", "vectors", "images"),
    default_data="digits",
    data_names=("digits", "eight_gaussians", "moons", "swiss_roll", "checkerboard", "rings",
                "shapes"),
    presets={"vectors": _VECTORS, "digits": _DIGITS},
    fast={"digits": {"steps": 30, "width": 16, "latent_dim": 8, "val_every": 10},
          "vectors": {"steps": 40, "width": 32, "val_every": 20},
          "images": {"steps": 10, "width": 8, "val_every": 5}},
    likelihood=False,
)
