"""Drift monitors: their values on images and velocities we know, and their place in each iteration's metrics."""

import pytest
import torch

from diffusers_nft import NFTTrainer
from diffusers_nft.monitors import group_diversity, image_stats, thumbnails, velocity_stats

from conftest import PROMPTS, tiny_config


def test_image_stats_and_diversity_on_known_images():
    white, red = torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1
    assert image_stats(white) == {"brightness": 1.0, "saturation": 0.0}
    stats = image_stats(red)
    assert abs(stats["brightness"] - 1 / 3) < 1e-6 and stats["saturation"] == 1.0
    same = torch.full((4, 3, 8, 8), 0.5)
    assert group_diversity(same, torch.tensor([0, 0, 1, 1])) == 0.0
    pair = torch.stack([torch.zeros(3, 8, 8), torch.ones(3, 8, 8)])
    assert abs(group_diversity(pair, torch.tensor([0, 0])) - 1.0) < 1e-6  # RMS distance of black and white
    assert thumbnails(torch.rand(2, 5, 3, 64, 64)).shape == (2, 3, 32, 32)  # videos: their middle frames


def test_velocity_stats():
    v = torch.randn(3, 4, 8, 8)
    stats = velocity_stats(2 * v, v)
    assert abs(stats["velocity_norm_ratio"] - 2) < 1e-5 and abs(stats["kl"] - v.pow(2).mean().item()) < 1e-5


@pytest.mark.slow  # a 2-step run; the monitors' maths have their own tests here
def test_every_iteration_logs_the_monitors(tiny_pipeline, tmp_path):
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path, max_steps=2, learning_rate=3e-2),
                         PROMPTS)
    first, second = trainer.train()
    for key in ("brightness", "saturation", "diversity", "velocity_norm_ratio", "kl"):
        assert f"monitor/{key}" in first and torch.isfinite(torch.tensor(second[f"monitor/{key}"]))
    # theta is the base model until the first optimizer step (LoRA B starts at 0): ratio 1, KL 0
    assert first["monitor/velocity_norm_ratio"] == 1.0 and first["monitor/kl"] == 0.0
    assert second["monitor/kl"] > 0 and 0 < second["monitor/diversity"] < 1
    from tiny_pipelines import build_tiny_sd3_pipeline

    quiet = NFTTrainer(build_tiny_sd3_pipeline(), "jpeg_compressibility",
                       tiny_config(tmp_path / "off", max_steps=1, monitors=False), PROMPTS)
    assert not any(key.startswith("monitor/") for key in quiet.train()[0])
