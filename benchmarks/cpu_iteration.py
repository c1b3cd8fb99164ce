#!/usr/bin/env python
"""Time one NFTTrainer iteration on a small SD3 pipeline against the floor of its bare model calls.

The floor runs the same model calls with the same shapes in a plain loop: prompt encoding, the sampling forwards
of the old adapter, VAE decoding, the reward, then per training micro-batch the old and reference forwards, the
trainable forward and backward, and one optimizer step. Whatever the trainer spends above that is overhead.

    python benchmarks/cpu_iteration.py            # prints a markdown table
    python benchmarks/cpu_iteration.py --repeats 5 --width 128 --layers 4
"""

import argparse
import os
import sys
import tempfile
import time

import torch

from diffusers_nft import NFTConfig, NFTTrainer
from diffusers_nft.pipelines import select_conditioning
from diffusers_nft.rewards import jpeg_compressibility

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))  # the tiny pipelines
from tiny_pipelines import build_tiny_sd3_pipeline  # noqa: E402

PROMPTS = ["a red cat", "a blue dog", "a green tree", "a yellow house", "a photo of the sea", "a city street"]


def _floor_sampling(trainer: NFTTrainer, cond, index):
    """Euler sampling with the old policy and the reward: (x0 latents, sampling seconds, reward seconds)."""
    args, family, steps = trainer.args, trainer.family, trainer.args.num_sampling_steps
    latents, reward_time, start = [], 0.0, time.perf_counter()
    trainer.policy.use("old")
    for lo in range(0, len(index), args.sample_batch_size):
        batch = index[lo : lo + args.sample_batch_size]
        c = select_conditioning(cond, batch)
        x = torch.randn(len(batch), *trainer.latent_shape)
        with torch.no_grad():
            for i in range(steps):
                sigma = torch.full((len(batch),), 1 - i / steps)
                x = x - family.predict_velocity(x, sigma, c) / steps
            images = family.decode(x)
        latents.append(x)
        t = time.perf_counter()
        jpeg_compressibility(images, None, None)
        reward_time += time.perf_counter() - t
    return torch.cat(latents), time.perf_counter() - start - reward_time, reward_time


def _floor_training(trainer: NFTTrainer, cond, index, x0) -> float:
    """The old and reference forwards (one call of twice the batch where the trainer makes one), the trained
    forward and the backward of one iteration; its seconds."""
    args, family, policy, n = trainer.args, trainer.family, trainer.policy, len(index)
    start = time.perf_counter()
    for lo in range(0, n, args.train_batch_size):
        batch = torch.arange(lo, min(lo + args.train_batch_size, n))
        c = select_conditioning(cond, index[batch])
        for _ in range(trainer.plan.levels_per_image):
            sigma = torch.rand(len(batch))
            noise = torch.randn_like(x0[batch])
            x_t = (1 - sigma.view(-1, 1, 1, 1)) * x0[batch] + sigma.view(-1, 1, 1, 1) * noise
            with torch.no_grad():
                if args.kl_beta > 0 and trainer.objective.old_and_reference.batched:  # one call, as the trainer
                    both = torch.arange(len(batch)).repeat(2)
                    with policy.mixed(["old"] * len(batch) + ["reference"] * len(batch)):
                        v_old = family.predict_velocity(x_t[both], sigma[both], select_conditioning(c, both))
                    v_old = v_old[: len(batch)]
                else:
                    policy.use("old")
                    v_old = family.predict_velocity(x_t, sigma, c)
                    if args.kl_beta > 0:
                        policy.use("reference")
                        family.predict_velocity(x_t, sigma, c)
            policy.use("default")
            v = family.predict_velocity(x_t, sigma, c)
            ((v - v_old - (noise - x0[batch])) ** 2).mean().backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    return time.perf_counter() - start


def floor_iteration(trainer: NFTTrainer) -> dict:
    """The model calls of one iteration, nothing else."""
    args = trainer.args
    start = time.perf_counter()
    with torch.no_grad():
        cond = trainer.family.encode_prompts(PROMPTS[: args.prompts_per_iteration], torch.device("cpu"),
                                              args.max_sequence_length)
    encode_time = time.perf_counter() - start
    index = torch.arange(args.images_per_iteration) // args.group_size
    x0, sampling, reward = _floor_sampling(trainer, cond, index)
    times = {"sampling": encode_time + sampling, "reward": reward,
             "training": _floor_training(trainer, cond, index, x0), "logging and bookkeeping": 0.0}
    times["total"] = sum(times.values())
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--group_size", type=int, default=8)
    parser.add_argument("--prompts_per_iteration", type=int, default=4)
    parser.add_argument("--kl_beta", type=float, default=1e-4)
    parser.add_argument("--two_frozen_forwards", action="store_true",
                        help="The old and reference predictions as two forwards (batch_frozen_forwards=False).")
    cli = parser.parse_args()
    torch.manual_seed(0)
    pipe = build_tiny_sd3_pipeline(width=cli.width, num_layers=cli.layers)
    images = cli.group_size * cli.prompts_per_iteration
    with tempfile.TemporaryDirectory() as output_dir:
        config = NFTConfig(
            output_dir=output_dir, resolution=64, max_sequence_length=16, report_to="none",
            group_size=cli.group_size, prompts_per_iteration=cli.prompts_per_iteration,
            sample_batch_size=images, train_batch_size=images, num_sampling_steps=10, kl_beta=cli.kl_beta,
            sampler="dpm_solver", max_steps=1000, logging_steps=1, batch_frozen_forwards=not cli.two_frozen_forwards,
        )
        trainer = NFTTrainer(pipe, "jpeg_compressibility", config, PROMPTS[: cli.prompts_per_iteration])
        trainer.step(), floor_iteration(trainer)  # warm-up
        runs = {"trainer": [], "floor": []}
        for _ in range(cli.repeats):
            start = time.perf_counter()
            m = trainer.step()
            trainer.run_log.log(m, trainer.history)  # metrics.jsonl, trackers and the reward curve, as train() logs
            wall = time.perf_counter() - start
            runs["trainer"].append(
                {"sampling": m["time/sampling"], "reward": m["time/reward"], "training": m["time/training"],
                 "logging and bookkeeping": wall - m["time/iteration"], "total": wall}
            )
            runs["floor"].append(floor_iteration(trainer))
    params = sum(p.numel() for p in pipe.transformer.parameters())
    print(f"\nCPU, {torch.get_num_threads()} threads; SD3 transformer {cli.layers} x {cli.width} ({params / 1e6:.1f} M "
          f"params with LoRA), 64 px, {images} images/iteration, 10 DPM-Solver steps, "
          f"{trainer.plan.levels_per_image} training timesteps, kl_beta={cli.kl_beta}, old and reference predictions "
          f"as {'one call' if trainer.objective.old_and_reference.batched else 'two calls'}; best of {cli.repeats} (min, the least noisy on a shared CPU).\n")
    print("| part | trainer (s) | floor (s) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for part in ("sampling", "reward", "training", "logging and bookkeeping", "total"):
        t = min(r[part] for r in runs["trainer"])
        f = min(r[part] for r in runs["floor"])
        ratio = f"{t / f:.2f}" if f > 0 else "-"
        print(f"| {part} | {t:.3f} | {f:.3f} | {ratio} |")
    t = min(r["total"] for r in runs["trainer"])
    f = min(r["total"] for r in runs["floor"])
    print(f"\noverhead ratio (trainer / floor): {t / f:.3f}  (target <= 1.05)  |  {images / t:.1f} images/s")


if __name__ == "__main__":
    main()
