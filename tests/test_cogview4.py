"""CogView4 (`CogView4Family`): its transformer sees the unshifted timestep of a shifted noise level; the family's
rollout is the pipeline's own, it trains, and its LoRA loads with `load_lora_weights`."""

import pytest
import torch

from diffusers_nft.pipelines import CogView4Family, get_family

import tiny_matrix_pipelines
from conftest import check_the_lora_reproduces_the_trained_policy, euler_rollout

PAIR = ["a red cat", "a blue dog"]


def _build():
    pipe = tiny_matrix_pipelines.build_tiny_cogview4_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _render(pipe, noise):
    return pipe(prompt=PAIR, latents=noise, height=64, width=64, num_inference_steps=4, output_type="latent",
                max_sequence_length=16, guidance_scale=1.0, return_dict=False)[0]


def test_the_rollout_and_its_timesteps_are_the_pipelines_own_at_a_shift_far_from_one():
    pipe = _build()
    family = get_family(pipe)
    assert isinstance(family, CogView4Family)
    shape = family.latent_shape(64)
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    sigmas = family.sampling_sigmas(4, shape)
    ours = euler_rollout(family, PAIR, noise, 4)
    with torch.no_grad():
        theirs = _render(pipe, noise)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # the pipeline's unshifted timesteps (1000, 667, 334, 1) at its shifted sigmas (1, 0.467, 0.180, 0.0004)
    torch.testing.assert_close(family.timestep(sigmas[:-1], shape), pipe.scheduler.timesteps.double(), atol=1e-3,
                               rtol=0)
    assert abs(float(sigmas[1]) - 2 / 3) > 0.1  # the shift is far from 1 at this size


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_it_trains_and_its_lora_loads_with_load_lora_weights(tmp_path):
    noise = torch.randn(2, *CogView4Family(_build()).latent_shape(64), generator=torch.Generator().manual_seed(5))
    check_the_lora_reproduces_the_trained_policy(
        _build, lambda pipe: _render(pipe, noise),
        lambda pipe, folder: pipe.load_lora_weights(folder, weight_name="pytorch_lora_weights.safetensors"), tmp_path)
