"""LongCat-Image (`LongCatImageFamily`): the family's rollout is the pipeline's own image, it trains, and its LoRA
(the class has no `load_lora_weights`) loads into a fresh pipeline's transformer."""

import pytest
import tiny_matrix_pipelines
import torch
from conftest import PROMPTS, tiny_config

from diffusers_nft import NFTTrainer
from diffusers_nft.lora_file import load_lora_file
from diffusers_nft.pipelines import LongCatImageFamily, get_family
from diffusers_nft.sampling import rollout

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
    cond = family.encode_prompts(PAIR, torch.device("cpu"), 16)
    with torch.no_grad():
        ours = family.decode(rollout(lambda x, s: family.predict_velocity(x, s, cond), family.sampling_sigmas(4, shape),
                                     noise, "euler"))
        theirs = _render(pipe, family, noise)
    assert ours.shape == (2, 3, 64, 64)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_it_trains_and_its_lora_loads_into_a_fresh_transformer(tmp_path):
    config = tiny_config(tmp_path, max_steps=2, learning_rate=3e-2)
    trainer = NFTTrainer(_build(), "jpeg_incompressibility", config, PROMPTS)
    trainer.train()
    noise = torch.randn(2, *trainer.family.latent_shape(64), generator=torch.Generator().manual_seed(5))
    with trainer.policy.ema_weights(), torch.no_grad():
        trained = _render(trainer.pipeline, trainer.family, noise)
    fresh = _build()
    family = get_family(fresh)
    with torch.no_grad():
        base = _render(fresh, family, noise)
        load_lora_file(fresh, str(tmp_path), "pytorch_lora_weights.safetensors")
        loaded = _render(fresh, family, noise)
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(loaded, trained, atol=1e-5, rtol=1e-5)
