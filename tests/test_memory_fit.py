"""The rollout batch chosen from the device's memory (`memory_fit.py`): the arithmetic, and a run on a device
whose memory a stand-in reports (only CUDA reports its own; these machines have none)."""

import pytest

from diffusers_nft import NFTTrainer
from diffusers_nft.memory_fit import GIB, fit_batch

from conftest import tiny_config

PROMPTS = ["a red cat", "a blue dog", "a green tree", "a yellow car"]


def test_the_batch_is_the_most_images_that_fit_in_the_share_of_free_memory():
    def peak_of(count):  # 1 GiB the model's workspace, 0.5 GiB each image
        return int((1 + 0.5 * count) * GIB)

    assert fit_batch(peak_of, free=10 * GIB, most=64)[0] == 15  # (0.85 x 10 - 1) / 0.5
    assert fit_batch(peak_of, free=10 * GIB, most=64, headroom=0.5)[0] == 8
    assert fit_batch(peak_of, free=10 * GIB, most=12)[0] == 12  # never more than a process samples
    assert fit_batch(peak_of, free=1 * GIB, most=64)[0] == 1  # one image even where it does not seem to fit
    batch, reason = fit_batch(peak_of, free=10 * GIB, most=64)
    assert "0.50 GiB per image measured, 10.0 GiB free" in reason and "--sample_batch_size" in reason
    measured = []
    assert fit_batch(lambda n: measured.append(n) or GIB, free=GIB, most=1)[0] == 1 and measured == []


class MeasuredDevice:
    """A device of `free` bytes on which sampling `n` images peaks at `n` GiB: the transformer's batch, as seen."""

    def __init__(self, transformer, free: float):
        self.free_bytes, self.batches, self.transformer = int(free), [], transformer

    def free(self) -> int:
        return self.free_bytes

    def peak(self, run) -> int:
        seen = []
        hook = self.transformer.register_forward_pre_hook(lambda _, args, kwargs: seen.append(
            kwargs["hidden_states"].shape[0]), with_kwargs=True)
        try:
            run()
        finally:
            hook.remove()
        self.batches.append(max(seen))
        return max(seen) * GIB


def test_a_run_samples_in_the_batch_its_device_memory_fits(tiny_pipeline, tmp_path):
    device = MeasuredDevice(tiny_pipeline.transformer, free=6.5 * GIB / 0.85)  # room for 6 images of 1 GiB
    import diffusers_nft.trainer as trainer_module

    original = trainer_module.device_memory
    trainer_module.device_memory = lambda _: device
    try:
        config = tiny_config(tmp_path, max_steps=1, sample_batch_size=None, prompts_per_iteration=2, group_size=4)
        trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", config, PROMPTS)
    finally:
        trainer_module.device_memory = original
    assert device.batches == [1, 4]  # measured on two real sampling batches, CFG-free as the rollouts
    assert trainer.collector.batch_size == 6
    assert "6 images per process (chosen from the device's memory: 1.00 GiB per image measured" in trainer.describe()
    decoded, decode = [], trainer.family.decode
    trainer.family.decode = lambda latents: decoded.append(latents.shape[0]) or decode(latents)
    trainer.step()
    assert decoded == [6, 2]  # the iteration's 8 images in batches of 6


def test_a_given_sample_batch_size_is_used_as_it_is_and_nothing_is_measured(tiny_pipeline, tmp_path):
    import diffusers_nft.trainer as trainer_module

    original, asked = trainer_module.device_memory, []
    trainer_module.device_memory = lambda device: asked.append(device)
    try:
        trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path, sample_batch_size=3), PROMPTS)
    finally:
        trainer_module.device_memory = original
    assert asked == [] and trainer.collector.batch_size == 3
    assert "3 images per process (sample_batch_size)" in trainer.describe()


def test_without_a_measurable_device_the_batch_is_the_fallback_and_the_config_checks_it(tiny_pipeline, tmp_path):
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path, sample_batch_size=None), PROMPTS)
    assert trainer.collector.batch_size == 8  # a CPU reports no memory to fit
    assert "8 images per process (the default where memory is not measured)" in trainer.describe()
    with pytest.raises(ValueError, match="sample_batch_size must be >= 1 or None"):
        tiny_config(tmp_path, sample_batch_size=0).validate()
