"""The traced family on image-conditioned pipelines, traced with a row's images: conditioning appended to the
latents along the channels (Wan image-to-video) or along the sequence (FLUX.1 Kontext) is followed exactly; a run
trains through it; what it cannot follow is refused with the reason."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from PIL import Image
from safetensors.torch import load_file

from diffusers_nft import NFTTrainer
from diffusers_nft.pipelines import FluxKontextFamily, TracedFamily, TraceError, WanImageToVideoFamily, get_family
from diffusers_nft.pipelines.base import SOURCE
from diffusers_nft.sampling import rollout

import tiny_pipelines
from conftest import load_saved, random_image, tiny_config


def _traced_rollout(family, prompts, images, steps=4):
    shape = family.latent_shape(64)
    noise = torch.randn(len(prompts), *shape, generator=torch.Generator().manual_seed(5))
    cond = family.encode_prompts(prompts, torch.device("cpu"), 16)
    cond[SOURCE] = family.encode_conditioning([{"image": i} for i in images], torch.device("cpu"), prompts)
    with torch.no_grad():
        latents = rollout(lambda x, s: family.predict_velocity(x, s, cond), family.sampling_sigmas(steps, shape),
                          noise, "euler")
    return noise, family.decode(latents), cond


def test_a_traced_image_to_video_pipeline_follows_the_channels_appended_first_frame():
    pipe = tiny_pipelines.build_tiny_wan_i2v_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)  # the pipeline's loop becomes an Euler rollout
    traced = get_family(pipe, "traced", num_frames=5)
    assert isinstance(traced, TracedFamily) and traced.required_conditioning == ("image",)
    traced.use_example_conditioning({"image": random_image(9)})
    prompts, image = ["the cat walks away", "leaves fall"], random_image(1)
    noise, ours, cond = _traced_rollout(traced, prompts, [image, image])
    trace = traced._traces[64]
    assert trace.appended_dim == 1 and not trace.output_appended  # 20 channels of mask and frame latents appended
    assert cond[SOURCE]["__appended__"].shape == (2, 20, 2, 8, 8)
    explicit = WanImageToVideoFamily(pipe, num_frames=5)
    theirs = pipe(prompt=prompts, image=image, latents=noise, output_type="pt", **explicit.call_kwargs(64, 4, 16)).frames
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_a_traced_kontext_follows_the_sequence_appended_source_and_says_when_the_call_resizes():
    pipe = tiny_pipelines.build_tiny_flux_kontext_pipeline()
    pipe.set_progress_bar_config(disable=True)
    resizing = get_family(pipe, "traced")
    resizing.use_example_conditioning({"image": random_image(9)})
    with pytest.raises(TraceError, match="generates 1024x1024 when asked for 64x64: it resizes"):
        resizing.latent_shape(64)
    traced = get_family(pipe, "traced", call_kwargs={"max_area": 64 * 64, "_auto_resize": False})
    traced.use_example_conditioning({"image": random_image(9)})
    prompts, images = ["make it blue", "turn it into a seven"], [random_image(1), random_image(2)]
    noise, ours, _ = _traced_rollout(traced, prompts, images)
    assert traced._traces[64].output_appended  # the output is as long as latents + source: its first part counts
    explicit = FluxKontextFamily(pipe)
    theirs = pipe(prompt=prompts, image=images, latents=explicit.pipeline_latents(noise), output_type="pt",
                  **explicit.call_kwargs(64, 4, 16)).images
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_a_class_with_no_family_file_is_served_traced_flux_control():
    """FLUX.1 Canny/Depth [dev] (`FluxControlPipeline`) has no family file: the control image's latents appended to
    the packed latents' channels are followed, and the traced rollout is the pipeline's own."""
    pipe = tiny_pipelines.build_tiny_flux_control_pipeline()
    pipe.set_progress_bar_config(disable=True)
    traced = get_family(pipe)
    assert isinstance(traced, TracedFamily) and "control_image" in traced.conditioning
    traced.use_example_conditioning({"control_image": random_image(9)})
    prompts, controls = ["a red cat", "a blue dog"], [random_image(1), random_image(2)]
    shape = traced.latent_shape(64)
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    cond = traced.encode_prompts(prompts, torch.device("cpu"), 16)
    cond[SOURCE] = traced.encode_conditioning([{"control_image": c} for c in controls], torch.device("cpu"), prompts)
    assert traced._traces[64].appended_dim == 2  # packed tokens (B, L, C): appended along the channels
    with torch.no_grad():
        ours = traced.decode(rollout(lambda x, s: traced.predict_velocity(x, s, cond),
                                     traced.sampling_sigmas(4, shape), noise, "euler"))
    for row in range(2):  # the pipeline takes one control image per call
        theirs = pipe(prompt=prompts[row], control_image=controls[row], latents=noise[row : row + 1], output_type="pt",
                      **traced.call_kwargs(64, 4, 16)).images
        torch.testing.assert_close(ours[row : row + 1], theirs, atol=1e-4, rtol=0)


def _frames(seed: int, count: int = 5):
    g = torch.Generator().manual_seed(seed)
    return [Image.fromarray((torch.rand(64, 64, 3, generator=g) * 255).byte().numpy()) for _ in range(count)]


def test_a_video_conditioned_pipeline_is_served_traced_wan_vace():
    """Wan VACE (`WanVACEPipeline`, `video=` a list of frames) has no family file and takes one prompt per call: the
    traced rollout is the pipeline's own."""
    pipe = tiny_pipelines.build_tiny_wan_vace_pipeline()
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)  # the pipeline's loop becomes an Euler rollout
    traced = get_family(pipe, num_frames=5)
    assert isinstance(traced, TracedFamily) and traced.conditioning["video"] == 5
    traced.use_example_conditioning({"video": _frames(9)})
    prompts, videos = ["a cat", "a dog"], [_frames(1), [Image.new("RGB", (64, 64), (255, 255, 255))] * 5]
    shape = traced.latent_shape(64)
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    cond = traced.encode_prompts(prompts, torch.device("cpu"), 16)
    cond[SOURCE] = traced.encode_conditioning([{"video": v} for v in videos], torch.device("cpu"), prompts)
    assert traced.max_prompts_per_call == 1  # "Passing a list of prompts is not yet supported"
    with torch.no_grad():
        ours = traced.decode(rollout(lambda x, s: traced.predict_velocity(x, s, cond),
                                     traced.sampling_sigmas(4, shape), noise, "euler"))
    for row in range(2):
        theirs = pipe(prompt=prompts[row], video=videos[row], latents=noise[row : row + 1], output_type="pt",
                      **traced.call_kwargs(64, 4, 16)).frames
        torch.testing.assert_close(ours[row : row + 1], theirs, atol=1e-5, rtol=0)
    other = pipe(prompt=prompts[0], video=videos[1], latents=noise[:1], output_type="pt",
                 **traced.call_kwargs(64, 4, 16)).frames
    assert (other - ours[:1]).abs().max() > 1e-2  # the conditioning video matters


@pytest.mark.slow  # 4 s; the fast set pins the traced VACE rollout above and trains conditioned runs through Kontext
def test_a_run_trains_wan_vace_on_each_rows_conditioning_video(tmp_path):
    rows = []
    for i, prompt in enumerate(["a cat", "a dog", "a tree", "a house"]):
        paths = [str(tmp_path / f"video_{i}_{k}.png") for k in range(5)]
        for frame, path in zip(_frames(70 + i), paths):
            frame.save(path)
        rows.append({"prompt": prompt, "frames": paths})
    config = tiny_config(tmp_path / "run", max_steps=1, num_frames=5, video_column="frames", prompts_per_iteration=2,
                         group_size=2, eval_num_steps=3)
    trainer = NFTTrainer(tiny_pipelines.build_tiny_wan_vace_pipeline(), "jpeg_incompressibility", config, rows)
    trainer.train()
    weights = load_file(tmp_path / "run" / "pytorch_lora_weights.safetensors")
    assert max(v.abs().max().item() for k, v in weights.items() if "lora_B" in k) > 0


@pytest.mark.slow  # 4 s; the rollout tests above pin the traced conditioning in the fast set
def test_a_traced_image_to_video_run_trains_on_each_rows_first_frame(tmp_path):
    folder = tmp_path / "wan-i2v"
    tiny_pipelines.build_tiny_wan_i2v_pipeline().save_pretrained(str(folder))
    rows = []
    for i, prompt in enumerate(["the cat walks away", "the dog jumps", "leaves fall", "the light fades"]):
        rows.append({"prompt": prompt, "frame": str(tmp_path / f"frame_{i}.png")})
        random_image(60 + i).save(rows[-1]["frame"])
    config = tiny_config(tmp_path / "run", max_steps=2, learning_rate=3e-2, num_frames=5, family="traced",
                         image_column="frame", eval_num_steps=3)
    trainer = NFTTrainer(load_saved(str(folder)), "jpeg_incompressibility", config, rows)
    assert isinstance(trainer.family, TracedFamily)
    trainer.train()
    weights = load_file(tmp_path / "run" / "pytorch_lora_weights.safetensors")
    assert max(v.abs().max().item() for k, v in weights.items() if "lora_B" in k) > 1e-4


def test_what_the_traced_family_cannot_follow_with_images_is_refused_with_the_reason(tmp_path):
    from diffusers import FluxImg2ImgPipeline

    flux = tiny_pipelines.build_tiny_flux_pipeline()
    with pytest.raises(TraceError, match="noised to `strength`"):
        get_family(FluxImg2ImgPipeline(**flux.components), "traced")
    controlnet = tiny_pipelines.build_tiny_sd3_controlnet_pipeline()
    controlnet.set_progress_bar_config(disable=True)
    traced = get_family(controlnet, "traced")
    traced.use_example_conditioning({"control_image": random_image(3)})
    with pytest.raises(TraceError, match="changes from step to step, such as a ControlNet's outputs"):
        traced.latent_shape(64)
    wan = tiny_pipelines.build_tiny_wan_i2v_pipeline()
    wan.set_progress_bar_config(disable=True)
    with pytest.raises(TraceError, match="name the dataset's image columns \\(--image_column ...\\)"):
        get_family(wan, "traced", num_frames=5).latent_shape(64)
