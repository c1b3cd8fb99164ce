"""The engine's optimizer: AdamW's fused kernel where it is asked for (by default on CUDA devices)."""

from types import SimpleNamespace

import pytest
import torch

from diffusers_nft import NFTTrainer
from diffusers_nft.engine import uses_fused_adamw

from conftest import PROMPTS, lora_norm, tiny_config


@pytest.mark.slow  # 2 trainers; the optimizer's construction alone is tested in test_fused_adamw_follows_the_device
def test_fused_adamw_is_on_where_asked_and_trains_as_the_plain_one(tiny_pipeline_dir, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    trained = {}
    for fused in (None, True):  # None: the default, off on this CPU
        pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
        trainer = NFTTrainer(pipe, "jpeg_incompressibility", tiny_config(tmp_path / str(fused), max_steps=1,
                                                                         fused_adamw=fused), PROMPTS)
        assert bool(trainer.optimizer.optimizer.defaults["fused"]) is bool(fused)
        trainer.end_iteration(trainer.step())  # one optimizer step on the same gradients
        trained[fused] = trainer.policy.state_dict("trained")
    assert lora_norm(trained[None], trained[True]) < 1e-5 * (1 + sum(v.norm() for v in trained[None].values()))


def test_fused_adamw_follows_the_device_unless_told():
    def accelerator(device, distributed="NO"):
        from accelerate.utils import DistributedType

        return SimpleNamespace(device=torch.device(device), distributed_type=DistributedType[distributed])

    default, on, off = (SimpleNamespace(fused_adamw=v) for v in (None, True, False))
    assert uses_fused_adamw(default, accelerator("cuda")) is True
    assert uses_fused_adamw(default, accelerator("cuda", "DEEPSPEED")) is False
    assert uses_fused_adamw(default, accelerator("cpu")) is False
    assert uses_fused_adamw(on, accelerator("cpu")) is True and uses_fused_adamw(off, accelerator("cuda")) is False


def test_rollouts_and_images_run_in_eval_mode_and_training_in_train_mode(tmp_path):
    # A model built from a config starts in train mode; dropout or a mixture of experts' training routing (HiDream's)
    # would then sample differently from the pipeline.
    import tiny_pipelines

    pipe = tiny_pipelines.build_tiny_sd3_pipeline()
    assert pipe.transformer.training
    trainer = NFTTrainer(pipe, "jpeg_incompressibility", tiny_config(tmp_path, max_steps=2), PROMPTS)
    modes = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    trainer.step()
    sampled = modes[:trainer.plan.local_images // trainer.collector.batch_size * 4]  # 4 sampling steps per batch
    assert not any(sampled) and any(modes) and not pipe.transformer.training
    modes.clear()
    trainer.generate(["a red cat"], [0])
    assert modes and not any(modes)
