"""The iteration's shape, from the config and the process count alone (no model)."""

import pytest

from diffusers_nft import NFTConfig
from diffusers_nft.plan import IterationPlan


def test_release_geometry_on_8_processes():
    plan = IterationPlan.from_config(NFTConfig(train_batch_size=9), num_processes=8)
    # 48 x 24 = 1152 images, 144 per process; int(0.99 * 10) = 9 levels; ceil(144 / 9) = 16 micro-batches each
    assert (plan.local_images, plan.levels_per_image, plan.micro_batches) == (144, 9, 144)
    assert (plan.accumulation, plan.optimizer_steps) == (144, 1)
    assert plan.images_of(0) == slice(0, 144) and plan.images_of(7) == slice(1008, 1152)


def test_the_ocr_recipes_two_optimizer_steps_and_explicit_accumulation():
    plan = IterationPlan.from_config(NFTConfig.from_recipe("sd35m_ocr", train_batch_size=9), num_processes=8)
    assert (plan.accumulation, plan.optimizer_steps) == (72, 2)
    plan = IterationPlan.from_config(NFTConfig(train_batch_size=9, gradient_accumulation_steps=16), 8)
    assert plan.optimizer_steps == 9


@pytest.mark.parametrize("overrides, processes, message", [
    ({}, 5, "1152 images must split evenly over 5 processes"),
    ({"train_batch_size": 9, "optimizer_steps_per_iteration": 5}, 8, "optimizer_steps_per_iteration=5 must divide"),
    ({"train_batch_size": 9, "gradient_accumulation_steps": 7}, 8, "gradient_accumulation_steps=7 must divide"),
])
def test_geometry_that_does_not_divide_is_refused_with_the_fix(overrides, processes, message):
    with pytest.raises(ValueError, match=message):
        IterationPlan.from_config(NFTConfig(**overrides), processes)
