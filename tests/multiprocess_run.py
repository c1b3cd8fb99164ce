"""Run by tests under `accelerate launch` with several CPU processes: train, then dump what each rank holds."""

import json
import os
import sys

import torch
from accelerate.state import PartialState
from diffusers import StableDiffusion3Pipeline

import diffusers_nft.trainer as trainer_module
from diffusers_nft import NFTTrainer

sys.path.insert(0, os.path.dirname(__file__))
from conftest import PROMPTS, tiny_config  # noqa: E402


def main(pipeline_dir, output_dir, max_steps, resume, dump_dir):
    recorded = []
    original = trainer_module.rewards_to_optimality

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        recorded.append({"rewards": args[0].tolist(), "groups": args[1].tolist(), "r": out.r.tolist()})
        return out

    trainer_module.rewards_to_optimality = recording
    pipe = StableDiffusion3Pipeline.from_pretrained(pipeline_dir)
    config = tiny_config(output_dir, max_steps=max_steps, prompts_per_iteration=3, group_size=2,
                         sample_batch_size=2, train_batch_size=2, save_steps=2,
                         resume_from_checkpoint=resume or None, learning_rate=1e-2)
    trainer = NFTTrainer(pipe, "jpeg_incompressibility", config, PROMPTS)
    rank, num_processes = PartialState().process_index, PartialState().num_processes  # before train() ends the group
    trainer.train()
    os.makedirs(dump_dir, exist_ok=True)
    torch.save({k: trainer.policy.state_dict(k) for k in ("default", "old", "ema")},
               os.path.join(dump_dir, f"lora_rank{rank}.pt"))
    with open(os.path.join(dump_dir, f"optimality_rank{rank}.json"), "w") as f:
        json.dump({"recorded": recorded, "local_images": trainer.local_images,
                   "num_processes": num_processes}, f)


if __name__ == "__main__":
    pipeline_dir, output_dir, steps, resume, dump_dir = sys.argv[1:6]
    main(pipeline_dir, output_dir, int(steps), resume if resume != "-" else None, dump_dir)
