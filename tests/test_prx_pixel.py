"""PRXPixel (`PRXPixelFamily`): an x0-predicting pixel model with noise scale 2, sampled and trained as the unit-noise
rectified flow `u = x / s`. Its rollout is the pipeline's own image, it trains, and its LoRA (the class has no
`load_lora_weights`) loads into a fresh pipeline's transformer."""

import pytest
import tiny_matrix_pipelines
import torch
from conftest import check_the_lora_reproduces_the_trained_policy, euler_rollout

from diffusers_nft.lora_file import load_lora_file
from diffusers_nft.pipelines import PRXPixelFamily, get_family

PAIR = ["a red cat", "a blue dog"]


def _build():
    pipe = tiny_matrix_pipelines.build_tiny_prx_pixel_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _render(pipe, latents=None, generator=None):
    """The pipeline's own images in [0, 1] (its `output_type="pt"` gives raw pixels: `call_images` reads them)."""
    family = get_family(pipe)
    return family.call_images(pipe(prompt=PAIR, latents=latents, generator=generator, height=64, width=64,
                                   num_inference_steps=4, output_type="pt", return_dict=False,
                                   **family.cfg_free_call_kwargs())[0])


def test_the_rollout_from_unit_noise_is_the_pipelines_image_from_scaled_noise():
    pipe = _build()
    family = get_family(pipe)
    assert isinstance(family, PRXPixelFamily) and family.noise_scale == 2.0
    shape = family.latent_shape(64)
    assert shape == (3, 64, 64)
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = family.decode(euler_rollout(family, PAIR, noise, 4))
        theirs = _render(pipe, latents=noise * 2.0)  # the pipeline's own start: `randn * noise_scale`
        unscaled = _render(pipe, latents=noise)
    assert ours.shape == (2, 3, 64, 64)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert (ours - unscaled).abs().max() > 1e-2  # the scale matters: unit noise is not the pipeline's start


def test_its_velocity_is_the_pipelines_divided_by_the_noise_scale():
    pipe = _build()
    family = get_family(pipe)
    cond = family.encode_prompts(PAIR, torch.device("cpu"), 16)
    u = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.5, 0.01])  # the second below the pipeline's floor of 0.05
    with torch.no_grad():
        clean = pipe.transformer(hidden_states=2 * u, timestep=sigma, encoder_hidden_states=cond["encoder_hidden_states"],
                                 attention_mask=cond["attention_mask"], return_dict=False)[0]
        velocity = family.predict_velocity(u, sigma, cond)
    expected = (2 * u - clean) / torch.tensor([0.5, 0.05]).view(2, 1, 1, 1) / 2
    torch.testing.assert_close(velocity, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_it_trains_its_attention_and_its_lora_loads_into_a_fresh_transformer(tmp_path):
    trainer = check_the_lora_reproduces_the_trained_policy(
        _build, lambda pipe: _render(pipe, generator=torch.Generator().manual_seed(5)),
        lambda pipe, folder: load_lora_file(pipe, folder, "pytorch_lora_weights.safetensors"), tmp_path)
    adapted = {name.split(".attention.")[-1].rsplit(".lora_A", 1)[0]
               for name, _ in trainer.pipeline.transformer.named_modules() if name.endswith("lora_A")}
    assert adapted == {"img_qkv_proj", "txt_kv_proj", "to_out.0"}  # PRX's attention projections, all of them
