"""ControlNets (`StableDiffusion3ControlNetPipeline`, `FluxControlNetPipeline`): the family's rollout is the
pipeline's for the same control image, prompt and noise; a run trains the transformer's LoRA on each row's control
image with the ControlNet frozen; the LoRA loads back into the class; a run without control images, and a ControlNet
the family cannot follow, are refused before compute."""

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from diffusers_nft import NFTTrainer
from diffusers_nft.conditioning import ConditioningError
from diffusers_nft.pipelines import FluxControlNetFamily, SD3ControlNetFamily, get_family
from diffusers_nft.pipelines.base import SOURCE
from diffusers_nft.sampling import rollout

import tiny_pipelines
from conftest import PROMPTS, load_saved, step_and_check_the_soft_update, tiny_config


def _edges(seed: int, size: int = 64) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(((torch.rand(size, size, generator=g) > 0.8).float() * 255).byte().numpy()).convert("RGB")


FAMILIES = {"sd3": SD3ControlNetFamily, "flux": FluxControlNetFamily}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def controlnet_dir(request, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp(f"{request.param}-controlnet"))
    getattr(tiny_pipelines, f"build_tiny_{request.param}_controlnet_pipeline")().save_pretrained(folder)
    return folder


def _render(pipe, family, controls, prompts):
    noise = torch.randn(len(prompts), *family.latent_shape(64), generator=torch.Generator().manual_seed(5))
    return pipe(prompt=prompts, control_image=controls, latents=noise, output_type="pt",
                **family.call_kwargs(64, 4, 16)).images


def test_the_family_samples_what_the_pipeline_samples_for_the_same_control_image(controlnet_dir):
    pipe = load_saved(controlnet_dir)
    family = get_family(pipe)
    assert type(family) in FAMILIES.values() and family.required_conditioning == ("control_image",)
    assert not any(p.requires_grad for p in pipe.controlnet.parameters())
    controls, prompts = [_edges(1), _edges(2)], ["a red cat", "a blue dog"]
    shape = family.latent_shape(64)
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    cond = family.encode_prompts(prompts, torch.device("cpu"), 16)
    cond[SOURCE] = family.encode_conditioning([{"control_image": c} for c in controls], torch.device("cpu"))
    with torch.no_grad():
        ours = family.decode(rollout(lambda x, s: family.predict_velocity(x, s, cond), family.sampling_sigmas(4, shape),
                                     noise, "euler"))
        other = _render(pipe, family, [_edges(3), _edges(4)], prompts)
    theirs = _render(pipe, family, controls, prompts)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert (theirs - other).abs().max() > 1e-3  # the control image matters


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_a_run_trains_the_transformer_on_each_rows_control_image_and_the_lora_loads_back(controlnet_dir, tmp_path):
    folder = tmp_path / "controls"
    folder.mkdir()
    rows = []
    for i, prompt in enumerate(PROMPTS[:4]):
        rows.append({"prompt": prompt, "edges": str(folder / f"edges_{i}.png")})
        _edges(50 + i).save(rows[-1]["edges"])
    pipe = load_saved(controlnet_dir)
    frozen = {k: v.clone() for k, v in pipe.controlnet.state_dict().items()}
    config = tiny_config(tmp_path / "run", max_steps=2, learning_rate=3e-2, control_column="edges",
                         eval_num_steps=3)
    trainer = NFTTrainer(pipe, "jpeg_incompressibility", config, rows)
    step_and_check_the_soft_update(trainer)
    trainer.train()
    assert all(torch.equal(frozen[k], v) for k, v in pipe.controlnet.state_dict().items())
    assert all(p.grad is None for p in pipe.controlnet.parameters())
    weights = load_file(tmp_path / "run" / "pytorch_lora_weights.safetensors")
    assert weights and all(k.startswith("transformer.") for k in weights)
    family, controls, prompts = trainer.family, [_edges(1), _edges(2)], ["a red cat", "a blue dog"]
    trained = _render(pipe, family, controls, prompts)  # after train(): the pipeline holds the saved LoRA
    fresh = load_saved(controlnet_dir)
    base = _render(fresh, family, controls, prompts)
    fresh.load_lora_weights(str(tmp_path / "run"), weight_name="pytorch_lora_weights.safetensors")
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(_render(fresh, family, controls, prompts), trained, atol=1e-5, rtol=1e-5)
    trainer.args.base_model_id = "someone/tiny-controlnet"
    card = ModelCard.load(trainer.create_model_card("someone/controlnet-nft"))
    assert card.data.to_dict()["pipeline_tag"] == "image-to-image" and "controlnet" in card.data.tags
    assert "control_image=" in card.text


def test_a_run_without_control_images_is_refused_before_compute(controlnet_dir, tmp_path):
    with pytest.raises(ConditioningError, match="needs \\['control_image'\\] for every prompt: name the dataset "
                                                "column with --control_column"):
        NFTTrainer(load_saved(controlnet_dir), "jpeg_incompressibility", tiny_config(tmp_path), PROMPTS)


def test_a_union_flux_controlnet_is_refused_with_the_reason():
    from diffusers import FluxControlNetModel

    pipe = tiny_pipelines.build_tiny_flux_controlnet_pipeline()
    config = dict(pipe.controlnet.config)
    pipe.controlnet = FluxControlNetModel(**{k: v for k, v in config.items() if not k.startswith("_")} | {"num_mode": 3})
    with pytest.raises(ValueError, match="union ControlNets \\(control_mode\\) and several at once"):
        get_family(pipe)
