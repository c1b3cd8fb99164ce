"""What a run trains matches the release: grid, LoRA targets, text length, precision, timestep dtype."""

import torch
from diffusers import StableDiffusion3Pipeline

from diffusers_nft import NFTTrainer
from diffusers_nft.pipelines import SD3Family
from diffusers_nft.policy import make_lora_config
from diffusers_nft.sampling import model_sigmas

from conftest import PROMPTS, tiny_config


def test_training_draws_exactly_the_noise_levels_the_rollouts_called_the_model_at(tiny_pipeline_dir, tmp_path):
    for sampler in ("dpm_solver", "heun"):
        pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
        trainer = NFTTrainer(pipe, "jpeg_compressibility", tiny_config(tmp_path / sampler, sampler=sampler), PROMPTS)
        called = []
        predict = trainer.family.predict_velocity

        def recording(latents, sigma, cond):
            called.append(sigma.clone())
            return predict(latents, sigma, cond)

        trainer.family.predict_velocity = recording
        prompt_index = trainer.prompt_sampler.next(trainer.args.prompts_per_iteration)
        rollouts = trainer.collector.collect(prompt_index, iteration=0, objective=trainer.objective,
                                             timings={"sampling": 0.0, "reward": 0.0})
        sampled = torch.unique(torch.cat(called))
        grid = model_sigmas(trainer.sampling_sigmas).float()
        assert sampled.dtype == torch.float32 and torch.equal(sampled.sort(descending=True).values, grid)
        # the pipeline's own 4-step grid (shift 3): it starts at pure noise and ends close to 0, not at 0.25
        assert grid[0] == 1.0 and grid[-1] < 0.02 and len(grid) == 4
        # and the training step forms x_t from, and feeds the model, exactly those float32 values
        called.clear()
        r = torch.full((trainer.plan.local_images,), 0.5)
        trainer.train_on(rollouts, r, iteration=0)
        trained = torch.unique(torch.cat(called))
        assert set(trained.tolist()) <= set(grid.tolist()) and len(trained) >= trainer.plan.levels_per_image


def test_default_lora_targets_are_the_release_eight_without_attn2(tiny_pipeline, tmp_path):
    transformer = tiny_pipeline.transformer
    assert any(".attn2." in name for name, _ in transformer.named_modules())  # the tiny model is SD3.5-style
    config = make_lora_config(transformer, default_targets=SD3Family.default_lora_targets)
    assert sorted(config.target_modules) == sorted(
        ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
         "attn.add_v_proj", "attn.to_add_out"])
    named = make_lora_config(transformer, targets=["attn.to_q", "attn2.to_q"])  # attn2 only when named
    assert "attn2.to_q" in named.target_modules
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path), PROMPTS)
    names = trainer.policy.state_dict("default").keys()
    assert names and not any(".attn2." in n for n in names)
    assert (config.r, config.lora_alpha, config.init_lora_weights) == (32, 64, "gaussian")


def test_text_length_defaults_to_the_family_value(tiny_pipeline_dir, tmp_path):
    for value, expected in ((None, 128), (16, 16)):  # 128: the release's T5 length for SD3
        pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
        seen, encode = [], pipe.encode_prompt
        pipe.encode_prompt = lambda *args, **kwargs: seen.append(kwargs["max_sequence_length"]) or encode(*args, **kwargs)
        trainer = NFTTrainer(pipe, "jpeg_compressibility", tiny_config(tmp_path / str(value), max_sequence_length=value),
                             PROMPTS)
        trainer.collector.encode(["a red cat"])
        assert seen == [expected]


def test_bf16_keeps_lora_and_vae_in_float32_and_feeds_a_float32_timestep(tiny_pipeline, tmp_path):
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path, mixed_precision="bf16"), PROMPTS)
    assert tiny_pipeline.vae.dtype == torch.float32
    assert tiny_pipeline.transformer.dtype == torch.bfloat16 or any(
        p.dtype == torch.bfloat16 for n, p in tiny_pipeline.transformer.named_parameters() if "lora_" not in n)
    assert all(p.dtype == torch.float32 for p in trainer.policy.trainable_parameters())
    fed = []
    hook = tiny_pipeline.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["timestep"]), with_kwargs=True)
    sigma = torch.tensor([0.91335, 0.00893])
    cond = trainer.collector.encode(["a red cat", "a blue dog"])
    trainer.family.predict_velocity(torch.randn(2, *trainer.latent_shape), sigma, cond)
    hook.remove()
    assert fed[0].dtype == torch.float32
    torch.testing.assert_close(fed[0], sigma * 1000)  # not 916 of 1000, as a bf16 timestep would be
    assert (sigma.bfloat16() * 1000)[0] == 916
    images = trainer.family.decode(torch.randn(1, *trainer.latent_shape))
    assert images.dtype == torch.float32


def test_upcast_vae_off_keeps_the_vae_in_the_low_precision(tiny_pipeline, tmp_path):
    NFTTrainer(tiny_pipeline, "jpeg_compressibility",
               tiny_config(tmp_path, mixed_precision="bf16", upcast_vae=False), PROMPTS)
    assert tiny_pipeline.vae.dtype == torch.bfloat16
