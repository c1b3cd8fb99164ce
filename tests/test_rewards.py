import pytest
import torch

from diffusers_nft.rewards import (
    RewardError,
    WeightedRewards,
    available_rewards,
    jpeg_compressibility,
    jpeg_incompressibility,
    register_reward,
)


def _images():
    flat = torch.full((1, 3, 64, 64), 0.5)
    noisy = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return torch.cat([flat, noisy])


def test_jpeg_rewards_rank_flat_above_noise():
    images = _images()
    compress = jpeg_compressibility(images, ["a", "b"], [{}, {}])
    incompress = jpeg_incompressibility(images, ["a", "b"], [{}, {}])
    assert compress[0] > compress[1] and incompress[1] > incompress[0]
    assert 0 < incompress[0] < 2 < incompress[1]  # kilobytes
    # the release's scales: compressibility is minus the size in kB over 500, incompressibility the size in kB
    assert compress == [-v / 500 for v in incompress]


def test_jpeg_sizes_are_the_bytes_of_a_quality_95_jpeg():
    import io

    from diffusers_nft.visualize import to_pil

    images = _images()
    buffer = io.BytesIO()
    to_pil(images[1:])[0].save(buffer, format="JPEG", quality=95)
    assert jpeg_incompressibility(images[1:], ["b"], [{}]) == [buffer.tell() / 1000]


def test_weighted_sum_with_names_and_callables():
    def brightness(images, prompts, metadata):
        return images.mean(dim=(1, 2, 3))

    rewards = WeightedRewards(["jpeg_incompressibility", brightness], weights=[0.5, 2.0])
    scores = rewards(_images(), ["a", "b"], [{}, {}])
    assert set(scores) == {"jpeg_incompressibility", "brightness"}
    total = rewards.combine(scores)
    torch.testing.assert_close(total, 0.5 * scores["jpeg_incompressibility"] + 2.0 * scores["brightness"])


def test_registry():
    assert {"jpeg_compressibility", "jpeg_incompressibility"} <= set(available_rewards())
    register_reward("constant_one", lambda: (lambda images, prompts, metadata: [1.0] * len(prompts)))
    assert WeightedRewards("constant_one")(_images(), ["a", "b"], [{}, {}])["constant_one"].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="Unknown reward 'pickscor'"):
        WeightedRewards("pickscor")
    with pytest.raises(ValueError, match="weight"):
        WeightedRewards(["jpeg_compressibility"], weights=[1.0, 2.0])


def _raises(images, prompts, metadata):
    raise RuntimeError("model exploded")


def _nan_for_second(images, prompts, metadata):
    return [0.0, float("nan")]


def _too_short(images, prompts, metadata):
    return [0.0]


@pytest.mark.parametrize(
    "func, message",
    [
        (_raises, r"Reward '_raises' raised RuntimeError: model exploded .*'a cat'"),
        (_nan_for_second, r"Reward '_nan_for_second' returned nan for the image of prompt 'a dog'"),
        (_too_short, r"Reward '_too_short' returned 1 values for 2 images \(first prompt 'a cat'\)"),
    ],
)
def test_bad_reward_outputs_name_the_reward_and_prompt(func, message):
    with pytest.raises(RewardError, match=message):
        WeightedRewards(func)(_images(), ["a cat", "a dog"], [{}, {}])


def test_missing_extra_names_the_pip_command():
    from diffusers_nft.rewards.base import require

    with pytest.raises(ImportError, match=r"pip install 'diffusers-nft\[ocr\]'"):
        require("a_module_that_is_not_installed", "ocr")


def test_registered_model_rewards():
    assert {"clipscore", "pickscore", "hpsv2", "aesthetic", "ocr", "geneval"} <= set(available_rewards())
