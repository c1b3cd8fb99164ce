"""What the traced family used to get wrong on classes beyond the family files, each fixed in general: a timestep
that is not the sample's noise level, LoRA targets under other names, a LoRA the class cannot save or load, guidance
besides `guidance_scale`, a scheduler the pipeline copies, and decoding through `.sample`."""

import copy

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from diffusers_nft import NFTTrainer
from diffusers_nft.hub import call_snippet
from diffusers_nft.lora_file import has_lora_loader, load_lora_file, write_lora_file
from diffusers_nft.pipelines import TraceError, TracedFamily
from diffusers_nft.pipelines.traced import _extra_guidance_off, _stepping, attention_targets

import tiny_matrix_pipelines
import tiny_pipelines
from conftest import PROMPTS, tiny_config


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_timesteps_given_beside_shifted_sigmas_are_refused_not_trained_at_the_wrong_noise_level():
    # CogView4 passes its own unshifted timesteps (1000, 500, 1) while its samples sit at shifted sigmas; at 64 px
    # its resolution-dependent shift is far from 1. The map fitted on its steps used to pass the LoRA round trip.
    pipe = _quiet(tiny_matrix_pipelines.build_tiny_cogview4_pipeline())
    with pytest.raises(TraceError, match="not its samples' noise levels"):
        TracedFamily(pipe).latent_shape(64)
    # A pipeline whose timestep is its samples' noise level still traces at a shift far from 1 (FLUX's at 64 px).
    flux = TracedFamily(_quiet(tiny_pipelines.build_tiny_flux_pipeline()))
    flux.latent_shape(64)
    assert flux.pipeline.scheduler.sigmas[1] != 2 / 3  # the shift was not 1: sigma 2/3 moved
    assert flux._traces[64].timestep_scale == 1.0


def test_lora_targets_come_from_the_attention_modules_when_the_usual_names_are_absent():
    kandinsky = tiny_matrix_pipelines.build_tiny_kandinsky5_pipeline().transformer
    assert attention_targets(kandinsky) == ("to_query", "to_key", "to_value", "out_layer")
    sd3 = tiny_pipelines.build_tiny_sd3_pipeline().transformer
    assert attention_targets(sd3) == ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                                      "to_add_out")
    # PRX's attention has a usual output projection but fused query/key/value ones: those are found too.
    prx = tiny_matrix_pipelines.build_tiny_prx_pipeline().transformer
    assert attention_targets(prx) == ("img_qkv_proj", "txt_kv_proj", "to_out.0")


def test_a_class_without_a_lora_loader_saves_a_file_its_transformer_loads_and_the_snippet_says_how(tmp_path):
    from diffusers import BriaPipeline

    assert not has_lora_loader(BriaPipeline)
    pipe = tiny_matrix_pipelines.build_tiny_bria_pipeline()
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v"], init_lora_weights="gaussian")
    pipe.transformer.add_adapter(config)
    with torch.no_grad():
        for name, parameter in pipe.transformer.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    x = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))
    inputs = dict(hidden_states=x, encoder_hidden_states=torch.randn(1, 8, 32), timestep=torch.tensor([0.5]),
                  img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3), return_dict=False)
    with torch.no_grad():
        trained = pipe.transformer(**inputs)[0]
    write_lora_file(BriaPipeline, str(tmp_path), get_peft_model_state_dict(pipe.transformer), config)

    fresh = tiny_matrix_pipelines.build_tiny_bria_pipeline()
    with torch.no_grad():
        base = fresh.transformer(**inputs)[0]
        load_lora_file(fresh, str(tmp_path), "pytorch_lora_weights.safetensors")
        loaded = fresh.transformer(**inputs)[0]
    assert (trained - base).abs().max() > 1e-3
    assert torch.allclose(loaded, trained, atol=1e-5)  # alpha 8 != r 4: the scale is in the file
    snippet = call_snippet("BriaPipeline", "briaai/BRIA-3.2", "me/lora", "a cat", {"num_inference_steps": 4})
    assert 'pipe.transformer.load_lora_adapter("me/lora", weight_name="pytorch_lora_weights.safetensors", ' \
           'prefix="transformer")' in snippet
    assert "pipe.load_lora_weights(" in call_snippet("FluxPipeline", "x/y", "me/lora", "a cat", {})


def test_a_transformer_without_peft_support_gets_diffusers_mixin_and_its_lora_loads_back(tmp_path):
    from diffusers import LuminaNextDiT2DModel, LuminaPipeline

    pipe = _quiet(tiny_matrix_pipelines.build_tiny_lumina_pipeline())  # Lumina-Next: no PeftAdapterMixin
    assert not hasattr(pipe.transformer, "add_adapter") and not has_lora_loader(LuminaPipeline)
    trainer = NFTTrainer(pipe, "jpeg_incompressibility", tiny_config(tmp_path, max_steps=1, learning_rate=3e-2),
                         PROMPTS)
    assert isinstance(pipe.transformer, LuminaNextDiT2DModel) and type(pipe.transformer).__name__ == "LuminaNextDiT2DModel"
    trainer.train()
    shape = trainer.family.latent_shape(64)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    cond = trainer.family.encode_prompts(["a red cat", "a blue dog"], torch.device("cpu"), 16)
    with trainer.policy.ema_weights(), torch.no_grad():
        trained = trainer.family.predict_velocity(x, torch.full((2,), 0.6), cond)
    fresh = _quiet(tiny_matrix_pipelines.build_tiny_lumina_pipeline())
    family = TracedFamily(fresh)
    family.latent_shape(64)
    with torch.no_grad():
        base = family.predict_velocity(x, torch.full((2,), 0.6), cond)
        load_lora_file(fresh, str(tmp_path), "pytorch_lora_weights.safetensors")
        loaded = family.predict_velocity(x, torch.full((2,), 0.6), cond)
    assert (trained - base).abs().max() > 1e-4
    torch.testing.assert_close(loaded, trained, atol=1e-5, rtol=1e-5)
    snippet = call_snippet("LuminaPipeline", "Alpha-VLLM/Lumina-Next-SFT-diffusers", "me/lora", "a cat", {})
    assert 'load_lora_file(pipe, "me/lora", weight_name="pytorch_lora_weights.safetensors")' in snippet
    # the start-up block says the same as the card's snippet (`lora_file.loading_call`)
    assert "load it with load_lora_file(pipe, folder, weight_name=...)" in trainer.describe()


def test_guidance_besides_guidance_scale_is_switched_off_from_the_call_signature():
    import inspect

    from diffusers import LTX2Pipeline, StableDiffusion3PAGPipeline, StableDiffusion3Pipeline

    def off(cls):
        return _extra_guidance_off(inspect.signature(cls.__call__).parameters)

    assert off(LTX2Pipeline) == {"stg_scale": 0.0, "modality_scale": 1.0, "audio_guidance_scale": 1.0,
                                 "audio_stg_scale": 0.0, "audio_modality_scale": 1.0}
    assert off(StableDiffusion3PAGPipeline) == {"pag_scale": 0.0}
    assert off(StableDiffusion3Pipeline) == {}  # skip-layer guidance is off unless layers are named


def test_guider_components_are_disabled_so_the_trace_sees_one_call_per_step():
    pipe = _quiet(tiny_matrix_pipelines.build_tiny_hunyuan_image_pipeline())
    assert pipe.guider._enabled and pipe.ocr_guider._enabled
    family = TracedFamily(pipe)
    assert not pipe.guider._enabled and not pipe.ocr_guider._enabled
    assert family.latent_shape(64) == (4, 8, 8)  # used to be "6 transformer calls in 3 steps"


def test_a_copied_scheduler_steps_as_usual_while_the_pipelines_own_is_recorded():
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(3)
    original = type(scheduler).step
    recorded = []
    with _stepping(scheduler, lambda *args, **kwargs: recorded.append(args) or (args[2],)):
        audio = copy.deepcopy(scheduler)  # LTX-2 copies its scheduler for the audio latents
        sample = torch.ones(1, 4)
        stepped = audio.step(torch.ones(1, 4), audio.timesteps[0], sample, return_dict=False)[0]
        scheduler.step(torch.ones(1, 4), scheduler.timesteps[0], sample, return_dict=False)
    assert len(recorded) == 1  # the pipeline's own scheduler only
    assert not torch.equal(stepped, sample)  # the copy stepped for real
    assert type(scheduler).step is original and "step" not in vars(scheduler)


def test_a_pipeline_that_reads_sample_from_the_transformer_decodes():
    pipe = _quiet(tiny_matrix_pipelines.build_tiny_kandinsky5_pipeline(video=True))  # `.sample`, return_dict=True
    family = TracedFamily(pipe, num_frames=5)
    shape = family.latent_shape(64)
    frames = family.decode(torch.zeros(2, *shape))
    assert frames.shape[0] == 2 and frames.shape[-2:] == (64, 64)


def test_lists_and_dicts_of_batched_tensors_are_conditioning_rows():
    from diffusers_nft.pipelines.base import Layers, select_conditioning

    # BRIA FIBO passes its text encoder's layers as a list of (batch, tokens, width) tensors and its text mask inside
    # `joint_attention_kwargs`: both have a row per prompt, unlike Z-Image's lists (an item per prompt)
    pipe = _quiet(tiny_matrix_pipelines.build_tiny_bria_fibo_pipeline())
    family = TracedFamily(pipe)
    shape = family.latent_shape(64)
    cond = family.encode_prompts(["a red cat", "a blue dog", "a green tree"], torch.device("cpu"), 16)
    layers, kwargs = cond["text_encoder_layers"], cond["joint_attention_kwargs"]
    assert isinstance(layers, Layers) and all(layer.shape[0] == 3 for layer in layers)
    assert kwargs["attention_mask"].shape[0] == 3
    picked = select_conditioning(cond, torch.tensor([2, 0]))
    assert torch.equal(picked["text_encoder_layers"][0], layers[0][[2, 0]])
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((3,), 0.7)
    with torch.no_grad():
        together = family.predict_velocity(x, sigma, cond)
        alone = family.predict_velocity(x[[2]], sigma[:1], select_conditioning(cond, torch.tensor([2])))
    torch.testing.assert_close(together[2:], alone, atol=1e-5, rtol=1e-5)


def test_an_output_with_other_tokens_first_a_step_cache_and_rgba_images_are_followed():
    from diffusers_nft.generation import over_white

    # Qwen-Image 2.1: the transformer returns the text tokens before the image's, caches the text's keys and values
    # from step 1 on (`use_kv_cache`), and its VAE decodes RGBA
    pipe = _quiet(tiny_matrix_pipelines.build_tiny_qwenimage21_pipeline())
    family = TracedFamily(pipe)
    shape = family.latent_shape(64)
    trace = family._traces[64]
    assert trace.output_dim == 1 and trace.output_from_end and family.cfg_free_call_kwargs()["use_kv_cache"] is False
    images = family.decode(torch.zeros(2, *shape))
    assert images.shape == (2, 3, 64, 64)
    rgba = torch.tensor([0.2, 0.4, 0.6, 0.5]).view(1, 4, 1, 1)
    torch.testing.assert_close(over_white(rgba).flatten(), torch.tensor([0.6, 0.7, 0.8]))
    assert over_white(torch.ones(1, 3, 2, 2)).shape == (1, 3, 2, 2)


@pytest.mark.slow  # Ideogram 4's 36-layer text tower, traced
def test_conditioning_before_the_latents_and_a_guidance_schedule_are_followed():
    import inspect

    from diffusers import Ideogram4Pipeline

    # Ideogram 4 puts zero text padding before the latents in the transformer's input, and guides by a per-step
    # `guidance_schedule` unless it is None
    assert _extra_guidance_off(inspect.signature(Ideogram4Pipeline.__call__).parameters) == {"guidance_schedule": None}
    pipe = _quiet(tiny_matrix_pipelines.build_tiny_ideogram4_pipeline())
    family = TracedFamily(pipe)
    shape = family.latent_shape(64)
    trace = family._traces[64]
    assert trace.prepended and trace.appended_dim == 1
    cond = family.encode_prompts(["a red cat", "a blue dog"], torch.device("cpu"), 16)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        velocity = family.predict_velocity(x, torch.full((2,), 0.6), cond)
    assert velocity.shape == x.shape and torch.isfinite(velocity).all()


@pytest.mark.slow  # GLM-Image's prior generates its tokens one by one at every traced call (about 12 s)
def test_a_pipeline_that_reseeds_the_global_generator_leaves_it_as_it_was():
    # GLM-Image's prior calls torch.manual_seed with the call's generator seed: tracing and encoding prompts must not
    # reset the run's global random state, and a prompt's conditioning (its prior's tokens) is the same every time.
    family = TracedFamily(_quiet(tiny_matrix_pipelines.build_tiny_glm_image_pipeline()))
    family.latent_shape(64)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = family.encode_prompts(["a red cat", "a blue dog"], torch.device("cpu"), 16)
    assert torch.equal(torch.get_rng_state(), before)
    again = family.encode_prompts(["a red cat", "a blue dog"], torch.device("cpu"), 16)
    assert first["prior_token_id"].shape[0] == 2 and torch.equal(first["prior_token_id"], again["prior_token_id"])
