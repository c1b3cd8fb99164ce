#!/usr/bin/env python
"""Train, checkpoint and resume under a distributed launcher config (DDP, FSDP2, DeepSpeed): the GPU check.

accelerate runs FSDP and DeepSpeed on GPUs only. On CPU, `tests/test_fsdp.py` drives `fully_shard` directly and
`tests/test_deepspeed.py` hands accelerate the gloo backend. Here the same is checked on GPUs through
`accelerate launch` and the configs in `examples/accelerate_configs/`, on the tiny offline SD3 pipeline
(CONFIG=examples/accelerate_configs/deepspeed_zero2.yaml for DeepSpeed; --num_processes 2 or more for sharding
across GPUs):

    CONFIG=examples/accelerate_configs/fsdp.yaml
    accelerate launch --config_file $CONFIG --num_processes 1 benchmarks/sharded_check.py train  /tmp/check/full
    mkdir -p /tmp/check/resumed && cp -r /tmp/check/full/checkpoint-2 /tmp/check/resumed/
    accelerate launch --config_file $CONFIG --num_processes 1 benchmarks/sharded_check.py train  /tmp/check/resumed
    python benchmarks/sharded_check.py compare /tmp/check/full /tmp/check/resumed

`train` runs 4 iterations (a checkpoint after 2) or resumes from the newest checkpoint in the folder; `compare`
prints whether the resumed LoRA equals the uninterrupted one and whether `load_lora_weights` changes the output.
"""

import os
import sys

import torch

from diffusers_nft import NFTConfig, NFTTrainer
from diffusers_nft.lora_file import LORA_WEIGHT_NAME

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))  # the tiny pipelines
from tiny_pipelines import build_tiny_sd3_pipeline  # noqa: E402

PROMPTS = ["a red square", "a blue circle", "a green triangle", "a yellow star"]


def train(output_dir: str) -> None:
    config = NFTConfig(
        output_dir=output_dir, report_to="none", resolution=64, max_sequence_length=16, num_sampling_steps=4,
        prompts_per_iteration=2, group_size=4, sample_batch_size=8, train_batch_size=4, learning_rate=1e-3,
        max_steps=4, save_steps=2, resume_from_checkpoint="latest", validation_prompts=None,
        mixed_precision="bf16" if torch.cuda.is_available() else "no",
    )
    trainer = NFTTrainer(build_tiny_sd3_pipeline(seed=0), "jpeg_compressibility", config, PROMPTS)
    lora = next(p for n, p in trainer.pipeline.transformer.named_parameters() if "lora_A.default" in n)
    if trainer.accelerator.is_main_process:
        print(f"distributed type: {trainer.accelerator.distributed_type}, processes: {trainer.accelerator.num_processes}, "
              f"LoRA parameter: {type(lora).__name__} {tuple(lora.shape)} {lora.dtype}", flush=True)
    trainer.train()


def compare(full_dir: str, resumed_dir: str) -> None:
    from safetensors.torch import load_file

    full = load_file(os.path.join(full_dir, LORA_WEIGHT_NAME))
    resumed = load_file(os.path.join(resumed_dir, LORA_WEIGHT_NAME))
    diff = max((full[k].float() - resumed[k].float()).abs().max().item() for k in full)
    pipe = build_tiny_sd3_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)

    def sample():
        return pipe("a red square", height=64, width=64, num_inference_steps=4, guidance_scale=1.0,
                    generator=torch.Generator().manual_seed(0), output_type="pt").images

    base = sample()
    pipe.load_lora_weights(full_dir, weight_name=LORA_WEIGHT_NAME)
    change = (sample() - base).abs().max().item()
    print("| check | value |\n| --- | --- |")
    print(f"| LoRA tensors | {len(full)} |")
    print(f"| max abs difference, resumed vs uninterrupted LoRA | {diff:.3g} |")
    print(f"| max abs change of a 64 px sample after load_lora_weights | {change:.3g} |")


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train(sys.argv[2])
    else:
        compare(sys.argv[2], sys.argv[3])
