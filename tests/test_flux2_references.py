"""FLUX.2's reference images (`Flux2KleinPipeline(image=[...])`): the family's rollout is the pipeline's for the
same references, prompt and noise; a run trains on each row's references (several per row); generation calls the
pipeline once per row's references, since its `image` list is shared by the call; the LoRA loads back."""

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from diffusers_nft import NFTTrainer
from diffusers_nft.conditioning import ConditioningError
from diffusers_nft.generation import call_ranges, generate_images
from diffusers_nft.pipelines import Flux2Family, get_family
from diffusers_nft.pipelines.base import SOURCE
from diffusers_nft.pipelines.flux2 import FLUX2_TARGETS
from diffusers_nft.policy import make_lora_config
from diffusers_nft.sampling import rollout

import tiny_pipelines
from conftest import load_saved, random_image, step_and_check_the_soft_update, tiny_config


@pytest.fixture(scope="module")
def klein_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("klein"))
    tiny_pipelines.build_tiny_flux2_klein_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """Prompt rows with two reference images each, by path."""
    folder = tmp_path_factory.mktemp("references")
    out = []
    for i, prompt in enumerate(["put the cat on the chair", "the two in one room", "a poster of both", "swap them"]):
        paths = [str(folder / f"ref_{i}_{k}.png") for k in range(2)]
        for k, path in enumerate(paths):
            random_image(20 + 2 * i + k).save(path)
        out.append({"prompt": prompt, "references": paths})
    return out


def _render(pipe, family, references, prompts, seed=5):
    noise = torch.randn(len(prompts), *family.latent_shape(64), generator=torch.Generator().manual_seed(seed))
    return pipe(prompt=prompts, image=references, latents=family.pipeline_latents(noise), output_type="pt",
                **family.call_kwargs(64, 4, 16)).images


def test_the_family_samples_what_the_pipeline_samples_for_the_same_references(klein_dir):
    pipe = load_saved(klein_dir)
    family = get_family(pipe)
    assert type(family) is Flux2Family and family.conditioning_shared_by_call
    references, prompts = [random_image(1), random_image(2)], ["put the cat on the chair", "a poster of both"]
    shape = family.latent_shape(64)
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    cond = family.encode_prompts(prompts, torch.device("cpu"), 16)
    cond[SOURCE] = family.encode_conditioning([{"image": references}] * 2, torch.device("cpu"))
    assert cond[SOURCE]["reference_latents"].shape == (2, 2 * shape[0], shape[1])
    assert cond[SOURCE]["reference_ids"][0, :, 0].unique().tolist() == [10, 20]  # each reference its own time
    with torch.no_grad():
        ours = family.decode(rollout(lambda x, s: family.predict_velocity(x, s, cond), family.sampling_sigmas(4, shape),
                                     noise, "euler"))
        text_only = _render(pipe, family, None, prompts)
        one_reference = _render(pipe, family, references[:1], prompts)
    theirs = _render(pipe, family, references, prompts)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert (theirs - text_only).abs().max() > 1e-3 and (theirs - one_reference).abs().max() > 1e-3


def test_generation_calls_the_pipeline_once_per_rows_references(klein_dir):
    pipe = load_saved(klein_dir)
    family = get_family(pipe)
    first, second = {"image": [random_image(1), random_image(2)]}, {"image": [random_image(3), random_image(4)]}
    assert list(call_ranges(5, 4, [first, first, second, second, second])) == [(0, 2), (2, 5)]
    assert list(call_ranges(5, 4)) == [(0, 4), (4, 5)]
    kwargs = dict(call_kwargs=family.call_kwargs(64, 3, 16), family=family)
    prompts, seeds = ["a", "b", "c"], [7, 8, 9]
    together = generate_images(pipe, prompts, seeds, conditioning=[first, second, second], batch_size=3,
                               **kwargs)
    alone = torch.cat([generate_images(pipe, [p], [s], conditioning=[c], **kwargs)
                       for p, s, c in zip(prompts, seeds, [first, second, second])])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


@pytest.mark.slow  # 3 s; the fast set trains conditioned runs through Kontext and pins FLUX.2's references above
def test_a_run_trains_on_each_rows_references_and_the_lora_loads_back(klein_dir, rows, tmp_path):
    seen = []

    def likeness(images, prompts, metadata):  # how close each image is to its row's first reference
        seen.extend(zip(prompts, [m["source_image"] for m in metadata]))
        return [-(i - m["source_image"][0]).abs().mean().item() for i, m in zip(images, metadata)]

    pipe = load_saved(klein_dir)
    lora = make_lora_config(pipe.transformer, default_targets=FLUX2_TARGETS, rank=4, alpha=12)
    config = tiny_config(tmp_path, max_steps=2, learning_rate=3e-2, prompts_per_iteration=2, group_size=2,
                         image_column="references", eval_num_steps=3)
    trainer = NFTTrainer(pipe, likeness, config, rows, peft_config=lora)
    step_and_check_the_soft_update(trainer)
    trainer.train()
    by_prompt = {row["prompt"]: row["references"] for row in rows}
    sampled = [(p, s) for p, s in seen if p in by_prompt]
    assert len(sampled) >= 4
    for prompt, sources in sampled:  # both references of the image's own row, as (2, 3, 64, 64)
        assert sources.shape == (2, 3, 64, 64)
        for k, path in enumerate(by_prompt[prompt]):
            expected = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
            assert torch.equal((sources[k] * 255).round().byte(), expected)
    assert any("lora_B" in k for k in load_file(tmp_path / "pytorch_lora_weights.safetensors"))
    family, references, prompts = trainer.family, [random_image(1), random_image(2)], ["swap them", "a poster of both"]
    trained = _render(pipe, family, references, prompts)  # after train(): the pipeline holds the saved LoRA
    fresh = load_saved(klein_dir)
    base = _render(fresh, family, references, prompts)
    fresh.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.safetensors")
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(_render(fresh, family, references, prompts), trained, atol=1e-5, rtol=1e-5)
    trainer.args.base_model_id = "someone/tiny-klein"
    card = ModelCard.load(trainer.create_model_card("someone/klein-nft"))
    assert card.data.to_dict()["pipeline_tag"] == "image-to-image"
    assert "images/image_0_1.png" in card.text  # the snippet loads both references of the first prompt


def test_rows_with_another_number_of_references_are_refused_before_compute(klein_dir, rows, tmp_path):
    uneven = [rows[0], {**rows[1], "references": rows[1]["references"][:1]}]
    with pytest.raises(ConditioningError, match=r"row 1, column 'references': 1 image\(s\), but row 0 gives 2"):
        NFTTrainer(load_saved(klein_dir), "jpeg_incompressibility", tiny_config(tmp_path, image_column="references"),
                   uneven)
