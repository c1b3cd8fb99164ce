"""Every solver trains every image-conditioned family: one iteration each, with the transformer calls its sampling
makes counted and the soft update of the old policy pinned (Kontext's own test does the same in the fast set)."""

import pytest
import torch
from PIL import Image

from diffusers_nft import NFTTrainer

import tiny_pipelines
from conftest import count_sampling_calls, expected_sampling_calls, step_and_check_the_soft_update, tiny_config

SOLVERS = ["dpm_solver", "euler", "heun", "unipc"]
# family -> (its tiny builder, the call argument its column feeds, config overrides)
BUILDS = {
    "flux2_references": ("build_tiny_flux2_klein_pipeline", "image", {}),
    "qwenimage_edit_plus": ("build_tiny_qwenimage_edit_plus_pipeline", "image", {}),
    "sd3_controlnet": ("build_tiny_sd3_controlnet_pipeline", "control_image", {}),
    "flux_controlnet": ("build_tiny_flux_controlnet_pipeline", "control_image", {}),
    "wan_i2v": ("build_tiny_wan_i2v_pipeline", "image", {"num_frames": 5}),
    "traced_flux_control": ("build_tiny_flux_control_pipeline", "control_image", {}),
}
COLUMNS = {"image": "image_column", "control_image": "control_column"}


@pytest.fixture(autouse=True)
def qwen_edit_sizes(monkeypatch):
    """Qwen-Image-Edit's references at 64^2 and 32^2 (see tests/test_qwenimage_edit.py)."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", 64 * 64)
    monkeypatch.setattr(plus, "CONDITION_IMAGE_SIZE", 32 * 32)


def _rows(folder):
    rows = []
    for i, prompt in enumerate(["make it blue", "a red cat", "a tree", "a house"]):
        path = str(folder / f"source_{i}.png")
        g = torch.Generator().manual_seed(80 + i)
        Image.fromarray((torch.rand(64, 64, 3, generator=g) * 255).byte().numpy()).save(path)
        rows.append({"prompt": prompt, "source": path})
    return rows


@pytest.mark.slow  # 24 one-iteration runs (about 25 s); Kontext's every-solver test is in the fast set
@pytest.mark.parametrize("sampler", SOLVERS)
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_every_solver_trains_every_image_conditioned_family(name, sampler, tmp_path):
    builder, arg, overrides = BUILDS[name]
    pipe = getattr(tiny_pipelines, builder)()
    pipe.set_progress_bar_config(disable=True)
    config = tiny_config(tmp_path, max_steps=1, sampler=sampler, prompts_per_iteration=2, group_size=2,
                         **{COLUMNS[arg]: "source"}, **overrides)
    trainer = NFTTrainer(pipe, "jpeg_incompressibility", config, _rows(tmp_path))
    calls = count_sampling_calls(trainer)
    metrics = step_and_check_the_soft_update(trainer)
    assert calls == [expected_sampling_calls(config)] and metrics["grad_norm"] > 0
