"""The pix2pix family (``probgen train pix2pix``): image-to-image translation as homework 2 states
it (Isola et al. 2017).

The program is ``a -> x`` with ``x = G(a)`` implicit (no ``z``: the U-Net's dropout is the noise;
[`implicit_program`][probgen.models.gan.gan.implicit_program]); ``G`` is a
[`UNetGenerator`][probgen.nn.pix2pix.UNetGenerator], the discriminator a conditional
[`PatchDiscriminator`][probgen.nn.pix2pix.PatchDiscriminator] on ``(x, a)``. The objective is the
one [`Adversarial`][probgen.models.gan.objective.Adversarial] with the non-saturating loss plus
``l1 * mean |G(a) - b|`` (eq. 4, lambda = 100), the same random crop / flip applied to both images
of a pair each step ([`paired_augment`][probgen.data.paired.paired_augment]), and early stopping on
the validation L1 (the best weights are kept). ``--set adversarial=false`` trains the same U-Net
with L1 alone (the paper's "L1 only" row: blurrier outputs).

Data: the embedded ``digits_edges`` (edges -> digit, the default) or ``digits_masked``
(masked -> whole), 32x32; or a local folder with ``train/`` (``val/``, ``test/``) of ``A|B``
images ([`folder_splits`][probgen.data.paired.folder_splits]).

Figures: ``test_l1``, the mean absolute error per pixel (in ``[0, 1]``) of ``G(a)`` against ``b``
on the test pairs; on the digits tasks also ``fd``: the outputs taken back to 8x8 by the
least-squares inverse of the 4x bilinear upsampling that made the targets (exact for the true
targets, whose ``fd`` is then that of the digits test split against itself, 0) against the
digits test split, in the digits classifier's features
([`digits_fd`][probgen.models.gan.pix2pix.digits_fd]).

Examples:
    >>> from probgen.models.family import train
    >>> run = train("pix2pix", fast=True, progress=False)
    >>> run.sample(2).shape, sorted(k for k in run.metrics if k.startswith(("fd", "test_")))
    (torch.Size([2, 2, 1, 32, 32]), ['fd', 'test_l1'])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import Tensor, nn

from probgen.data.paired import downsample_digits, paired_augment
from probgen.data.splits import DataSplits
from probgen.errors import ProbgenError
from probgen.infer import runs
from probgen.models.config import ConfigError, RunConfig, option
from probgen.models.family import Family, Run, TrainContext
from probgen.models.gan.gan import implicit_program
from probgen.models.gan.objective import Adversarial
from probgen.nn.pix2pix import PatchDiscriminator, UNetGenerator

__all__ = ["Pix2PixConfig", "Pix2PixRun", "Translator", "digits_fd", "FAMILY"]


@dataclass
class Pix2PixConfig(RunConfig):
    """Settings of ``probgen train pix2pix``."""

    steps: int = option(1500, "generator steps (early stopping may end sooner)")
    batch_size: int = option(32, "pairs per step")
    lr: float = option(2e-4, "generator learning rate")
    lr_d: float = option(2e-4, "discriminator learning rate")
    beta1: float = option(0.5, "Adam beta1 of both players")
    val_every: int = option(100, "steps between validations (L1 on the validation pairs)")
    patience: int | None = option(5, "validations without improvement before stopping")
    l1: float = option(100.0, "lambda, the weight of the L1 term")
    adversarial: bool = option(True, "false: train the U-Net with L1 alone")
    width: int = option(32, "U-Net base channels")
    d_width: int = option(32, "PatchGAN base channels")
    n_layers: int = option(2, "PatchGAN stride-2 layers (receptive field 16 / 34 / 70 px)")
    dropout: float = option(0.5, "dropout in the U-Net's inner up-convolutions")
    pad: int = option(2, "random-crop jitter in pixels (0: off)")
    flip: bool = option(False, "random horizontal flips (off for digits: mirrored digits are "
                               "not digits)")

    def validate(self) -> None:
        super().validate()
        for name in ("width", "d_width", "n_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.l1 < 0 or (not self.adversarial and self.l1 == 0):
            raise ConfigError(f"l1: must be >= 0 (> 0 without the adversarial term), "
                              f"got {self.l1}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout}")
        if self.pad < 0:
            raise ConfigError(f"pad: must be >= 0, got {self.pad}")


class Translator(nn.Module):
    """The image-to-image program ``x = G(a)`` (``model(b, a)``: ``b`` sets the rows only)."""

    def __init__(self, generator: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.generator = generator
        self._program = (implicit_program(generator, shape, None, ("a",)),)

    def model(self, b: Tensor, a: Tensor) -> dict[str, Tensor]:
        return self._program[0](num_rows=len(b), a=a)

    @torch.no_grad()
    def translate(self, a: Tensor, batch: int = 256) -> Tensor:
        """``G(a)`` in eval mode, at the model's scale ``[-1, 1]``."""
        was = self.generator.training
        self.generator.eval()
        try:
            device = next(self.generator.parameters()).device
            return torch.cat([self.generator(a[i:i + batch].to(device)).cpu()
                              for i in range(0, len(a), batch)])
        finally:
            self.generator.train(was)


def digits_fd(images: Tensor, reference: Tensor) -> float:
    """FD of 32x32 images ``(N, 1, 32, 32)`` in ``[0, 1]`` against 8x8 digits ``(N, 64)`` in
    ``[0, 1]``: the images are taken back to 8x8 by the least-squares inverse of the upsampling
    that made the targets ([`downsample_digits`][probgen.data.paired.downsample_digits], exact for
    the true targets), since the digits classifier's features need 8x8 inputs."""
    from probgen.metrics.frechet import digits_frechet_distance

    return digits_frechet_distance(downsample_digits(images).clamp(0, 1), reference)


def _pair_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 4 or shape[0] != 2 or shape[2] != shape[3]:
        raise ProbgenError(f"data: pix2pix takes square pairs (N, 2, C, H, H), got {shape}")
    return shape[1], shape[2], shape[3]


class Pix2PixRun(Run):
    """A trained translator; ``sample(n)`` returns ``n`` test pairs ``(source, G(source))``
    ``(n, 2, C, H, W)`` in ``[0, 1]`` (the ``seed`` picks which test sources)."""

    family = "pix2pix"

    def __init__(self, translator: Translator, discriminator: nn.Module, config: Any,
                 data: DataSplits | dict[str, Any], run_dir: str | Path | None = None) -> None:
        super().__init__(config, data, run_dir)
        self.translator, self.discriminator = translator, discriminator

    def modules(self) -> list[nn.Module]:
        return [self.translator.generator, self.discriminator]

    def translate(self, a: Tensor) -> Tensor:
        """``G(a)`` for sources ``a (N, C, H, W)`` in ``[0, 1]``; outputs in ``[0, 1]``."""
        return ((self.translator.translate(a * 2 - 1) + 1) / 2).clamp(0, 1)

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ProbgenError(f"n: must be a positive integer, got {n!r}")
        test = self.splits.test
        gen = torch.Generator().manual_seed(0 if seed is None else seed)
        idx = torch.randint(len(test), (n,), generator=gen)
        a = test[idx, 0]
        return torch.stack([a, self.translate(a)], dim=1)

    def picture(self, samples: Tensor, path: Path) -> Path:
        from probgen.metrics.grids import save_grid

        n = min(len(samples), 16)
        return save_grid(samples[:n].flatten(0, 1).clamp(0, 1), path, nrow=8)

    def figures(self, progress: bool = False) -> dict[str, Any]:
        test = self.splits.test
        out = self.translate(test[:, 0])
        fig: dict[str, Any] = {"test_l1": float((out - test[:, 1]).abs().mean())}
        if self.data_name.startswith("digits_"):
            from probgen.data.digits import load_digits

            ref = load_digits("test", "unit")
            fig["fd"] = digits_fd(out, ref)
        return fig


def _build(config: Pix2PixConfig, shape: tuple[int, ...]) -> tuple[Translator, nn.Module]:
    c, h, _ = _pair_shape(shape)
    if h < 3 * 2 ** config.n_layers:
        raise ConfigError(f"n_layers: {config.n_layers} stride-2 layers leave no patch of "
                          f"{h}x{h} images; lower it (--set n_layers=N)")
    g = UNetGenerator(c, c, h, config.width, config.dropout)
    d = PatchDiscriminator(2 * c, config.d_width, config.n_layers)
    return Translator(g, (c, h, h)), d


def _augmenter(pad: int, flip: bool) -> Any:
    def paired_jitter(batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        b, a = batch
        pairs = paired_augment(torch.stack([a, b], dim=1), pad=pad, flip=flip)
        return pairs[:, 1], pairs[:, 0]

    return paired_jitter if (pad or flip) else None


def _fit(config: Pix2PixConfig, splits: DataSplits, ctx: TrainContext) -> Pix2PixRun:
    pyro.clear_param_store()
    torch.manual_seed(config.seed)
    translator, d = _build(config, splits.shape)
    objective = Adversarial(d, "ns", lr=config.lr_d, betas=(config.beta1, 0.999), l1=config.l1,
                            adversarial=config.adversarial,
                            augment=_augmenter(config.pad, config.flip))
    run = Pix2PixRun(translator, d, config, splits, ctx.out)
    train, val = splits.train * 2 - 1, splits.val * 2 - 1  # model scale [-1, 1]
    lr, beta1 = config.lr, config.beta1

    def adam(params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999))

    ctx.fit(translator.model, None, (train[:, 1], train[:, 0]), objective=objective,
            steps=config.steps, batch_size=config.batch_size, lr=lr, optimizer=adam,
            seed=config.seed, val_data=(val[:, 1], val[:, 0]), val_every=config.val_every,
            patience=config.patience, log_every=config.val_every,
            sample_fn=lambda n: run.sample(min(n, 16)).flatten(0, 1))
    return run


def _load(run_dir: Path, config: Pix2PixConfig, data: dict[str, Any]) -> Pix2PixRun:
    d_dir = runs.require_files(run_dir, ("weights.safetensors",), "pix2pix")
    translator, disc = _build(config, tuple(data["shape"]))
    weights = runs.load_tensors(d_dir / "weights.safetensors")
    for prefix, module in (("model.", translator), ("objective.discriminator.", disc)):
        state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise runs.RunFolderError(f"{d_dir}/weights.safetensors does not match pix2pix "
                                      f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return Pix2PixRun(translator, disc, config, data, run_dir)


FAMILY = Family(
    name="pix2pix",
    description="pix2pix: x = G(a), a U-Net against a PatchGAN, NS GAN loss + lambda * L1",
    config=Pix2PixConfig,
    fit=_fit,
    load=_load,
    kinds=("pairs",),
    default_data="digits_edges",
    data_names=("digits_edges", "digits_masked"),
    fast={"pairs": {"steps": 20, "width": 8, "d_width": 8, "val_every": 10, "batch_size": 16}},
    likelihood=False,
)
