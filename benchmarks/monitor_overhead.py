#!/usr/bin/env python
"""What the drift monitors cost: NFT iterations on a small SD3 pipeline with `monitors` on and off, interleaved.

    python benchmarks/monitor_overhead.py               # prints a markdown table
    python benchmarks/monitor_overhead.py --iterations 8 --width 128 --layers 4
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

from diffusers_nft import NFTConfig, NFTTrainer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))  # the tiny pipelines
from tiny_pipelines import build_tiny_sd3_pipeline  # noqa: E402

PROMPTS = ["a red cat", "a blue dog", "a green tree", "a yellow house", "a photo of the sea", "a city street"]


def trainer_for(monitors: bool, width: int, layers: int) -> NFTTrainer:
    config = NFTConfig(output_dir=tempfile.mkdtemp(), max_steps=1000, prompts_per_iteration=4, group_size=8,
                       resolution=64, num_sampling_steps=10, max_sequence_length=16, sample_batch_size=16,
                       train_batch_size=8, report_to="none", save_steps=10**6, validation_steps=10**6, seed=0,
                       monitors=monitors)
    pipe = build_tiny_sd3_pipeline(width=width, num_layers=layers)
    return NFTTrainer(pipe, lambda images, prompts, metadata: images.mean(dim=(1, 2, 3)), config, PROMPTS)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    trainers = {on: trainer_for(on, args.width, args.layers) for on in (False, True)}
    times = {False: [], True: []}
    for _ in range(args.iterations + 1):  # the first iteration of each warms up and is dropped
        for on, trainer in trainers.items():
            start = time.perf_counter()
            trainer.step()
            times[on].append(time.perf_counter() - start)
    off, on = statistics.median(times[False][1:]), statistics.median(times[True][1:])
    levels = trainers[True].plan.levels_per_image
    print(f"SD3 {args.layers} x {args.width}, 32 images per iteration, 10 sampling steps, {levels} training noise "
          f"levels, CPU ({torch.get_num_threads()} threads), median of {args.iterations} iterations:\n")
    print("| monitors | s / iteration |\n| --- | ---: |")
    print(f"| off | {off:.3f} |\n| on | {on:.3f} |")
    print(f"\noverhead: {100 * (on / off - 1):+.1f}%")


if __name__ == "__main__":
    main()
