"""The families people train now, one family file each: Qwen-Image, FLUX.2 [dev] and [klein], and Z-Image.

For each: the family's Euler rollout, decoded, is the pipeline's own image (same grid, timestep map, velocity
sign, packing and decoding); training runs with every solver; the LoRA loads with the pipeline class's own
`load_lora_weights` and reproduces the trained policy's images.
"""

import pytest
import torch
from safetensors.torch import load_file

from diffusers_nft import NFTTrainer
from diffusers_nft.lora_file import portable_lora
from diffusers_nft.pipelines import Flux2Family, QwenImageFamily, ZImageFamily, get_family
from diffusers_nft.policy import make_lora_config
from diffusers_nft.sampling import rollout

import tiny_pipelines
from conftest import PROMPTS, count_sampling_calls, expected_sampling_calls, load_saved, max_diff, \
    step_and_check_the_soft_update, tiny_config

FAMILIES = {
    "qwenimage": QwenImageFamily,
    "flux2": Flux2Family,  # FLUX.2 [dev]: Mistral-3 encoder, guidance embedding
    "flux2_klein": Flux2Family,
    "zimage": ZImageFamily,
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    """(name, folder of the saved tiny pipeline)."""
    folder = str(tmp_path_factory.mktemp(request.param))
    getattr(tiny_pipelines, f"build_tiny_{request.param}_pipeline")().save_pretrained(folder)
    return request.param, folder


def _render(pipe, family, steps=4):
    noise = torch.randn(2, *family.latent_shape(64), generator=torch.Generator().manual_seed(5))
    return pipe(prompt=["a red cat", "a blue dog"], latents=family.pipeline_latents(noise), num_inference_steps=steps, height=64, width=64,
                max_sequence_length=16, output_type="pt", **family.cfg_free_call_kwargs()).images


def test_the_adapter_samples_what_the_pipeline_samples(family):
    name, folder = family
    pipe = load_saved(folder)
    family = get_family(pipe)
    assert type(family) is FAMILIES[name]
    shape = family.latent_shape(64)
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    prompts = ["a red cat", "a blue dog"]
    cond = family.encode_prompts(prompts, torch.device("cpu"), 16)
    assert prompts == ["a red cat", "a blue dog"]  # encoding leaves the caller's list alone
    with torch.no_grad():
        ours = rollout(lambda x, s: family.predict_velocity(x, s, cond), family.sampling_sigmas(4, shape), noise, "euler")
        images = family.decode(ours)
    assert (ours - noise).abs().max() > 1e-2
    assert images.shape == (2, 3, 64, 64)
    torch.testing.assert_close(images, _render(pipe, family), atol=1e-4, rtol=0)


@pytest.mark.parametrize("sampler", ["dpm_solver", "euler", "heun", "unipc"])
def test_each_family_trains_with_every_solver(family, sampler, tmp_path):
    _, folder = family
    pipe = load_saved(folder)
    config = tiny_config(tmp_path, max_steps=1, sampler=sampler, prompts_per_iteration=1, group_size=4)
    trainer = NFTTrainer(pipe, "jpeg_incompressibility", config, PROMPTS)
    calls = count_sampling_calls(trainer)
    last = step_and_check_the_soft_update(trainer)
    assert calls == [expected_sampling_calls(config)]  # the solver's own number of model calls
    # LoRA B starts at 0 and the iteration's one optimizer step comes last: theta is the base at every micro-step
    assert last["loss/kl"] == 0 and last["loss/total"] == last["loss/policy"] and last["grad_norm"] > 0


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_the_lora_loads_into_the_pipeline_class_and_reproduces_the_policy(family, tmp_path):
    _, folder = family
    pipe = load_saved(folder)
    family = get_family(pipe)
    peft_config = make_lora_config(pipe.transformer, default_targets=family.default_lora_targets, rank=4, alpha=12)
    config = tiny_config(tmp_path, max_steps=3, learning_rate=3e-2)
    trainer = NFTTrainer(pipe, "jpeg_incompressibility", config, PROMPTS, peft_config=peft_config)
    trainer.train()
    saved = load_file(tmp_path / "pytorch_lora_weights.safetensors")
    folded, _ = portable_lora(trainer.policy.state_dict("ema"), peft_config)
    assert max_diff({k[len("transformer."):]: v for k, v in saved.items()}, folded) == 0
    with trainer.policy.ema_weights(), torch.no_grad():
        trained = _render(trainer.pipeline, family)
    fresh = load_saved(folder)
    base = _render(fresh, family)
    fresh.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.safetensors")
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(_render(fresh, family), trained, atol=1e-5, rtol=1e-5)
