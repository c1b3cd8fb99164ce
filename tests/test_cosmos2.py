"""Cosmos 2 text-to-image (`Cosmos2Family`): its variance-exploding loop read as a rectified flow. The family's
Euler steps are the pipeline's own states (`y / (1 + s)`), it trains, and its LoRA (the class has no
`load_lora_weights`) loads into a fresh pipeline's transformer."""

import pytest
import torch

from diffusers_nft.lora_file import load_lora_file
from diffusers_nft.pipelines import Cosmos2Family, get_family

import tiny_matrix_pipelines
from conftest import check_the_lora_reproduces_the_trained_policy

PAIR = ["a red cat", "a blue dog"]


def _build():
    pipe = tiny_matrix_pipelines.build_tiny_cosmos2_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_states(pipe, noise, steps=5):
    """The pipeline's latents after each step, as rectified-flow states `y / (1 + s)`."""
    seen = []
    pipe(prompt=PAIR, latents=noise, height=64, width=64, num_inference_steps=steps, output_type="latent",
         max_sequence_length=16, guidance_scale=1.0,
         callback_on_step_end=lambda p, i, t, kwargs: seen.append(kwargs["latents"].clone()) or {})
    sigmas = pipe.scheduler.sigmas
    return [y / (1 + sigmas[i + 1]) for i, y in enumerate(seen)]


def test_the_familys_euler_steps_are_the_pipelines_states():
    pipe = _build()
    family = get_family(pipe)
    assert isinstance(family, Cosmos2Family)
    shape = family.latent_shape(64)
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    cond = family.encode_prompts(PAIR, torch.device("cpu"), 16)
    with torch.no_grad():
        sigmas = family.sampling_sigmas(5, shape)
        x, ours = family.start_latents(noise), []
        for i in range(5):
            x = x + (sigmas[i + 1] - sigmas[i]).float() * family.predict_velocity(x, sigmas[i].float().expand(2), cond)
            ours.append(x)
        theirs = _pipeline_states(pipe, noise)
        images = family.decode(ours[-1])
    assert abs(float(sigmas[0]) - 80 / 81) < 1e-9 and float(sigmas[-1]) == 0
    for k in range(4):  # the pipeline's fifth step is a no-op at s = 0.002; ours goes on to t = 0
        torch.testing.assert_close(ours[k], theirs[k], atol=1e-5, rtol=0)
    assert images.shape == (2, 3, 64, 64)


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_it_trains_and_its_lora_loads_into_a_fresh_transformer(tmp_path):
    noise = torch.randn(2, *Cosmos2Family(_build()).latent_shape(64), generator=torch.Generator().manual_seed(5))
    check_the_lora_reproduces_the_trained_policy(
        _build, lambda pipe: _pipeline_states(pipe, noise)[-1],
        lambda pipe, folder: load_lora_file(pipe, folder, "pytorch_lora_weights.safetensors"), tmp_path)
