"""Run by tests under `accelerate launch` with several CPU processes: train, then dump what each rank holds."""

import json
import os
import sys

import torch
from accelerate.state import PartialState
from diffusers import StableDiffusion3Pipeline

import diffusers_nft.objectives.nft as objectives_module
import diffusers_nft.trainer as trainer_module
from diffusers_nft import NFTTrainer

sys.path.insert(0, os.path.dirname(__file__))
from conftest import PROMPTS, tiny_config  # noqa: E402


def record_writes(output_dir):
    """Every file this process creates, writes, renames or removes under `output_dir` (an audit hook)."""
    root, writes = os.path.realpath(output_dir), []

    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes)):
            mode, flags = args[1], args[2] or 0
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
            paths = [args[0]] if writing else []
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"):
            paths = [args[0]]
        elif event == "os.rename":
            paths = list(args[:2])
        else:
            return
        for path in paths:
            if isinstance(path, (str, bytes)) and os.path.realpath(os.fsdecode(path)).startswith(root):
                writes.append(os.path.relpath(os.path.realpath(os.fsdecode(path)), root))

    sys.addaudithook(hook)
    return writes


def reward_of(rank: int):
    """The run's reward; on the process `$NFT_TEST_REWARD_MISSING_ON_RANK` names, one whose weights file is
    missing there (as a reward model's weights on a machine that cannot see them)."""
    if str(rank) != os.environ.get("NFT_TEST_REWARD_MISSING_ON_RANK"):
        return "jpeg_incompressibility"

    def missing_weights(images, prompts, metadata):
        raise FileNotFoundError(2, "No such file or directory", "/models/reward-weights.pt")

    return missing_weights


def main(pipeline_dir, output_dir, max_steps, resume, dump_dir):
    writes = record_writes(output_dir)
    recorded = []
    original = objectives_module.rewards_to_optimality

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        recorded.append({"rewards": args[0].tolist(), "groups": args[1].tolist(), "r": out.r.tolist()})
        return out

    objectives_module.rewards_to_optimality = recording
    assign = trainer_module.assign_credit

    def keep_local(*args, **kwargs):  # the share of r this process trains with
        credit = assign(*args, **kwargs)
        recorded[-1]["local"] = credit.local.tolist()
        return credit

    trainer_module.assign_credit = keep_local
    pipe = StableDiffusion3Pipeline.from_pretrained(pipeline_dir)
    # One image per sampling batch: an image does not depend on how the iteration's images split over processes
    # (a batch of 1 and one of 2 differ by float noise, which can move a JPEG size by a byte).
    config = tiny_config(output_dir, max_steps=max_steps, prompts_per_iteration=3, group_size=2,
                         sample_batch_size=1, train_batch_size=2, save_steps=2,
                         resume_from_checkpoint=resume or None, learning_rate=1e-2)
    trainer = NFTTrainer(pipe, reward_of(int(os.environ.get("RANK", "0"))), config, PROMPTS)
    rank, num_processes = PartialState().process_index, PartialState().num_processes  # before train() ends the group
    trainer.train()
    os.makedirs(dump_dir, exist_ok=True)
    torch.save({k: trainer.policy.state_dict(k) for k in ("default", "old", "ema")},
               os.path.join(dump_dir, f"lora_rank{rank}.pt"))
    with open(os.path.join(dump_dir, f"optimality_rank{rank}.json"), "w") as f:
        json.dump({"recorded": recorded, "local_images": trainer.plan.local_images,
                   "num_processes": num_processes, "writes": sorted(set(writes))}, f)


if __name__ == "__main__":
    pipeline_dir, output_dir, steps, resume, dump_dir = sys.argv[1:6]
    main(pipeline_dir, output_dir, int(steps), resume if resume != "-" else None, dump_dir)
