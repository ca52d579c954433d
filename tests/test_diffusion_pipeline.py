"""A pretrained-style latent text-to-image pipeline taken apart: a tiny randomly initialised
diffusers pipeline is built, saved to a temporary folder, loaded from there, and the
denoising loop run by hand with probgen's DDIM step equals the pipeline's own call."""

from __future__ import annotations

import pytest
import torch

from probgen.errors import ProbgenError
from probgen.models.diffusion.pipeline import diffusers_available

pytestmark = pytest.mark.skipif(
    not diffusers_available(),
    reason='the optional extra is not installed: pip install "probgen[diffusers]"')


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from probgen.models.diffusion.pipeline import load_pipeline, make_tiny_pipeline

    folder = make_tiny_pipeline(tmp_path_factory.mktemp("pipe") / "tiny")
    assert (folder / "model_index.json").is_file()
    return load_pipeline(folder)


def test_components_and_parameter_counts(pipe):
    from probgen.models.diffusion.pipeline import components

    rows = {r["name"]: r for r in components(pipe)}
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= set(rows)
    for name in ("unet", "vae", "text_encoder"):
        module = getattr(pipe, name)
        assert rows[name]["parameters"] == sum(p.numel() for p in module.parameters()) > 0
    assert rows["tokenizer"]["parameters"] == 0 and rows["scheduler"]["type"] == "DDIMScheduler"


def test_timesteps_follow_the_scheduler(pipe):
    from probgen.models.diffusion.pipeline import ddim_timesteps

    pipe.scheduler.set_timesteps(7)
    assert [t for t, _ in ddim_timesteps(pipe.scheduler.config, 7)] == \
        pipe.scheduler.timesteps.tolist()


@pytest.mark.parametrize("guidance, eta", [(3.0, 0.0), (1.0, 0.0), (4.0, 1.0)])
def test_the_loop_by_hand_equals_the_pipeline(pipe, guidance, eta):
    from probgen.models.diffusion.pipeline import generate

    prompts = ["a seven", "two cats"]
    mine = generate(pipe, prompts, steps=5, guidance=guidance, seed=3, eta=eta)
    ref = pipe(prompts, num_inference_steps=5, guidance_scale=guidance, eta=eta,
               generator=torch.Generator().manual_seed(3), output_type="pt").images
    assert mine.shape == ref.shape == (2, 3, 16, 16)
    assert torch.allclose(mine, ref, atol=1e-5)
    # the prompt reaches the image
    other = generate(pipe, ["a dog", "two cats"], steps=5, guidance=guidance, seed=3, eta=eta)
    assert not torch.allclose(other[0], mine[0]) and torch.allclose(other[1], mine[1], atol=1e-5)


def test_a_folder_that_is_not_a_pipeline_is_refused(tmp_path):
    from probgen.models.diffusion.pipeline import load_pipeline

    with pytest.raises(ProbgenError, match="model_index.json"):
        load_pipeline(tmp_path)
