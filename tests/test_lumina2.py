"""A third family, to show that one is one family file: Lumina-Image 2.0 (reversed time, negated velocity)."""

import pytest
import torch
from conftest import PROMPTS, max_diff, tiny_config
from diffusers import Lumina2Pipeline
from safetensors.torch import load_file

from diffusers_nft import NFTTrainer
from diffusers_nft.lora_file import portable_lora
from diffusers_nft.pipelines import Lumina2Family, get_family
from diffusers_nft.policy import make_lora_config


def _render(pipe):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    return pipe(["a red cat", "a blue dog"], latents=latents, num_inference_steps=4, guidance_scale=1.0,
                height=64, width=64, max_sequence_length=256, output_type="pt").images


def test_lumina2_velocity_convention_matches_the_pipeline(tmp_path):
    from tiny_pipelines import build_tiny_lumina2_pipeline

    pipe = build_tiny_lumina2_pipeline()
    pipe.set_progress_bar_config(disable=True)
    family = get_family(pipe)
    assert isinstance(family, Lumina2Family)
    # Euler on the family's grid lands where the pipeline's own loop does: same grid, same velocity convention
    from diffusers_nft.sampling import rollout

    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    cond = family.encode_prompts(["a red cat", "a blue dog"], torch.device("cpu"), 256)
    sigmas = family.sampling_sigmas(3, latents.shape[1:])
    ours = rollout(lambda x, s: family.predict_velocity(x, s, cond), sigmas, latents, "euler")
    theirs = pipe(["a red cat", "a blue dog"], latents=latents, num_inference_steps=3, guidance_scale=1.0,
                  height=64, width=64, max_sequence_length=256, output_type="latent").images
    assert (ours - latents).abs().max() > 1e-2
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_lumina2_trains_and_its_lora_loads(tmp_path):
    from tiny_pipelines import build_tiny_lumina2_pipeline

    folder = str(tmp_path / "pipe")
    build_tiny_lumina2_pipeline().save_pretrained(folder)
    pipe = Lumina2Pipeline.from_pretrained(folder)
    peft_config = make_lora_config(pipe.transformer, default_targets=Lumina2Family.default_lora_targets, rank=4, alpha=8)
    config = tiny_config(tmp_path / "run", max_steps=3, learning_rate=3e-2, max_sequence_length=256)
    trainer = NFTTrainer(pipe, "jpeg_incompressibility", config, PROMPTS, peft_config=peft_config)
    trainer.train()
    saved = load_file(tmp_path / "run" / "pytorch_lora_weights.safetensors")
    folded, _ = portable_lora(trainer.policy.state_dict("ema"), peft_config)  # alpha / r in lora_B
    assert max_diff({k[len("transformer."):]: v for k, v in saved.items()}, folded) == 0
    with trainer.policy.ema_weights():
        trained = _render(trainer.pipeline)
    fresh = Lumina2Pipeline.from_pretrained(folder)
    fresh.set_progress_bar_config(disable=True)
    base = _render(fresh)
    fresh.load_lora_weights(str(tmp_path / "run"), weight_name="pytorch_lora_weights.safetensors")
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(_render(fresh), trained, atol=1e-5, rtol=1e-5)
