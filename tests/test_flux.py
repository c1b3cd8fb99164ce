import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from safetensors.torch import load_file

from diffusers_nft import NFTTrainer
from diffusers_nft.pipelines import FluxFamily, get_family
from diffusers_nft.policy import make_lora_config
from diffusers_nft.lora_file import portable_lora

from conftest import PROMPTS, count_sampling_calls, expected_sampling_calls, max_diff, \
    step_and_check_the_soft_update, tiny_config


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    from tiny_pipelines import build_tiny_flux_pipeline

    folder = str(tmp_path_factory.mktemp("tiny-flux"))
    build_tiny_flux_pipeline(seed=0, guidance_embeds=True).save_pretrained(folder)
    return folder


def _render(pipe, guidance=3.5):
    latents = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(3))  # packed: 4 x 4 tokens of 16
    return pipe(["a red cat", "a blue dog"], latents=latents, num_inference_steps=4, guidance_scale=guidance,
                height=64, width=64, max_sequence_length=16, output_type="pt").images


def test_flux_adapter_shapes_and_dynamic_shift(flux_dir):
    pipe = FluxPipeline.from_pretrained(flux_dir)
    family = get_family(pipe, distilled_guidance_scale=2.0)
    assert isinstance(family, FluxFamily) and family.distilled_guidance_scale == 2.0
    shape = family.latent_shape(64)
    assert shape == (16, 16)  # (64 / 8 / 2)^2 tokens of 4 * 4 channels
    config = pipe.scheduler.config
    mu = calculate_shift(16, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift)
    assert family.sampling_mu(shape) == pytest.approx(mu)
    # the grid is the one FluxPipeline sets: linspace(1, 1/n, n), shifted by mu, then 0
    pipe.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / 6, 6), mu=mu)
    torch.testing.assert_close(family.sampling_sigmas(6, shape), pipe.scheduler.sigmas.double())
    cond = family.encode_prompts(["a red cat", "a blue dog"], torch.device("cpu"), 16)
    assert cond["txt_ids"].shape[0] == 2
    v = family.predict_velocity(torch.randn(2, *shape), torch.tensor([0.3, 0.9]), cond)
    assert v.shape == (2, *shape) and v.dtype == torch.float32
    assert family.decode(torch.randn(2, *shape)).shape == (2, 3, 64, 64)
    # the guidance embedding is fed: another value changes the velocity
    adapter_b = get_family(pipe, distilled_guidance_scale=6.0)
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    sub = {k: v[:1] for k, v in cond.items()}
    assert (family.predict_velocity(x, torch.tensor([0.5]), sub) - adapter_b.predict_velocity(x, torch.tensor([0.5]), sub)).abs().max() > 1e-6


def test_flux_trains_and_its_lora_loads_into_flux_pipeline(flux_dir, tmp_path):
    pipe = FluxPipeline.from_pretrained(flux_dir)
    peft_config = make_lora_config(pipe.transformer, default_targets=FluxFamily.default_lora_targets, rank=4, alpha=12)
    assert "attn.to_out.0" in peft_config.target_modules
    config = tiny_config(tmp_path, max_steps=3, learning_rate=3e-2, sampler="dpm_solver")
    trainer = NFTTrainer(pipe, "jpeg_incompressibility", config, PROMPTS, peft_config=peft_config)
    history = trainer.train()
    assert len(history) == 3 and history[-1]["old_theta_deviation"] > 0
    saved = load_file(tmp_path / "pytorch_lora_weights.safetensors")
    folded, _ = portable_lora(trainer.policy.state_dict("ema"), peft_config)  # alpha / r in lora_B
    assert max_diff({k[len("transformer."):]: v for k, v in saved.items()}, folded) == 0

    with trainer.policy.ema_weights():
        trained = _render(trainer.pipeline)
    fresh = FluxPipeline.from_pretrained(flux_dir)
    fresh.set_progress_bar_config(disable=True)
    base = _render(fresh)
    fresh.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.safetensors")
    loaded = _render(fresh)
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(loaded, trained, atol=1e-5, rtol=1e-5)


def test_every_solver_collects_flux_data(flux_dir, tmp_path):
    for sampler in ("euler", "heun", "unipc"):
        pipe = FluxPipeline.from_pretrained(flux_dir)
        config = tiny_config(tmp_path / sampler, sampler=sampler)
        trainer = NFTTrainer(pipe, "jpeg_incompressibility", config, PROMPTS)
        calls = count_sampling_calls(trainer)
        metrics = step_and_check_the_soft_update(trainer)
        assert calls == [expected_sampling_calls(config)] and metrics["reward/total/std"] > 0


def test_flux_script_feeds_distilled_guidance_from_the_command_line(flux_dir, tmp_path, monkeypatch):
    import json
    import os

    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "examples"))
    import train_nft_flux

    from diffusers_nft import scripts

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\na blue dog\n")
    argv = ["--pretrained_model_name_or_path", flux_dir, "--prompts", str(prompts), "--output_dir", str(tmp_path / "o"),
            "--reward", "jpeg_compressibility", "--distilled_guidance_scale", "2.5", "--resolution", "64", "--max_sequence_length", "16",
            "--max_train_steps", "1", "--prompts_per_iteration", "2", "--group_size", "2", "--num_sampling_steps", "2",
            "--eval_num_steps", "2", "--report_to", "none", "--rank", "4", "--validation_steps", "5"]
    trainer, script_args, demo = scripts.prepare(argv, train_nft_flux.load_flux_pipeline)
    assert type(trainer.pipeline).__name__ == "FluxPipeline" and not demo
    fed = []
    trainer.pipeline.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["guidance"]), with_kwargs=True)
    scripts.run(trainer, script_args, demo)
    assert fed and all(torch.all(g == 2.5) for g in fed)
    assert json.loads((tmp_path / "o" / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1
    assert (tmp_path / "o" / "pytorch_lora_weights.safetensors").is_file()
