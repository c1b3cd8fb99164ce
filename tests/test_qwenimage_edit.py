"""Qwen-Image-Edit-2509 (`QwenImageEditPlusPipeline`): the family's rollout is the pipeline's edit for the same
references, prompt and noise (the text encoder reads the references too); guidance's unconditional branch uses the
empty prompt read with the references; a run trains on each row's references, generation calls the pipeline one
prompt at a time, and the LoRA loads back into the class."""

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from diffusers_nft import NFTTrainer
from diffusers_nft.guidance import guided_velocity
from diffusers_nft.pipelines import QwenImageEditFamily, QwenImageEditPlusFamily, get_family
from diffusers_nft.pipelines.base import SOURCE
from diffusers_nft.sampling import rollout

import tiny_pipelines
from conftest import random_image, step_and_check_the_soft_update, tiny_config


@pytest.fixture(autouse=True)
def qwen_edit_sizes(monkeypatch):
    """References at 64^2 for the VAE and 32^2 for the text encoder (the pipelines' 1024^2 and 384^2 would give a
    tiny model 16,384 tokens per reference): the pipelines and the families read the same module values."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as edit
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", 64 * 64)
    monkeypatch.setattr(plus, "CONDITION_IMAGE_SIZE", 32 * 32)
    monkeypatch.setattr(edit, "calculate_dimensions", lambda area, ratio: (64, 64, None))


def _render(pipe, family, references, prompt, seed=5, **kwargs):
    noise = torch.randn(1, *family.latent_shape(64), generator=torch.Generator().manual_seed(seed))
    return pipe(prompt=prompt, image=references, latents=noise, output_type="pt",
                **{**family.call_kwargs(64, 4, 16), **kwargs}).images


def _cond(family, prompts, references):
    cond = family.encode_prompts(prompts, torch.device("cpu"), 16)
    cond[SOURCE] = family.encode_conditioning([{"image": r} for r in references], torch.device("cpu"), prompts)
    return cond


def test_the_family_samples_what_the_pipeline_samples_for_each_prompt_and_its_references():
    pipe = tiny_pipelines.build_tiny_qwenimage_edit_plus_pipeline()
    family = get_family(pipe)
    assert type(family) is QwenImageEditPlusFamily and family.max_prompts_per_call == 1
    prompts = ["make it blue", "put the second one on the left of the first one"]  # text states of two lengths
    references = [[random_image(1)], [random_image(2), random_image(3)]]
    shape = family.latent_shape(64)
    noise = torch.randn(1, *shape, generator=torch.Generator().manual_seed(5)).repeat(2, 1, 1)
    cond = _cond(family, prompts, [references[0], [random_image(2)]])  # rows of one batch give as many references
    with torch.no_grad():
        ours = family.decode(rollout(lambda x, s: family.predict_velocity(x, s, cond), family.sampling_sigmas(4, shape),
                                     noise, "euler"))
    for row, prompt in enumerate(prompts):
        theirs = _render(pipe, family, [references[0], [random_image(2)]][row], prompt)
        torch.testing.assert_close(ours[row : row + 1], theirs, atol=1e-4, rtol=0)
    two = _cond(family, prompts[1:], references[1:])
    with torch.no_grad():
        both = family.decode(rollout(lambda x, s: family.predict_velocity(x, s, two), family.sampling_sigmas(4, shape),
                                     noise[:1], "euler"))
    theirs = _render(pipe, family, references[1], prompts[1])
    torch.testing.assert_close(both, theirs, atol=1e-4, rtol=0)
    assert (theirs - ours[1:]).abs().max() > 1e-3  # the second reference matters


def test_the_first_qwen_image_edit_samples_what_its_pipeline_samples():
    pipe = tiny_pipelines.build_tiny_qwenimage_edit_pipeline()
    family = get_family(pipe)
    assert type(family) is QwenImageEditFamily and family.conditioning == {"image": 1}
    prompts, sources = ["make it blue", "turn it into a seven"], [random_image(1), random_image(2)]
    shape = family.latent_shape(64)
    noise = torch.randn(1, *shape, generator=torch.Generator().manual_seed(5)).repeat(2, 1, 1)
    cond = _cond(family, prompts, sources)
    with torch.no_grad():
        ours = family.decode(rollout(lambda x, s: family.predict_velocity(x, s, cond), family.sampling_sigmas(4, shape),
                                     noise, "euler"))
    for row in range(2):
        theirs = _render(pipe, family, sources[row], prompts[row])
        torch.testing.assert_close(ours[row : row + 1], theirs, atol=1e-4, rtol=0)
    assert (ours[0] - ours[1]).abs().max() > 1e-4  # prompt and source matter (8e-4 on this tiny model)


def test_guidance_drops_the_prompt_and_keeps_the_references_as_the_pipeline_does():
    pipe = tiny_pipelines.build_tiny_qwenimage_edit_plus_pipeline()
    family = get_family(pipe)
    prompt, references = "make it blue", [random_image(1)]
    cond = _cond(family, [prompt], [references])
    empty = _cond(family, [""], [references])
    x, sigma = torch.randn(1, *family.latent_shape(64), generator=torch.Generator().manual_seed(0)), torch.tensor([0.7])
    with torch.no_grad():
        guided = guided_velocity(family.predict_velocity, x, sigma, cond, {}, 3.0)
        v_cond, v_empty = family.predict_velocity(x, sigma, cond), family.predict_velocity(x, sigma, empty)
    torch.testing.assert_close(guided, v_empty + 3.0 * (v_cond - v_empty), atol=1e-5, rtol=0)
    assert (v_cond - v_empty).abs().max() > 1e-3


@pytest.mark.slow  # 6 s; the fast set trains on conditioning through Kontext and FLUX.2, and pins this family above
def test_a_run_trains_on_each_rows_references_and_the_lora_loads_back(tmp_path):
    folder = tmp_path / "sources"
    folder.mkdir()
    rows = []
    for i, prompt in enumerate(["make it blue", "turn it into a seven", "make it red", "add a dot"]):
        path = str(folder / f"source_{i}.png")
        random_image(40 + i).save(path)
        rows.append({"prompt": prompt, "source": path})
    seen = []

    def likeness(images, prompts, metadata):
        seen.extend(zip(prompts, [m["source_image"] for m in metadata]))
        return [-(i - m["source_image"]).abs().mean().item() for i, m in zip(images, metadata)]

    pipe = tiny_pipelines.build_tiny_qwenimage_edit_plus_pipeline()
    config = tiny_config(tmp_path / "run", max_steps=2, learning_rate=3e-2, prompts_per_iteration=2, group_size=2,
                         image_column="source", eval_num_steps=3)
    trainer = NFTTrainer(pipe, likeness, config, rows)
    step_and_check_the_soft_update(trainer)
    trainer.train()
    by_prompt = {row["prompt"]: np.array(Image.open(row["source"]).convert("RGB")) for row in rows}
    sampled = [(p, s) for p, s in seen if p in by_prompt]
    assert len(sampled) >= 4
    for prompt, source in sampled:
        assert np.array_equal((source.permute(1, 2, 0) * 255).round().byte().numpy(), by_prompt[prompt])
    assert any("lora_B" in k for k in load_file(tmp_path / "run" / "pytorch_lora_weights.safetensors"))
    family, references = trainer.family, [random_image(1)]
    trained = _render(pipe, family, references, "make it blue")
    fresh = tiny_pipelines.build_tiny_qwenimage_edit_plus_pipeline()
    base = _render(fresh, family, references, "make it blue")
    fresh.load_lora_weights(str(tmp_path / "run"), weight_name="pytorch_lora_weights.safetensors")
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(_render(fresh, family, references, "make it blue"), trained, atol=1e-5, rtol=1e-5)
    trainer.args.base_model_id = "someone/tiny-qwen-edit"
    card = ModelCard.load(trainer.create_model_card("someone/qwen-edit-nft"))
    assert card.data.to_dict()["pipeline_tag"] == "image-to-image" and "qwen-image-edit" in card.data.tags
