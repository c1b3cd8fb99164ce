"""HunyuanVideo 1.5 text-to-video (`HunyuanVideo15Family`): the family's rollout is the pipeline's own, it trains
with every solver on videos scored frame by frame, and its LoRA (the class has no `load_lora_weights`) loads into a
fresh pipeline's transformer and reproduces the trained policy."""

import pytest
import torch

from diffusers_nft import NFTTrainer
from diffusers_nft.hub import call_snippet
from diffusers_nft.lora_file import load_lora_file
from diffusers_nft.pipelines import HunyuanVideo15Family, get_family
from diffusers_nft.sampling import rollout

import tiny_matrix_pipelines
from conftest import PROMPTS, count_sampling_calls, expected_sampling_calls, step_and_check_the_soft_update, \
    tiny_config

FRAMES = 5  # 3 latent frames


def _build():
    pipe = tiny_matrix_pipelines.build_tiny_hunyuan_video15_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _render(pipe, family, steps=4):
    noise = torch.randn(1, *family.latent_shape(64), generator=torch.Generator().manual_seed(5))
    return pipe(prompt="a red cat", latents=noise, num_frames=FRAMES, num_inference_steps=steps, height=64, width=64,
                output_type="pt", **family.cfg_free_call_kwargs()).frames


def test_the_familys_euler_rollout_is_the_pipelines_own_video():
    pipe = _build()
    family = get_family(pipe, num_frames=FRAMES)
    assert isinstance(family, HunyuanVideo15Family) and not pipe.guider._enabled  # its guider would guide
    shape = family.latent_shape(64)
    assert shape == (4, 3, 16, 16)
    noise = torch.randn(1, *shape, generator=torch.Generator().manual_seed(5))
    cond = family.encode_prompts(["a red cat"], torch.device("cpu"), 16)
    with torch.no_grad():
        ours = rollout(lambda x, s: family.predict_velocity(x, s, cond), family.sampling_sigmas(4, shape), noise,
                       "euler")
        videos = family.decode(ours)
    assert videos.shape == (1, FRAMES, 3, 64, 64)
    torch.testing.assert_close(videos, _render(pipe, family), atol=1e-4, rtol=0)
    pipe.scheduler.set_timesteps(sigmas=family.schedule_sigmas(6))
    torch.testing.assert_close(family.sampling_sigmas(6, shape), pipe.scheduler.sigmas.double())


@pytest.mark.parametrize("sampler", ["euler"] + [pytest.param(s, marks=pytest.mark.slow)
                                                 for s in ("dpm_solver", "heun", "unipc")])
@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_it_trains_on_videos_with_every_solver(sampler, tmp_path):
    config = tiny_config(tmp_path, max_steps=1, sampler=sampler, num_frames=FRAMES, prompts_per_iteration=1,
                         group_size=4, reward_frames=2)
    trainer = NFTTrainer(_build(), ["jpeg_incompressibility", "temporal_consistency"], config, PROMPTS)
    calls = count_sampling_calls(trainer)
    last = step_and_check_the_soft_update(trainer)
    assert calls == [expected_sampling_calls(config)] and last["grad_norm"] > 0
    assert 0 < last["reward/temporal_consistency/mean"] <= 1


@pytest.mark.slow  # a gallery of one video per pipeline call
def test_its_lora_loads_into_a_fresh_pipelines_transformer_and_the_card_says_how(tmp_path):
    config = tiny_config(tmp_path, max_steps=2, learning_rate=3e-2, num_frames=FRAMES)
    trainer = NFTTrainer(_build(), "jpeg_incompressibility", config, PROMPTS)
    trainer.train()
    family = trainer.family
    with trainer.policy.ema_weights(), torch.no_grad():
        trained = _render(trainer.pipeline, family)
    fresh = _build()
    fresh_family = get_family(fresh, num_frames=FRAMES)
    base = _render(fresh, fresh_family)
    load_lora_file(fresh, str(tmp_path), "pytorch_lora_weights.safetensors")
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(_render(fresh, fresh_family), trained, atol=1e-5, rtol=1e-5)
    snippet = call_snippet("HunyuanVideo15Pipeline", "hunyuanvideo-community/HunyuanVideo-1.5", "me/lora", "a cat",
                           {"num_frames": FRAMES})
    assert "pipe.transformer.load_lora_adapter(" in snippet and "pipe.guider.disable()" in snippet
