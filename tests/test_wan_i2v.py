"""Wan image-to-video (`WanImageToVideoPipeline`): the family's rollout is the pipeline's video for the same first
frame, prompt and noise (Wan 2.1 with CLIP features; Wan 2.2 A14B with two experts); a run trains on each row's
first frame and the LoRA loads back; Wan 2.2 TI2V's image mode is refused with the reason."""

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from diffusers_nft import NFTTrainer
from diffusers_nft.pipelines import WanImageToVideoFamily, get_family
from diffusers_nft.pipelines.base import SOURCE
from diffusers_nft.sampling import rollout

import tiny_pipelines
from conftest import load_saved, random_image, step_and_check_the_soft_update, tiny_config

FRAMES = 5  # 2 latent frames


@pytest.fixture(scope="module")
def i2v_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("wan-i2v"))
    tiny_pipelines.build_tiny_wan_i2v_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    out = []
    for i, prompt in enumerate(["the cat walks away", "the dog jumps", "leaves fall", "the light fades"]):
        path = str(folder / f"frame_{i}.png")
        random_image(30 + i).save(path)
        out.append({"prompt": prompt, "first_frame": path})
    return out


def _render(pipe, family, image, prompts, steps=4):
    noise = torch.randn(len(prompts), *family.latent_shape(64), generator=torch.Generator().manual_seed(5))
    return pipe(prompt=prompts, image=image, latents=noise, output_type="pt",
                **family.call_kwargs(64, steps, 16)).frames


def _rollout_matches_the_pipeline(pipe):
    """Euler on the family's grid from the same noise, decoded, against the pipeline's loop with an Euler
    scheduler (both prompts share one first frame, as the pipeline's call does)."""
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    family = get_family(pipe, num_frames=FRAMES)
    assert type(family) is WanImageToVideoFamily and family.required_conditioning == ("image",)
    shape, prompts, image = family.latent_shape(64), ["the cat walks away", "leaves fall"], random_image(1)
    assert shape == (16, 2, 8, 8)
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    cond = family.encode_prompts(prompts, torch.device("cpu"), 16)
    cond[SOURCE] = family.encode_conditioning([{"image": image}] * 2, torch.device("cpu"))
    with torch.no_grad():
        ours = family.decode(rollout(lambda x, s: family.predict_velocity(x, s, cond), family.sampling_sigmas(4, shape),
                                     noise, "euler"))
        other_frame = _render(pipe, family, random_image(2), prompts)
    theirs = _render(pipe, family, image, prompts)
    assert ours.shape == (2, FRAMES, 3, 64, 64)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert (theirs - other_frame).abs().max() > 1e-3  # the first frame matters
    return cond


def test_wan21_i2v_samples_what_the_pipeline_samples_for_the_same_first_frame(i2v_dir):
    cond = _rollout_matches_the_pipeline(load_saved(i2v_dir))
    assert cond[SOURCE]["video_condition"].shape == (2, 4 + 16, 2, 8, 8)
    assert cond[SOURCE]["image_embeds"].shape[0] == 2  # CLIP's features, one row per prompt


def test_wan22_i2v_uses_both_experts_as_the_pipeline_does():
    pipe = tiny_pipelines.build_tiny_wan_i2v_pipeline(two_experts=True, boundary_ratio=0.6)
    pipe.set_progress_bar_config(disable=True)
    cond = _rollout_matches_the_pipeline(pipe)
    assert "image_embeds" not in cond[SOURCE]  # Wan 2.2 has no image encoder
    sigmas = get_family(pipe, num_frames=FRAMES).sampling_sigmas(4, (16, 2, 8, 8))
    assert (sigmas[:-1] >= 0.6).any() and (sigmas[:-1] < 0.6).any()


@pytest.mark.slow  # 5 s; the fast set trains on conditioning through Kontext and FLUX.2, and pins this family above
def test_wan_i2v_trains_on_each_rows_first_frame_and_the_lora_loads_back(i2v_dir, rows, tmp_path):
    seen = []

    def stillness(videos, prompts, metadata):  # how much the first frame survives into the video
        seen.extend(zip(prompts, [m["source_image"] for m in metadata]))
        return [-(v[0] - m["source_image"]).abs().mean().item() for v, m in zip(videos, metadata)]

    pipe = load_saved(i2v_dir)
    config = tiny_config(tmp_path, max_steps=2, learning_rate=3e-2, num_frames=FRAMES, prompts_per_iteration=2,
                         group_size=2, image_column="first_frame", eval_num_steps=3)
    trainer = NFTTrainer(pipe, stillness, config, rows)
    step_and_check_the_soft_update(trainer)
    trainer.train()
    by_prompt = {row["prompt"]: np.array(Image.open(row["first_frame"]).convert("RGB")) for row in rows}
    sampled = [(p, s) for p, s in seen if p in by_prompt]
    assert len(sampled) >= 4
    for prompt, source in sampled:
        assert np.array_equal((source.permute(1, 2, 0) * 255).round().byte().numpy(), by_prompt[prompt])
    assert any("lora_B" in k for k in load_file(tmp_path / "pytorch_lora_weights.safetensors"))
    family, image, prompts = trainer.family, random_image(1), ["the dog jumps", "leaves fall"]
    trained = _render(pipe, family, image, prompts)  # after train(): the pipeline holds the saved LoRA
    fresh = load_saved(i2v_dir)
    base = _render(fresh, family, image, prompts)
    fresh.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.safetensors")
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(_render(fresh, family, image, prompts), trained, atol=1e-5, rtol=1e-5)
    trainer.args.base_model_id = "someone/tiny-wan-i2v"
    card = ModelCard.load(trainer.create_model_card("someone/wan-i2v-nft"))
    assert card.data.to_dict()["pipeline_tag"] == "image-to-video"
    assert "load_image(" in card.text and "image=" in card.text


def test_wan22_ti2v_image_mode_and_rows_without_a_first_frame_are_refused(i2v_dir, rows, tmp_path):
    from diffusers_nft.conditioning import ConditioningError

    with pytest.raises(ConditioningError, match="needs \\['image'\\] for every prompt: name the dataset column with "
                                                "--image_column"):
        NFTTrainer(load_saved(i2v_dir), "jpeg_incompressibility", tiny_config(tmp_path, num_frames=FRAMES), rows)
    pipe = load_saved(i2v_dir)
    pipe.register_to_config(expand_timesteps=True)
    with pytest.raises(ValueError, match="expand_timesteps .* Train a Wan 2.1 or Wan 2.2 A14B"):
        get_family(pipe, num_frames=FRAMES)
