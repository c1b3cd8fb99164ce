"""Wan text-to-video: 5-D latents, rewards on videos, animated sample grids and card media, LoRA round trip."""

import re

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from PIL import Image
from safetensors.torch import load_file

from diffusers_nft import NFTTrainer
from diffusers_nft.pipelines import WanFamily, get_family
from diffusers_nft.rewards import WeightedRewards, temporal_consistency, video_reward
from diffusers_nft.rewards.video import frame_indices
from diffusers_nft.sampling import rollout

import tiny_pipelines
from conftest import PROMPTS, count_sampling_calls, expected_sampling_calls, load_saved, \
    step_and_check_the_soft_update, tiny_config

FRAMES = 5  # 2 latent frames


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tiny-wan"))
    tiny_pipelines.build_tiny_wan_pipeline().save_pretrained(folder)
    return folder


def _render(pipe, family, steps=4):
    noise = torch.randn(2, *family.latent_shape(64), generator=torch.Generator().manual_seed(5))
    return pipe(prompt=["a red cat", "a blue dog"], latents=noise, num_frames=FRAMES, num_inference_steps=steps,
                height=64, width=64, max_sequence_length=16, output_type="pt", **family.cfg_free_call_kwargs()).frames


def test_wan_latents_grid_and_velocity_follow_the_pipeline(wan_dir):
    pipe = load_saved(wan_dir)
    # with an Euler scheduler the pipeline's loop is an Euler rollout: ours must land on the same video
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    family = get_family(pipe, num_frames=FRAMES)
    assert isinstance(family, WanFamily) and family.video_frames() == FRAMES
    shape = family.latent_shape(64)
    assert shape == (16, 2, 8, 8)
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    cond = family.encode_prompts(["a red cat", "a blue dog"], torch.device("cpu"), 16)
    with torch.no_grad():
        ours = rollout(lambda x, s: family.predict_velocity(x, s, cond), family.sampling_sigmas(4, shape), noise,
                       "euler")
        videos = family.decode(ours)
    assert videos.shape == (2, FRAMES, 3, 64, 64)
    torch.testing.assert_close(videos, _render(pipe, family), atol=1e-4, rtol=0)


def test_wan_samples_on_unipcs_own_grid(wan_dir):
    pipe = load_saved(wan_dir)
    family = get_family(pipe, num_frames=FRAMES)
    pipe.scheduler.set_timesteps(6)
    torch.testing.assert_close(family.sampling_sigmas(6, family.latent_shape(64)), pipe.scheduler.sigmas.double())


def test_image_rewards_score_frames_and_video_rewards_get_videos():
    videos = torch.rand(2, 9, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    seen = {}

    def brightness(images, prompts, metadata):
        seen["image"] = (tuple(images.shape), list(prompts))
        return images.mean(dim=(1, 2, 3))

    @video_reward
    def length(videos, prompts, metadata):
        seen["video"] = tuple(videos.shape)
        return torch.full((len(videos),), float(videos.shape[1]))

    scores = WeightedRewards([brightness, length], video_frames=3)(videos, ["a", "b"], [{}, {}])
    assert frame_indices(9, 3) == [0, 4, 8]
    assert seen["image"] == ((6, 3, 16, 16), ["a", "a", "a", "b", "b", "b"])
    assert seen["video"] == (2, 9, 3, 16, 16)
    torch.testing.assert_close(scores["brightness"], videos[:, [0, 4, 8]].mean(dim=(1, 2, 3, 4)))
    assert scores["length"].tolist() == [9.0, 9.0]
    still = videos[:, :1].expand(2, 9, 3, 16, 16)
    assert temporal_consistency(still, None, None).tolist() == [1.0, 1.0]
    assert (temporal_consistency(videos, None, None) < 0.8).all()
    with pytest.raises(Exception, match="scores videos"):
        WeightedRewards([length])(videos[:, 0], ["a", "b"], [{}, {}])


@pytest.mark.parametrize("sampler", ["dpm_solver", "euler", "heun", "unipc"])
def test_wan_trains_on_videos_with_every_solver(wan_dir, sampler, tmp_path):
    config = tiny_config(tmp_path, max_steps=1, sampler=sampler, num_frames=FRAMES, prompts_per_iteration=1,
                         group_size=4, reward_frames=2)
    trainer = NFTTrainer(load_saved(wan_dir), ["jpeg_incompressibility", "temporal_consistency"], config, PROMPTS)
    calls = count_sampling_calls(trainer)
    last = step_and_check_the_soft_update(trainer)
    assert calls == [expected_sampling_calls(config)] and last["grad_norm"] > 0
    assert last["loss/kl"] == 0 and last["loss/total"] == last["loss/policy"]  # theta is the base until its one step
    assert 0 < last["reward/temporal_consistency/mean"] <= 1


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_wan_lora_loads_into_wan_pipeline_and_grids_are_animated(wan_dir, tmp_path):
    config = tiny_config(tmp_path, max_steps=3, learning_rate=3e-2, num_frames=FRAMES, validation_steps=3)
    trainer = NFTTrainer(load_saved(wan_dir), "jpeg_incompressibility", config, PROMPTS)
    trainer.train()
    grid = Image.open(tmp_path / "samples" / "step_000003.webp")
    assert grid.n_frames == FRAMES
    family = trainer.family
    with trainer.policy.ema_weights(), torch.no_grad():
        trained = _render(trainer.pipeline, family)
    fresh = load_saved(wan_dir)
    base = _render(fresh, family)
    fresh.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.safetensors")
    assert any("attn2" in key for key in load_file(tmp_path / "pytorch_lora_weights.safetensors"))  # cross-attention
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(_render(fresh, family), trained, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # 2 video runs
def test_gradient_checkpointing_gives_the_same_video_training(wan_dir, tmp_path):
    runs = {}
    for checkpointing in (False, True):
        config = tiny_config(tmp_path / str(checkpointing), max_steps=1, num_frames=FRAMES,
                             gradient_checkpointing=checkpointing)
        trainer = NFTTrainer(load_saved(wan_dir), "jpeg_incompressibility", config, PROMPTS)
        assert trainer.pipeline.transformer.gradient_checkpointing == checkpointing
        runs[checkpointing] = trainer.train()[-1]
    for key in ("loss/total", "grad_norm", "old_theta_deviation"):
        assert runs[True][key] == pytest.approx(runs[False][key], rel=1e-5)


def test_wan22_uses_the_expert_the_pipeline_uses_at_each_sigma():
    pipe = tiny_pipelines.build_tiny_wan_pipeline(two_experts=True, boundary_ratio=0.6)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)  # the pipeline's loop becomes an Euler rollout
    family = get_family(pipe, num_frames=FRAMES)
    shape = family.latent_shape(64)
    cond = family.encode_prompts(["a red cat", "a blue dog"], torch.device("cpu"), 16)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mixed = family.predict_velocity(x, torch.tensor([0.9, 0.3]), cond)
        for row, (sigma, expert) in enumerate(((0.9, pipe.transformer), (0.3, pipe.transformer_2))):
            alone = expert(hidden_states=x[row:row + 1], timestep=torch.tensor([1000 * sigma]),
                           encoder_hidden_states=cond["encoder_hidden_states"][row:row + 1], return_dict=False)[0]
            torch.testing.assert_close(mixed[row:row + 1], alone, atol=1e-6, rtol=0)
        sigmas = family.sampling_sigmas(4, shape)
        assert (sigmas[:-1] >= 0.6).any() and (sigmas[:-1] < 0.6).any()  # both experts sample
        ours = family.decode(rollout(lambda v, s: family.predict_velocity(v, s, cond), sigmas, x, "euler"))
    theirs = pipe(prompt=["a red cat", "a blue dog"], latents=x, num_frames=FRAMES, num_inference_steps=4, height=64,
                  width=64, max_sequence_length=16, output_type="pt", **family.cfg_free_call_kwargs()).frames
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.slow  # 5 s; Wan 2.1's tests run the same family file
def test_wan22_trains_both_experts_and_both_lorasload_saved(tmp_path):
    folder = str(tmp_path / "wan22")
    tiny_pipelines.build_tiny_wan_pipeline(two_experts=True, boundary_ratio=0.6).save_pretrained(folder)
    config = tiny_config(tmp_path / "run", max_steps=3, learning_rate=3e-2, num_frames=FRAMES,
                         gradient_checkpointing=True)
    trainer = NFTTrainer(load_saved(folder), "jpeg_incompressibility", config, PROMPTS)
    trainer.train()
    high = load_file(tmp_path / "run" / "pytorch_lora_weights.safetensors")
    low = load_file(tmp_path / "run" / "pytorch_lora_weights_transformer_2.safetensors")
    assert high.keys() == low.keys() and all(k.startswith("transformer.") for k in high)
    for weights in (high, low):  # each expert trained
        assert max(v.abs().max().item() for k, v in weights.items() if "lora_B" in k) > 1e-4
    assert any((high[k] - low[k]).abs().max() > 1e-6 for k in high)
    family = trainer.family
    with trainer.policy.ema_weights(), torch.no_grad():
        trained = _render(trainer.pipeline, family)
    fresh = load_saved(folder)
    base = _render(fresh, family)
    fresh.load_lora_weights(str(tmp_path / "run"), weight_name="pytorch_lora_weights.safetensors")
    fresh.load_lora_weights(str(tmp_path / "run"), weight_name="pytorch_lora_weights_transformer_2.safetensors",
                            load_into_transformer_2=True)
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(_render(fresh, family), trained, atol=1e-5, rtol=1e-5)
    from diffusers_nft.evaluate import lora_models

    judged = load_saved(folder)
    models = lora_models(judged, [f"nft={tmp_path / 'run'}"])  # the evaluation CLI loads both experts' files
    with models["nft"](), torch.no_grad():
        torch.testing.assert_close(_render(judged, family), trained, atol=1e-5, rtol=1e-5)
    card_path = trainer.create_model_card("user/wan22-nft")
    card = open(card_path).read()
    assert 'weight_name="pytorch_lora_weights_transformer_2.safetensors", load_into_transformer_2=True' in card
    media = tmp_path / "run" / "images"
    assert Image.open(media / "before_after.webp").n_frames == FRAMES  # card media are animations
    assert "images/sample_0.webp" in card and Image.open(media / "sample_0.webp").n_frames == FRAMES


def test_an_idle_expert_still_gets_a_zero_gradient():
    """A micro-batch on one side of the boundary: DDP needs every trained parameter in the graph."""
    from peft import LoraConfig

    from diffusers_nft.pipelines.wan import WanExperts

    pipe = tiny_pipelines.build_tiny_wan_pipeline(two_experts=True, boundary_ratio=0.6)
    experts = WanExperts(pipe.transformer, pipe.transformer_2, 0.6)
    experts.add_adapter(LoraConfig(r=2, target_modules=["to_q"]))
    experts.requires_grad_(False)
    lora = [p for n, p in experts.named_parameters() if "lora_" in n]
    for p in lora:
        p.requires_grad_(True)
    x = torch.randn(2, 16, 2, 8, 8)
    text = torch.randn(2, 16, 32)
    out = experts(x, torch.tensor([900.0, 800.0]), text, sigma=torch.tensor([0.9, 0.8]))[0]
    out.sum().backward()
    low = [p for n, p in experts.named_parameters() if n.startswith("low.") and "lora_" in n]
    assert low and all(p.grad is not None and p.grad.abs().max() == 0 for p in low)


@pytest.mark.parametrize("build, frames, advice", [
    (lambda: tiny_pipelines.build_tiny_wan_pipeline(), 6, "4 k + 1 frames. Use 5 or 9"),
    (lambda: __import__("tiny_matrix_pipelines").build_tiny_ltx2_pipeline(), 10, "8 k + 1 frames. Use 9 or 17"),
])
def test_a_frame_count_the_vae_cannot_encode_is_refused_with_the_nearest_valid_ones(build, frames, advice):
    # One check for every video family (`VideoFamily`), at its own VAE's temporal compression.
    with pytest.raises(ValueError, match=re.escape(advice)):
        get_family(build(), num_frames=frames)
