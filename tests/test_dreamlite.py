"""DreamLite (`DreamLiteFamily`): the one UNet denoiser. The family's Euler rollout is the pipeline's own (from the
noise its generator draws), both classes train, and the LoRA, written under `unet.` as the class has no
`save_lora_weights`, loads into a fresh pipeline's UNet as the start-up block and the card's snippet say."""

import pytest
import tiny_matrix_pipelines
import torch
from conftest import check_the_lora_reproduces_the_trained_policy, euler_rollout
from diffusers.utils.torch_utils import randn_tensor
from safetensors import safe_open

from diffusers_nft.hub import _lora_loader
from diffusers_nft.lora_file import denoiser_name, load_lora_file
from diffusers_nft.pipelines import DreamLiteFamily, get_family

PROMPT = "a red cat"


def _build(mobile: bool = False):
    pipe = tiny_matrix_pipelines.build_tiny_dreamlite_pipeline(mobile=mobile)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _render(pipe, seed: int = 3):
    """The pipeline's own latents for one prompt (it takes no `latents`: its generator draws the noise)."""
    return pipe(prompt=PROMPT, height=64, width=64, num_inference_steps=4, output_type="latent",
                generator=torch.Generator().manual_seed(seed), **get_family(pipe).cfg_free_call_kwargs()).images


@pytest.mark.parametrize("mobile", [False, True], ids=["dreamlite", "mobile"])
def test_the_rollout_is_the_pipelines_own_from_the_noise_its_generator_draws(mobile):
    pipe = _build(mobile)
    family = get_family(pipe)
    assert isinstance(family, DreamLiteFamily) and family.guided is not mobile
    assert denoiser_name(type(pipe)) == "unet" and family.denoiser is pipe.unet
    shape = family.latent_shape(64)
    noise = randn_tensor((1, *shape), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = euler_rollout(family, [PROMPT], noise, 4, max_sequence_length=200)
        theirs = _render(pipe)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert family.decode(ours).shape == (1, 3, 64, 64)


def test_the_distilled_class_refuses_guidance_before_any_call():
    family = get_family(_build(mobile=True))
    assert family.cfg_free_call_kwargs() == {}  # it warns whenever guidance_scale is given
    with pytest.raises(ValueError, match="distilled away"):
        family.guidance_call_kwargs(4.5)


def test_a_size_the_unet_cannot_halve_is_refused_with_valid_ones():
    with pytest.raises(ValueError, match="Use 48 or 64"):
        get_family(_build()).check_resolution(56)


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_it_trains_the_unet_and_its_lora_loads_into_a_fresh_unet(tmp_path):
    trainer = check_the_lora_reproduces_the_trained_policy(
        _build, _render, lambda pipe, folder: load_lora_file(pipe, folder, "pytorch_lora_weights.safetensors"),
        tmp_path)
    with safe_open(str(tmp_path / "pytorch_lora_weights.safetensors"), "pt") as f:
        assert all(key.startswith("unet.") for key in f.keys())
    assert _lora_loader("DreamLitePipeline")[1:] == ("pipe.unet.load_lora_adapter(", ', prefix="unet"')
    assert 'pipe.unet.load_lora_adapter(folder, weight_name=..., prefix="unet")' in trainer.describe()


def test_the_scripts_lora_layers_check_reads_the_unets_config(tmp_path):
    # A DreamLite folder has `unet/`, not `transformer/`: --lora_layers is checked against the UNet's config alone.
    import json

    from diffusers_nft.scripts import ScriptArguments, check_lora_layers

    _build().unet.save_config(str(tmp_path / "unet"))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DreamLitePipeline",
                                                           "unet": ["diffusers", "DreamLiteUNetModel"]}))
    check_lora_layers(ScriptArguments(pretrained_model_name_or_path=str(tmp_path), lora_layers="to_q,to_k"))
    with pytest.raises(ValueError, match=r"\['attn.nonexistent'\] match no linear module"):
        check_lora_layers(ScriptArguments(pretrained_model_name_or_path=str(tmp_path),
                                          lora_layers="to_q,attn.nonexistent"))
