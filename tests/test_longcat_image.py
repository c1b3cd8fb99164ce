"""LongCat-Image (`LongCatImageFamily`): the family's rollout is the pipeline's own image, it trains, and its LoRA
(the class has no `load_lora_weights`) loads into a fresh pipeline's transformer."""

import pytest
import tiny_matrix_pipelines
import torch
from conftest import check_the_lora_reproduces_the_trained_policy, euler_rollout

from diffusers_nft.lora_file import load_lora_file
from diffusers_nft.pipelines import LongCatImageFamily, get_family

PAIR = ["a red cat", "a blue dog"]


def _build():
    pipe = tiny_matrix_pipelines.build_tiny_longcat_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _render(pipe, family, noise):
    return pipe(prompt=PAIR, latents=noise, height=64, width=64, num_inference_steps=4, output_type="pt",
                return_dict=False, **family.cfg_free_call_kwargs())[0]


def test_the_rollout_is_the_pipelines_own_image_without_its_prompt_rewrite():
    pipe = _build()
    family = get_family(pipe)
    assert isinstance(family, LongCatImageFamily) and family.cfg_free_call_kwargs()["enable_prompt_rewrite"] is False
    shape = family.latent_shape(64)
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = family.decode(euler_rollout(family, PAIR, noise, 4))
        theirs = _render(pipe, family, noise)
    assert ours.shape == (2, 3, 64, 64)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_it_trains_and_its_lora_loads_into_a_fresh_transformer(tmp_path):
    noise = torch.randn(2, *LongCatImageFamily(_build()).latent_shape(64), generator=torch.Generator().manual_seed(5))
    check_the_lora_reproduces_the_trained_policy(
        _build, lambda pipe: _render(pipe, get_family(pipe), noise),
        lambda pipe, folder: load_lora_file(pipe, folder, "pytorch_lora_weights.safetensors"), tmp_path)
