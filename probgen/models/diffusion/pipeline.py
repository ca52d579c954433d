"""A latent text-to-image diffusion pipeline taken apart (homework 5), with the optional
extra ``pip install "probgen[diffusers]"``.

A diffusers text-to-image pipeline folder (``model_index.json`` plus one sub-folder per
component, as Stable Diffusion ships) is loaded from a LOCAL path, never downloaded
([`load_pipeline`][probgen.models.diffusion.pipeline.load_pipeline]);
[`components`][probgen.models.diffusion.pipeline.components] lists its parts with their
parameter counts; [`generate`][probgen.models.diffusion.pipeline.generate] runs the denoising
loop by hand:

1. the tokenizer and the text encoder turn the prompt (and the empty prompt, for guidance)
   into the sequence of embeddings the U-Net cross-attends to;
2. ``x_T ~ N(0, I)`` in the VAE's latent space;
3. for each step of the scheduler's spacing, the U-Net predicts the noise for both
   embeddings, classifier-free guidance combines them
   ([`guided`][probgen.models.diffusion.pipeline.guided]), and probgen's
   [`ddim_step`][probgen.models.diffusion.samplers.ddim_step] (Song et al. 2021, eq. 12) moves to
   the next step, using the pipeline's ``alphas_cumprod``;
4. the VAE decodes the latents ``z / scaling_factor`` to an image.

With the same seed this equals the pipeline's own call with a DDIM scheduler
(``tests/test_diffusion_pipeline.py`` checks it). No real weights ship with probgen:
[`make_tiny_pipeline`][probgen.models.diffusion.pipeline.make_tiny_pipeline] writes a randomly
initialised pipeline with Stable Diffusion's layout (tiny U-Net, VAE, CLIP text encoder and a
tokenizer built locally) for tests and the tutorial; point ``load_pipeline`` at a real one
(e.g. a downloaded Stable Diffusion folder) to take that apart the same way.

Examples:
    >>> import tempfile
    >>> folder = make_tiny_pipeline(tempfile.mkdtemp() + "/tiny")  # doctest: +SKIP
    >>> pipe = load_pipeline(folder)  # doctest: +SKIP
    >>> generate(pipe, ["a seven"], steps=5, seed=0).shape  # doctest: +SKIP
    torch.Size([1, 3, 16, 16])
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from probgen.errors import ProbgenError
from probgen.models.diffusion.samplers import ddim_step
from probgen.models.diffusion.schedules import to_x0_eps

__all__ = ["diffusers_available", "load_pipeline", "components", "encode_prompt",
           "ddim_timesteps", "guided", "generate", "make_tiny_pipeline"]

_PREDICTION = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0"}


def diffusers_available() -> bool:
    """Whether the optional ``diffusers`` and ``transformers`` packages are installed."""
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No loading / saving progress bars from diffusers and transformers inside, and no
    notices about optional backends (e.g. torchvision for image processors we do not use)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    level = tlog.get_verbosity()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    tlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.enable_progress_bar()
        tlog.enable_progress_bar()
        tlog.set_verbosity(level)


def _require() -> None:
    if not diffusers_available():
        raise ProbgenError('diffusers: not installed; pip install "probgen[diffusers]"')


def load_pipeline(path: str | os.PathLike, scheduler: str = "ddim") -> Any:
    """The text-to-image pipeline in the local folder ``path`` (nothing is downloaded);
    ``scheduler="ddim"`` swaps in a DDIM scheduler with the saved one's noise schedule."""
    _require()
    with _quiet():
        from diffusers import DDIMScheduler, DiffusionPipeline

    folder = Path(path)
    if not (folder / "model_index.json").is_file():
        raise ProbgenError(f"path: {folder} is not a diffusers pipeline folder "
                           "(no model_index.json)")
    with _quiet():
        pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True,
                                                 low_cpu_mem_usage=False)
    missing = [c for c in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
               if getattr(pipe, c, None) is None]
    if missing:
        raise ProbgenError(f"path: {folder} is not a latent text-to-image pipeline "
                           f"(no {', '.join(missing)})")
    if scheduler == "ddim":
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    elif scheduler != "saved":
        raise ProbgenError(f"scheduler: 'ddim' or 'saved', got {scheduler!r}")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def components(pipe: Any) -> list[dict[str, Any]]:
    """``[{"name", "type", "parameters"}, ...]``: every component of the pipeline and its
    parameter count (0 for the tokenizer and the scheduler, which have none)."""
    rows = []
    for name in pipe.components:
        comp = getattr(pipe, name)
        if comp is None:
            continue
        n = sum(p.numel() for p in comp.parameters()) if isinstance(comp, torch.nn.Module) else 0
        rows.append({"name": name, "type": type(comp).__name__, "parameters": int(n)})
    return rows


@torch.no_grad()
def encode_prompt(pipe: Any, prompts: list[str]) -> Tensor:
    """Text-encoder states ``(N, L, D)`` of the prompts, padded to the tokenizer's length."""
    if isinstance(prompts, str) or not prompts:
        raise ProbgenError("prompts: need a non-empty list of strings")
    tok = pipe.tokenizer
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    return pipe.text_encoder(ids.to(pipe.text_encoder.device))[0]


def ddim_timesteps(scheduler_config: Any, steps: int) -> list[tuple[int, int]]:
    """``(t, t_prev)`` pairs of diffusers' DDIM spacing ("leading": ``t = i * (T // steps) +
    offset``, visited downwards; ``t_prev = t - T // steps``, ``-1`` meaning the final
    ``alpha_bar``)."""
    cfg = scheduler_config
    T = int(cfg["num_train_timesteps"])
    if not 1 <= steps <= T:
        raise ProbgenError(f"steps: must be in 1..{T}, got {steps}")
    spacing = cfg.get("timestep_spacing", "leading")
    if spacing != "leading":
        raise ProbgenError(f"scheduler: timestep_spacing {spacing!r} is not supported "
                           "(the loop by hand follows 'leading', Stable Diffusion's)")
    ratio = T // steps
    ts = [i * ratio + int(cfg.get("steps_offset", 0)) for i in range(steps)][::-1]
    return [(t, t - ratio) for t in ts]


def guided(eps_uncond: Tensor, eps_cond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance, ``eps_u + scale (eps_c - eps_u)`` (Ho & Salimans 2022)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


@torch.no_grad()
def generate(pipe: Any, prompts: list[str], steps: int = 50, guidance: float = 7.5,
             seed: int = 0, eta: float = 0.0, height: int | None = None,
             width: int | None = None, return_latents: bool = False) -> Tensor:
    """Images ``(N, 3, H, W)`` in ``[0, 1]`` for ``prompts``, by the loop by hand (module
    docstring); the latents instead with ``return_latents``."""
    _require()
    cfg = pipe.scheduler.config
    kind = _PREDICTION.get(cfg.get("prediction_type", "epsilon"))
    if kind is None:
        raise ProbgenError(f"scheduler: unknown prediction_type {cfg['prediction_type']!r}")
    if cfg.get("thresholding", False):
        raise ProbgenError("scheduler: dynamic thresholding is not supported by the loop")
    unet, vae = pipe.unet, pipe.vae
    device = unet.device
    scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    height = height or unet.config.sample_size * scale_factor
    width = width or unet.config.sample_size * scale_factor
    cond = encode_prompt(pipe, list(prompts))
    use_cfg = guidance > 1.0
    if use_cfg:
        context = torch.cat([encode_prompt(pipe, [""] * len(prompts)), cond])
    else:
        context = cond
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shape = (len(prompts), unet.config.in_channels, height // scale_factor, width // scale_factor)
    x = torch.randn(shape, generator=gen).to(device)
    ab_all = pipe.scheduler.alphas_cumprod.to(device)
    final = torch.tensor(1.0) if cfg.get("set_alpha_to_one", True) else ab_all[0]
    for t, prev in ddim_timesteps(cfg, steps):
        inp = torch.cat([x, x]) if use_cfg else x
        out = unet(inp, t, encoder_hidden_states=context).sample
        if use_cfg:
            uncond, c = out.chunk(2)
            out = guided(uncond, c, guidance)
        ab_t = ab_all[t]
        ab_s = ab_all[prev] if prev >= 0 else final.to(device)
        x0, eps = to_x0_eps(out, kind, x, ab_t)
        if cfg.get("clip_sample", False):
            r = float(cfg.get("clip_sample_range", 1.0))
            x0 = x0.clamp(-r, r)
            eps = (x - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
        noise = torch.randn(x.shape, generator=gen).to(device) if eta > 0 else None
        x = ddim_step(x, x0, eps, ab_t, ab_s, eta, noise)
    if return_latents:
        return x
    image = vae.decode(x / vae.config.scaling_factor).sample
    return (image / 2 + 0.5).clamp(0, 1)


def _tiny_tokenizer(folder: Path, max_length: int) -> Any:
    from transformers import CLIPTokenizer

    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in chars:
            vocab[c + suffix] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         model_max_length=max_length)


def make_tiny_pipeline(path: str | os.PathLike, seed: int = 0, sample_size: int = 8) -> Path:
    """Write a randomly initialised Stable-Diffusion-style pipeline to the folder ``path``
    (a few hundred thousand parameters; character-level CLIP tokenizer built locally) and
    return it. For tests and the tutorial: its images are noise, its parts are real."""
    _require()
    with _quiet():
        from diffusers import (
            AutoencoderKL,
            DDIMScheduler,
            StableDiffusionPipeline,
            UNet2DConditionModel,
        )
        from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(path)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
        attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                        block_out_channels=(16, 32), norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=80, hidden_size=16, intermediate_size=32, num_attention_heads=2,
        num_hidden_layers=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
        pad_token_id=1))
    tokenizer = _tiny_tokenizer(folder / "_vocab", max_length=16)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    with _quiet():
        pipe.save_pretrained(str(folder))
    for f in (folder / "_vocab").iterdir():
        f.unlink()
    (folder / "_vocab").rmdir()
    return folder
