"""A learned prior over VQ-VAE codes: an ARM (PixelCNN) fitted to the code grids of the data.

A VQ-VAE ([`VQVAE`][probgen.models.vae.vqvae.VQVAE]) trains with a *uniform* prior over its code
grid ``z`` ``(h, w)`` of ``K`` codes; sampling that prior gives noise. Stage two of
van den Oord et al. (2017, sec. 3.2) fits an autoregressive model to the codes of the
training images, ``z(x) = encode_indices(x)``, and samples images ancestrally:
``z ~ p_prior(z)`` (``h w`` network passes), then the decoder's mean ``E[x | e[z]]``.

The prior is an [`ARM`][probgen.models.arm.arm.ARM] with ``num_levels = K`` over the flattened
grid (raster order), trained through [`fit`][probgen.infer.fit.fit] with the likelihood
objective like every ARM.

**Bound.** The guide is a point mass on ``z(x)``; for a discrete ``z`` its entropy is 0, so
the ELBO is ``log p(x | e[z(x)]) + log p_prior(z(x))`` and

    -log p(x) <= -log p(x | e[z(x)]) - log p_prior(z(x))

(also plain from ``p(x) = sum_z p(x | z) p(z) >= p(x | z(x)) p(z(x))``). With the uniform
prior the second term is the constant ``h w log K``;
[`nll_bound`][probgen.models.vae.vq_prior.nll_bound] reports both. The bound is in nats per image
(plus bits per pixel) and is meaningful for the ``"categorical"`` decoder on integer digits (a
proper discrete likelihood), as in
[`train_vqvae_with_prior`][probgen.models.vae.vq_prior.train_vqvae_with_prior].

Examples:
    >>> from probgen.infer.fit import fit
    >>> vq = VQVAE((1, 8, 8), num_codes=8, code_dim=4, hidden=8, likelihood="categorical",
    ...            num_levels=17)
    >>> x = torch.randint(0, 17, (40, 1, 8, 8))
    >>> _ = fit(vq, None, x, steps=2, batch_size=20, progress=False)
    >>> prior = fit_code_prior(vq, x, steps=2, channels=8, layers=2)
    >>> sample_with_prior(vq, prior, 3).shape
    torch.Size([3, 1, 8, 8])
    >>> b = nll_bound(vq, prior, x[:5])
    >>> round(b["uniform_code_nll"], 3), round(16 * math.log(8), 3), b["guide_entropy"]
    (33.271, 33.271, 0.0)
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pyro.poutine as poutine
import torch
from torch import Tensor

from probgen.errors import ProbgenError
from probgen.models.arm.arm import ARM, build_net
from probgen.models.vae.vqvae import VQVAE

__all__ = ["PRIOR_DEFAULTS", "VQVAE_RECIPE", "code_grid", "fit_code_prior", "sample_codes",
           "sample_with_prior", "nll_bound", "train_vqvae_with_prior"]

#: Training recipe of the code prior (keyword arguments of `fit_code_prior`).
PRIOR_DEFAULTS: dict[str, Any] = {"channels": 64, "layers": 4, "dropout": 0.1,
                                  "input_dropout": 0.1, "ema_decay": 0.99, "batch_size": 64,
                                  "lr": 3e-3, "val_every": 100, "patience": 5}


def _check_vqvae(vqvae: Any) -> VQVAE:
    if not isinstance(vqvae, VQVAE):
        raise ProbgenError(f"vqvae: expected a VQVAE, got {type(vqvae).__name__}")
    return vqvae


def _check_pair(vqvae: Any, prior: Any) -> tuple[VQVAE, ARM]:
    vq = _check_vqvae(vqvae)
    if not isinstance(prior, ARM):
        raise ProbgenError(f"prior: expected an ARM, got {type(prior).__name__}")
    h, w = vq.grid
    if (prior.dims, prior.num_levels) != (h * w, vq.quantizer.num_codes):
        raise ProbgenError(
            f"prior: models {prior.dims} variables of {prior.num_levels} levels, but the "
            f"VQ-VAE has a {h}x{w} grid of {vq.quantizer.num_codes} codes")
    return vq, prior


def _check_images(x: Any, vq: VQVAE, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise ProbgenError(f"{name}: expected a non-empty tensor of images, got {x!r:.60}")
    if math.prod(x.shape[1:]) != math.prod(vq.data_shape):
        raise ProbgenError(f"{name}: each image must have shape {vq.data_shape}, "
                           f"got {tuple(x.shape[1:])}")
    return x.reshape(-1, *vq.data_shape)


def code_grid(vqvae: VQVAE, x: Tensor) -> Tensor:
    """The prior's data: code indices of images ``x``, flattened in raster order ``(N, h*w)``.

    Examples:
        >>> vq = VQVAE((1, 8, 8), num_codes=8, code_dim=4, hidden=8)
        >>> code_grid(vq, torch.rand(5, 1, 8, 8)).shape
        torch.Size([5, 16])
    """
    vq = _check_vqvae(vqvae)
    x = _check_images(x, vq, "x")
    return vq.encode_indices(x).flatten(1)


def fit_code_prior(vqvae: VQVAE, x_train: Tensor, x_val: Tensor | None = None,
                   net: str = "pixelcnn", steps: int = 3000, seed: int = 0, *,
                   progress: bool = False, **options: Any) -> ARM:
    """Fit an ARM prior ``p_prior(z)`` to the code grids of ``x_train``; return it in eval mode.

    Args:
        vqvae: a trained VQ-VAE (only its encoder and codebook are used; not modified).
        x_train: training images.
        x_val: validation images; with them training stops early on the validation NLL
            of the codes and keeps the best (EMA) weights.
        net: the causal network, as [`build_net`][probgen.models.arm.arm.build_net] names it.
        steps: optimisation steps of [`fit`][probgen.infer.fit.fit].
        seed: the random seed.
        progress: show a progress bar.
        options: entries of `PRIOR_DEFAULTS` to replace.

    The returned ARM has its EMA weights folded in
    ([`ARM.finalize`][probgen.models.arm.arm.ARM.finalize]).

    Examples:
        >>> vq = VQVAE((1, 8, 8), num_codes=8, code_dim=4, hidden=8)
        >>> prior = fit_code_prior(vq, torch.rand(32, 1, 8, 8), steps=2, channels=8, layers=2)
        >>> prior.dims, prior.num_levels
        (16, 8)
    """
    from probgen.infer.fit import fit

    vq = _check_vqvae(vqvae)
    unknown = sorted(set(options) - set(PRIOR_DEFAULTS))
    if unknown:
        raise ProbgenError(f"options: unknown {unknown}; choose from {sorted(PRIOR_DEFAULTS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ProbgenError(f"steps must be a positive integer, got {steps!r}")
    cfg = {**PRIOR_DEFAULTS, **options}
    codes = code_grid(vq, x_train)
    val = None if x_val is None else code_grid(vq, x_val)
    torch.manual_seed(seed)
    prior = ARM(build_net(net, vq.grid, vq.quantizer.num_codes, cfg["channels"], cfg["layers"],
                          cfg["dropout"]),
                input_dropout=cfg["input_dropout"], ema_decay=cfg["ema_decay"],
                name="vq-code-prior")
    every = min(int(cfg["val_every"]), steps)
    fit(prior, None, codes, objective="likelihood", steps=steps,
        batch_size=min(int(cfg["batch_size"]), len(codes)), lr=cfg["lr"], seed=seed,
        progress=progress, val_data=val, val_every=every if val is not None else None,
        patience=cfg["patience"] if val is not None else None, log_every=every)
    prior.finalize()
    return prior.eval()


def sample_codes(vqvae: VQVAE, prior: ARM, n: int, temperature: float = 1.0) -> Tensor:
    """``n`` code grids ``(n, h, w)`` drawn ancestrally from the prior.

    Examples:
        >>> vq = VQVAE((1, 8, 8), num_codes=8, code_dim=4, hidden=8)
        >>> prior = ARM(build_net("pixelcnn", vq.grid, 8, 8, 2))
        >>> sample_codes(vq, prior, 2).shape
        torch.Size([2, 4, 4])
    """
    vq, prior = _check_pair(vqvae, prior)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ProbgenError(f"n must be a positive integer, got {n!r}")
    return prior.sample(n, temperature=temperature).reshape(n, *vq.grid)


def sample_with_prior(vqvae: VQVAE, prior: ARM, n: int, temperature: float = 1.0) -> Tensor:
    """``n`` images ``(n, C, H, W)``: codes from the prior, decoded to the decoder's mean.

    Examples:
        >>> vq = VQVAE((1, 8, 8), num_codes=8, code_dim=4, hidden=8)
        >>> prior = ARM(build_net("made", vq.grid, 8, 8, 1))
        >>> sample_with_prior(vq, prior, 2).shape
        torch.Size([2, 1, 8, 8])
    """
    return _check_vqvae(vqvae).decode_indices(sample_codes(vqvae, prior, n, temperature))


def _mean_stderr(v: Tensor) -> tuple[float, float]:
    sd = float(v.std()) if v.numel() > 1 else 0.0
    return float(v.mean()), sd / math.sqrt(v.numel())


@torch.no_grad()
def nll_bound(vqvae: VQVAE, prior: ARM, x: Tensor) -> dict[str, Any]:
    """Upper bound on ``-log p(x)`` (nats per image, mean over ``x``), learned vs uniform prior.

    ``-log p(x) <= -log p(x | e[z(x)]) - log p_prior(z(x))``: the ELBO of the point-mass
    guide, whose entropy is 0. ``p(x | e[z])`` and the uniform prior are read off the
    VQ-VAE's own Pyro model (traced with ``codes`` fixed to ``z(x)``).

    Returns a dict: ``nll_bound``, ``nll_bound_stderr``, ``bits_per_dim`` (learned prior),
    ``uniform_nll_bound``, ``uniform_bits_per_dim``, the terms ``recon_nll``
    (``-log p(x | e[z(x)])``), ``code_nll`` (``-log p_prior(z(x))``), ``uniform_code_nll``
    (``h w log K``), ``guide_entropy`` (0.0), ``n`` and ``kind`` (``"upper bound"``).

    Examples:
        >>> vq = VQVAE((1, 8, 8), num_codes=8, code_dim=4, hidden=8, likelihood="categorical",
        ...            num_levels=17)
        >>> prior = ARM(build_net("made", vq.grid, 8, 8, 1))
        >>> b = nll_bound(vq, prior, torch.randint(0, 17, (4, 1, 8, 8)))
        >>> b["kind"], b["nll_bound"] >= b["recon_nll"]
        ('upper bound', True)
    """
    vq, prior = _check_pair(vqvae, prior)
    x = _check_images(x, vq, "x")
    codes = vq.encode_indices(x)  # (B, h, w): the point mass of the guide
    trace = poutine.trace(poutine.condition(vq.model, data={"codes": codes.float()})).get_trace(x)
    recon = -trace.nodes["x"]["fn"].log_prob(x)  # (B,)
    uniform_codes = -trace.nodes["codes"]["fn"].log_prob(codes.float())  # (B,) = h w log K
    learned_codes = -prior.log_prob(codes.flatten(1))  # (B,)
    bound, stderr = _mean_stderr(recon + learned_codes)
    uniform = float((recon + uniform_codes).mean())
    per_dim = math.prod(vq.data_shape) * math.log(2)
    return {"kind": "upper bound", "nll_bound": bound, "nll_bound_stderr": stderr,
            "bits_per_dim": bound / per_dim, "uniform_nll_bound": uniform,
            "uniform_bits_per_dim": uniform / per_dim, "recon_nll": float(recon.mean()),
            "code_nll": float(learned_codes.mean()),
            "uniform_code_nll": float(uniform_codes.mean()), "guide_entropy": 0.0,
            "n": int(x.shape[0])}


#: The VQ-VAE of `train_vqvae_with_prior` (as in tutorial 06) and its ``fit`` settings.
VQVAE_RECIPE: dict[str, Any] = {"num_codes": 32, "code_dim": 16, "hidden": 64, "downsample": 1,
                                "steps": 800, "batch_size": 100, "lr": 2e-3}


def train_vqvae_with_prior(out: str | Path | None = None, fast: bool = False, seed: int = 0,
                           *, prior_steps: int | None = None, progress: bool = False,
                           num_samples: int = 1000) -> dict[str, Any]:
    """Train a VQ-VAE on the digits, then its code prior; return test bounds and sample FDs.

    The VQ-VAE (categorical decoder over the 17 levels, `VQVAE_RECIPE`) trains with
    the uniform code prior; the PixelCNN prior then fits the training codes with early
    stopping on the validation codes. Metrics: the test NLL bound with the learned and the
    uniform prior (nats per image, bits per pixel) and the Fréchet distance to the test
    split of ``num_samples`` decoded (mean-image) samples under either prior.

    With ``out`` it writes ``metrics.json``, ``samples.png`` (64 learned-prior samples),
    ``vqvae.safetensors`` and ``prior.safetensors``.

    Examples:
        >>> m = train_vqvae_with_prior(fast=True, num_samples=50)
        >>> m["kind"], m["test"]["nll_bound"] < m["test"]["uniform_nll_bound"]
        ('upper bound', True)
    """
    from probgen.data.digits import load_digits
    from probgen.infer import runs
    from probgen.infer.fit import fit
    from probgen.metrics.frechet import digits_frechet_distance
    from probgen.metrics.grids import save_grid

    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ProbgenError(f"num_samples must be an integer >= 2, got {num_samples!r}")
    out = Path(out) if out is not None else None
    if out is not None and (out / "metrics.json").exists():
        raise ProbgenError(f"out: {out} already holds a run; choose a new folder")
    t0 = time.perf_counter()
    train, val, test = (load_digits(s, "levels", image=True) for s in ("train", "val", "test"))
    r = VQVAE_RECIPE
    torch.manual_seed(seed)
    vq = VQVAE((1, 8, 8), r["num_codes"], r["code_dim"], hidden=r["hidden"],
               downsample=r["downsample"], likelihood="categorical", num_levels=17)
    vq_steps = 40 if fast else r["steps"]
    fit(vq, None, train, steps=vq_steps, batch_size=r["batch_size"], lr=r["lr"], seed=seed,
        progress=progress, log_every=max(vq_steps // 4, 1))
    vq.eval()
    steps = prior_steps if prior_steps is not None else (30 if fast else 3000)
    prior = fit_code_prior(vq, train, val, steps=steps, seed=seed, progress=progress,
                           **({"channels": 16, "layers": 2} if fast else {}))
    bound = nll_bound(vq, prior, test)
    torch.manual_seed(seed)
    samples = sample_with_prior(vq, prior, num_samples)
    uniform = vq.sample(num_samples)
    metrics = {"kind": "upper bound", "test": bound, "val": nll_bound(vq, prior, val),
               "fd_learned_prior": digits_frechet_distance(samples.clamp(0, 1)),
               "fd_uniform_prior": digits_frechet_distance(uniform.clamp(0, 1)),
               "codebook_usage": vq.codebook_usage(test), "vqvae_steps": vq_steps,
               "prior_steps": steps, "fast": fast, "seed": seed,
               "time_s": time.perf_counter() - t0}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        runs.save_tensors(out / "vqvae.safetensors", vq.state_dict())
        runs.save_tensors(out / "prior.safetensors", prior.state_dict())
        save_grid(samples[:64], out / "samples.png")
        runs.atomic_write_json(out / "metrics.json", metrics)
    return metrics
