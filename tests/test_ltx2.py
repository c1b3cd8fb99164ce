"""LTX-2 text-to-video (`LTX2Family`): video and audio latents sampled and trained as one state; the family's
rollout is the pipeline's own video, it trains with every solver on videos scored frame by frame, and its LoRA
loads with `load_lora_weights` and reproduces the trained policy."""

import pytest
import torch

from diffusers_nft import NFTTrainer
from diffusers_nft.pipelines import LTX2Family, get_family
from diffusers_nft.sampling import rollout

import tiny_matrix_pipelines
from conftest import PROMPTS, count_sampling_calls, expected_sampling_calls, step_and_check_the_soft_update, \
    tiny_config

FRAMES = 9  # 2 latent frames; 9 audio latent frames


def _build():
    pipe = tiny_matrix_pipelines.build_tiny_ltx2_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _render(pipe, family, noise):
    video, audio, _ = family._split(noise)
    return pipe(prompt=["a red cat", "a blue dog"], latents=video, audio_latents=audio, num_frames=FRAMES,
                num_inference_steps=4, height=64, width=64, max_sequence_length=16, output_type="pt",
                return_dict=False, **family.cfg_free_call_kwargs())[0]


def _noise(family):
    return torch.randn(2, *family.latent_shape(64), generator=torch.Generator().manual_seed(5))


def test_the_joint_rollout_is_the_pipelines_own_video():
    pipe = _build()
    family = get_family(pipe, num_frames=FRAMES)
    assert isinstance(family, LTX2Family)
    shape = family.latent_shape(64)
    video, audio, _ = family._split(torch.zeros(1, *shape))
    assert video.shape == (1, 2 * 8 * 8, 4) and audio.shape == (1, 9, 4)  # packed video and audio tokens
    noise = _noise(family)
    cond = family.encode_prompts(["a red cat", "a blue dog"], torch.device("cpu"), 16)
    with torch.no_grad():
        ours = rollout(lambda x, s: family.predict_velocity(x, s, cond), family.sampling_sigmas(4, shape), noise,
                       "euler")
        videos = family.decode(ours)
        theirs = _render(pipe, family, noise)
    assert videos.shape == (2, FRAMES, 3, 64, 64)
    torch.testing.assert_close(videos, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("sampler", ["euler"] + [pytest.param(s, marks=pytest.mark.slow)
                                                 for s in ("dpm_solver", "heun", "unipc")])
def test_it_trains_on_videos_with_every_solver(sampler, tmp_path):
    config = tiny_config(tmp_path, max_steps=1, sampler=sampler, num_frames=FRAMES, prompts_per_iteration=1,
                         group_size=4, reward_frames=2)
    trainer = NFTTrainer(_build(), ["jpeg_incompressibility", "temporal_consistency"], config, PROMPTS)
    calls = count_sampling_calls(trainer)
    last = step_and_check_the_soft_update(trainer)
    assert calls == [expected_sampling_calls(config)] and last["grad_norm"] > 0
    assert 0 < last["reward/temporal_consistency/mean"] <= 1


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_its_lora_sits_on_the_video_attention_and_loads_with_load_lora_weights(tmp_path):
    from safetensors.torch import load_file

    config = tiny_config(tmp_path, max_steps=2, learning_rate=3e-2, num_frames=FRAMES)
    trainer = NFTTrainer(_build(), "jpeg_incompressibility", config, PROMPTS)
    trainer.train()
    keys = list(load_file(tmp_path / "pytorch_lora_weights.safetensors"))
    assert keys and not any("audio" in key for key in keys)  # the video's attention only
    noise = _noise(trainer.family)
    with trainer.policy.ema_weights(), torch.no_grad():
        trained = _render(trainer.pipeline, trainer.family, noise)
    fresh = _build()
    family = get_family(fresh, num_frames=FRAMES)
    base = _render(fresh, family, noise)
    fresh.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.safetensors")
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(_render(fresh, family, noise), trained, atol=1e-5, rtol=1e-5)
