"""The VAE family (``probgen train vae``): its config, training through ``fit``, scoring
([`evaluate_vae`][probgen.models.vae.train.evaluate_vae], per-example guide refinement) and runs
read back.

The default model on digits: a 16-dimensional standard-normal latent, an MLP encoder and
an autoregressive pixel decoder (``likelihood="pixelcnn"``: each pixel also sees the two
pixels to its left, see [`probgen.models.vae.pixel_decoder`][probgen.models.vae.pixel_decoder]),
trained by the ELBO with early stopping on the validation ELBO. Measured on 2 shared CPU cores
(about 30 s of training, 1.5 min in all): test NLL 86.4 nats (IWAE-1000 with refined
guides), -ELBO 87.0, KL 6.4 nats. The factorised categorical decoder
(``--set likelihood=categorical``) gives
94.5 / 95.2 at a KL of 6.1, so the gain does not come from ignoring ``z``.

On images (``--data shapes``, `IMAGE_PRESET`): a conv VAE of widths 32, 64, 128, 10 latents,
beta 4, a learned-scale Gaussian decoder and a KL warm-up of 500 steps (an ``l1`` decoder starts
as a Gaussian, see [`WarmupELBO`][probgen.models.vae.vae.WarmupELBO]). Measured (2,000 steps,
186 s on 2 shared cores): test pixel MSE 0.0014, KL 44.2 nats; at 1,000 steps mse / l1 / bce
give KL 32.3 / 26.7 / 7.9 nats (an l1 decoder without the warm-up: 0.09, all black). Draws from
``p(z)`` decode to blobs; draws from a mixture fitted to the codes
([`ex_post_samples`][probgen.models.vae.latent.ex_post_samples]) to shapes.

Examples:
    >>> from probgen.models.family import train
    >>> run = train("vae", fast=True, progress=False, latent_dim=4)
    >>> run.vae.latent_dim, run.sample(2).shape, "fd" in run.metrics
    (4, torch.Size([2, 64]), True)
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyro
import pyro.distributions as dist
import torch

from probgen.data.splits import DataSplits
from probgen.errors import ProbgenError
from probgen.infer.objectives import ELBO
from probgen.models.config import ConfigError, RunConfig, option
from probgen.models.family import Family, Run, TrainContext

if TYPE_CHECKING:
    from probgen.models.vae.vae import VAE

__all__ = ["VAEConfig", "VAERun", "LocalGuide", "refine_guide", "evaluate_vae", "latent_kl",
           "reconstruction_mse", "COLLAPSE_NATS", "FAMILY"]


@dataclass
class VAEConfig(RunConfig):
    """Settings of ``probgen train vae`` (``--show-config`` lists them with their help)."""

    steps: int = option(4000, "training steps (early stopping may end sooner)")
    batch_size: int = option(100, "examples per step")
    latent_dim: int = option(16, "size of z")
    hidden: tuple[int, ...] = option((256, 256), "hidden widths of encoder and decoder")
    likelihood: Literal["pixelcnn", "categorical", "bernoulli", "bce", "gaussian", "mse",
                        "l1"] = option("pixelcnn", "decoder p(x | z)")
    arch: Literal["mlp", "conv"] = option("mlp", "encoder / decoder: MLP, or CNN (one stride-2 "
                                                 "stage per hidden width)")
    scale: float | None = option(0.1, "scale of the mse / l1 likelihood (none: learned)")
    prior: Literal["standard", "mixture", "vamp"] = option("standard", "prior p(z)")
    num_components: int = option(100, "components of a mixture / VampPrior")
    objective: Literal["elbo", "iwae"] = option("elbo", "training objective")
    beta: float = option(1.0, "KL weight of the ELBO (beta > 1: beta-VAE)")
    kl_warmup: int = option(0, "steps over which the KL weight ramps up to beta (0: none)")
    num_samples: int = option(1, "samples per example (ELBO particles, IWAE's K)")
    dropout: float = option(0.0, "dropout in encoder and decoder")
    weight_decay: float = option(0.0, "AdamW weight decay (0: Adam)")
    eval_samples: int = option(1000, "importance samples per test example (test_nll)")
    refine_steps: int = option(300, "per-example guide refinement steps before scoring")

    def validate(self) -> None:
        super().validate()
        for name in ("latent_dim", "num_components", "num_samples", "eval_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"hidden: needs positive widths, got {self.hidden}")
        if self.scale is not None and not self.scale > 0:
            raise ConfigError(f"scale: must be > 0 or none (learned), got {self.scale}")
        if self.beta < 0 or self.weight_decay < 0 or self.refine_steps < 0:
            raise ConfigError("beta, weight_decay, refine_steps: must be >= 0")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout}")
        if self.kl_warmup < 0:
            raise ConfigError(f"kl_warmup: must be >= 0, got {self.kl_warmup}")
        if self.objective == "iwae" and self.kl_warmup:
            raise ConfigError("kl_warmup: IWAE has no KL weighting; use objective=elbo")
        if self.objective == "iwae" and self.beta != 1.0:
            raise ConfigError("beta: IWAE has no beta weighting; use objective=elbo")


class LocalGuide(torch.nn.Module):
    """A non-amortised guide ``q(z_i) = N(mu_i, sigma_i)`` with one parameter row per example.

    Started from the encoder's output on ``x`` and refined by
    [`refine_guide`][probgen.models.vae.train.refine_guide]: the model is untouched, so
    importance-sampled and ELBO estimates stay valid bounds of *its* NLL, only tighter (they close
    the amortisation gap, Cremer et al. 2018).
    """

    def __init__(self, vae: VAE, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        super().__init__()
        with torch.no_grad():
            q = vae.encoder(x, y)
        base = q.base_dist if hasattr(q, "base_dist") else q
        self.loc = torch.nn.Parameter(base.loc.clone())
        self.log_scale = torch.nn.Parameter(base.scale.log().clone())

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        n = self.loc.shape[0]
        if x.shape[0] % n:
            raise ProbgenError(f"x: this guide holds {n} examples, got "
                               f"{x.shape[0]} (evaluate all of them in one batch)")
        # k stacked copies of the n examples (the chunked importance sampler's rows j*n + i)
        k = x.shape[0] // n
        loc, scale = self.loc.repeat(k, 1), self.log_scale.exp().repeat(k, 1)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def refine_guide(vae: VAE, x: torch.Tensor, steps: int = 300, lr: float = 0.02,
                 particles: int = 4, y: torch.Tensor | None = None) -> LocalGuide:
    """Fit a [`LocalGuide`][probgen.models.vae.train.LocalGuide] to ``x`` by maximising the ELBO,
    the VAE held fixed.

    Examples:
        >>> from probgen.models.vae.vae import VAE
        >>> vae = VAE((64,), 2, hidden=(16,)).eval()
        >>> g = refine_guide(vae, torch.randint(0, 17, (4, 64)), steps=2)
        >>> g.loc.shape
        torch.Size([4, 2])
    """
    guide = LocalGuide(vae, x, y)
    opt = torch.optim.Adam(guide.parameters(), lr=lr)
    objective = ELBO(num_particles=particles)
    frozen = [p for p in vae.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        args = (x,) if y is None else (x, y)
        with warnings.catch_warnings():  # pyro.module notes the frozen weights at each call
            warnings.filterwarnings("ignore", message=".*not registered in the param store")
            for _ in range(steps):
                loss = objective.loss(vae.model, guide, *args)
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return guide


def evaluate_vae(vae: VAE, x: torch.Tensor, num_samples: int = 1000, seed: int = 0,
                 y: torch.Tensor | None = None, refine_steps: int = 0,
                 progress: bool = False) -> dict[str, Any]:
    """Test figures of a trained VAE: importance-sampled NLL (``num_samples`` guide samples),
    negative ELBO (10 samples averaged), both in nats per example, and bits/dim;
    ``test_kl`` is the encoder's ``KL(q(z | x) || p(z))`` (closed form, or 10 samples), the
    information the latent code carries (near 0: the decoder ignores ``z``).

    With ``refine_steps > 0`` the proposal is the encoder refined per example
    ([`refine_guide`][probgen.models.vae.train.refine_guide]); the model is unchanged and
    ``nll_kind`` says so.

    Examples:
        >>> from probgen.models.vae.vae import VAE
        >>> vae = VAE((64,), 2, hidden=(16,))
        >>> m = evaluate_vae(vae, torch.randint(0, 17, (8, 64)), num_samples=5)
        >>> m["nll_kind"], m["test_nll"] <= m["test_neg_elbo"] + 1.0
        ('importance (K=5)', True)
    """
    from probgen.infer.likelihood import elbo_nll, importance_nll

    was = vae.training
    vae.eval()
    x = x.to(vae._device())
    y = None if y is None else y.to(x.device)
    data = x if y is None else (x, y)
    guide: Any = vae.guide
    kind = f"importance (K={num_samples})"
    if refine_steps:
        torch.manual_seed(seed)
        if progress:
            print(f"  refining a guide per test example ({refine_steps} steps) ...",
                  file=sys.stderr, flush=True)
        guide = refine_guide(vae, x, refine_steps, y=y)
        kind = f"importance (K={num_samples}, per-example guide refined {refine_steps} steps)"
    bs = max(512, x.shape[0]) if refine_steps else 512
    with torch.no_grad():
        if progress:
            print(f"  importance-sampled NLL with K={num_samples} on {x.shape[0]} examples ...",
                  file=sys.stderr, flush=True)
        ll = importance_nll(vae.model, guide, data, num_samples, batch_size=bs, seed=seed)
        elbo = elbo_nll(vae.model, guide, data, 10, batch_size=bs, seed=seed)
        q = vae.encoder(x.to(vae._device()), y)  # how much z carries: KL(q(z|x) || p(z))
        try:
            kl = float(torch.distributions.kl_divergence(q, vae.prior()).mean())
        except NotImplementedError:  # e.g. a mixture prior: a Monte-Carlo estimate
            z = q.sample((10,))
            kl = float((q.log_prob(z) - vae.prior().log_prob(z)).mean())
    vae.train(was)
    return {"test_nll": ll.nll, "test_nll_stderr": ll.stderr, "test_bpd": ll.bits_per_dim,
            "nll_kind": kind, "test_neg_elbo": elbo.nll,
            "test_neg_elbo_stderr": elbo.stderr, "test_kl": kl}


class VAERun(Run):
    """A trained VAE (``run.vae``) with its config and data."""

    family = "vae"

    def __init__(self, vae: VAE, config: VAEConfig, data: DataSplits | dict[str, Any],
                 run_dir: str | Path | None = None) -> None:
        super().__init__(config, data, run_dir)
        self.vae = vae

    def modules(self) -> list[torch.nn.Module]:
        return [self.vae]

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` ancestral samples ``z ~ p(z), x ~ p(x | z)`` (levels for digits); for images
        (continuous pixels) the decoder means ``E[x | z]`` in [0, 1], as pictures of a VAE
        are shown (``run.vae.sample(n)`` draws the pixel noise too)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ProbgenError(f"n: must be a positive integer, got {n!r}")
        with torch.random.fork_rng(devices=_cuda(self.vae), enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            was = self.vae.training
            self.vae.eval()
            try:
                if self.kind == "images":
                    return self.vae.sample_images(n).cpu()
                return self.vae.sample(n).cpu()
            finally:
                self.vae.train(was)

    def figures(self, progress: bool = False) -> dict[str, Any]:
        """Importance-sampled test NLL, -ELBO and KL (see
        [`evaluate_vae`][probgen.models.vae.train.evaluate_vae])."""
        c = self.config
        out = evaluate_vae(self.vae, self.splits.test, c.eval_samples, c.seed,
                           refine_steps=c.refine_steps, progress=progress)
        if self.kind == "images":
            out["test_mse"] = reconstruction_mse(self.vae, self.splits.test)
        return out


def _cuda(module: torch.nn.Module) -> list[int]:
    dev = next(module.parameters()).device
    return [dev.index or 0] if dev.type == "cuda" else []


def _build(config: VAEConfig, shape: tuple[int, ...], levels: int | None,
           prior_init: torch.Tensor | None = None) -> VAE:
    from probgen.models.vae.vae import VAE

    return VAE(shape, config.latent_dim, likelihood=config.likelihood, num_levels=levels,
               arch=config.arch, hidden=config.hidden, prior=config.prior,
               num_components=config.num_components, prior_init=prior_init,
               objective=config.objective, beta=config.beta, num_samples=config.num_samples,
               dropout=config.dropout, scale=config.scale, kl_warmup=config.kl_warmup)


def _fit(config: VAEConfig, splits: DataSplits, ctx: TrainContext) -> VAERun:
    levels = splits.levels
    pyro.clear_param_store()
    torch.manual_seed(config.seed)
    prior_init = None
    if config.prior == "vamp":
        prior_init = splits.train.float() / (levels - 1) if levels else splits.train.float()
    vae = _build(config, splits.shape, levels, prior_init)
    ctx.fit(vae, None, splits.train, steps=config.steps, batch_size=config.batch_size,
            lr=config.lr, seed=config.seed, val_data=splits.val, val_every=config.val_every,
            patience=config.patience, log_every=config.val_every,
            sample_fn=vae.sample_images, optimizer=_adamw(config.weight_decay, config.lr))
    kl = latent_kl(vae, splits.val)
    if kl < COLLAPSE_NATS:
        hint = ("learn the scale (--set scale=none) or lower it, or lower beta"
                if config.likelihood in ("mse", "l1") else "train longer or lower beta")
        message = (f"posterior collapse: KL(q(z|x) || p(z)) is {kl:.3g} nats on the validation "
                   f"split, so the decoder ignores z (likelihood={config.likelihood}); {hint}")
        warnings.warn(message, stacklevel=2)
        ctx.say("warning: " + message)
    return VAERun(vae, config, splits, ctx.out)


#: below this many nats of ``KL(q(z | x) || p(z))`` per example the code carries ~nothing
COLLAPSE_NATS = 1.0


@torch.no_grad()
def latent_kl(vae: VAE, x: torch.Tensor, batch_size: int = 500) -> float:
    """Mean ``KL(q(z | x) || p(z))`` in nats per example: the information the code carries
    (closed form, or 10 samples for priors without one).

    Examples:
        >>> from probgen.models.vae.vae import VAE
        >>> latent_kl(VAE((64,), 2, hidden=(8,)), torch.randint(0, 17, (6, 64))) >= 0
        True
    """
    was = vae.training
    vae.eval()
    total = 0.0
    for i in range(0, len(x), batch_size):
        q = vae.encoder(x[i:i + batch_size].to(vae._device()))
        try:
            kl = torch.distributions.kl_divergence(q, vae.prior())
        except NotImplementedError:  # e.g. a mixture prior: a Monte-Carlo estimate
            z = q.sample((10,))
            kl = (q.log_prob(z) - vae.prior().log_prob(z)).mean(0)
        total += float(kl.sum())
    vae.train(was)
    return total / len(x)


@torch.no_grad()
def reconstruction_mse(vae: VAE, x: torch.Tensor, batch_size: int = 500) -> float:
    """Mean squared error per pixel of the mean reconstructions ``decode(encode(x))``, in
    the [0, 1] scale of the images.

    Examples:
        >>> from probgen.models.vae.vae import VAE
        >>> vae = VAE((3, 8, 8), 2, arch="conv", hidden=(4,), likelihood="mse", num_levels=None)
        >>> 0 <= reconstruction_mse(vae, torch.rand(5, 3, 8, 8))
        True
    """
    was = vae.training
    vae.eval()
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(vae._device())
        total += float(((vae.to_unit(vae.reconstruct(xb)) - vae.to_unit(xb)) ** 2).sum())
    vae.train(was)
    return total / x.numel()


def _adamw(weight_decay: float, lr: float) -> Any:
    if weight_decay == 0:
        return "adam"

    def adamw(params: list[torch.Tensor]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    return adamw


def _load(run_dir: Path, config: VAEConfig, data: dict[str, Any]) -> VAERun:
    from probgen.infer import runs

    weights = runs.load_tensors(runs.require_files(run_dir, ("weights.safetensors",), "VAE")
                                / "weights.safetensors")
    vae = _build(config, tuple(data["shape"]), data.get("levels"))
    state = {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")}
    missing, unexpected = vae.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise runs.RunFolderError(f"{run_dir}/weights.safetensors does not match the VAE "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return VAERun(vae.eval(), config, data, run_dir)


#: the defaults on images (``--data shapes``, image folders): a conv VAE with a calibrated
#: (learned-scale) Gaussian decoder, see the module docstring
IMAGE_PRESET: dict[str, Any] = {
    "arch": "conv", "hidden": (32, 64, 128), "latent_dim": 10, "likelihood": "mse",
    "scale": None, "beta": 4.0, "kl_warmup": 500, "batch_size": 64, "steps": 2000, "lr": 1e-3,
    "val_every": 250, "patience": None, "eval_samples": 20, "refine_steps": 0}

FAMILY = Family(
    name="vae",
    description="variational autoencoder: z -> x with a neural decoder, guide x -> z, ELBO",
    config=VAEConfig,
    fit=_fit,
    load=_load,
    kinds=("digits", "images"),
    default_data="digits",
    data_names=("digits", "shapes", "shapes_centred"),
    presets={"images": IMAGE_PRESET},
    fast={"*": {"steps": 60, "val_every": 20, "refine_steps": 5, "eval_samples": 20},
          "images": {"steps": 30, "val_every": 10, "refine_steps": 0, "eval_samples": 5,
                     "kl_warmup": 10,
                     "hidden": (8, 16, 32)}},
)
