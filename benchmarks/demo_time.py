#!/usr/bin/env python
"""Run the README's first command, `accelerate launch examples/train_nft_sd3.py`, and print where its time went.

    python benchmarks/demo_time.py                          # the demo as the README runs it
    python benchmarks/demo_time.py -- --num_sampling_steps 10   # extra flags after `--` go to the script

The split comes from the run itself: the timestamps of its log lines (the start-up block, "Saved LoRA", the demo
results, the model card) and the per-iteration timings in `metrics.jsonl`. The accuracy rows are the demo's
`results.md`: strict accuracy on the 60 evaluation prompts and on the 10 held-out combinations, base vs NFT.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO [\w.]+: (?:\[RANK \d+\] )?(.*)$")
# The log line that ends each phase after training: (phase, the start of its message).
MARKS = {"start": "Training DiffusionNFT", "lora": "Saved LoRA", "results": "Demo results", "card": "Wrote model card"}


def run_demo(output_dir: str, extra) -> tuple:
    """Run the demo command; returns its log lines, the launch time and the exit time (epoch seconds)."""
    command = ["accelerate", "launch", "--num_processes", "1", "examples/train_nft_sd3.py", "--output_dir", output_dir]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    launched = time.time()
    done = subprocess.run(command + list(extra), cwd=ROOT, env=env, capture_output=True, text=True)
    ended = time.time()
    if done.returncode:
        sys.exit(f"The demo failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stderr.splitlines() + done.stdout.splitlines(), launched, ended


def mark_times(lines) -> dict:
    """The time of the first log line of each mark in `MARKS`."""
    times = {}
    for line in lines:
        match = STAMP.match(line.strip().split("\r")[-1])
        if not match:
            continue
        stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for mark, text in MARKS.items():
            if mark not in times and match.group(2).startswith(text):
                times[mark] = stamp
    missing = set(MARKS) - set(times)
    if missing:
        sys.exit(f"The demo's log has no line for {sorted(missing)}; was it run with a logging level of INFO?")
    return times


def split(output_dir: str, lines, launched: float, ended: float) -> list:
    """(phase, seconds) rows that add up to the wall time."""
    marks = mark_times(lines)
    with open(os.path.join(output_dir, "metrics.jsonl")) as f:
        iterations = [json.loads(line) for line in f]
    parts = {key: sum(m[f"time/{key}"] for m in iterations) for key in ("sampling", "reward", "training")}
    loop = marks["lora"] - marks["start"]
    return [
        ("start-up (launcher, imports, loading, trainer set-up)", marks["start"] - launched),
        (f"sampling ({len(iterations)} iterations)", parts["sampling"]),
        ("reward scoring (not hidden behind sampling)", parts["reward"]),
        ("training forwards and backward", parts["training"]),
        ("validation grids, checkpoints, logging, final LoRA", loop - sum(parts.values())),
        ("final evaluation (base and NFT, 120 images each)", marks["results"] - marks["lora"]),
        ("before/after grid and model card", marks["card"] - marks["results"]),
        ("exit", ended - marks["card"]),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("extra", nargs="*", help="Flags for the training script, after `--`.")
    cli = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        output_dir = os.path.join(folder, "nft-demo")
        lines, launched, ended = run_demo(output_dir, cli.extra)
        rows = split(output_dir, lines, launched, ended)
        with open(os.path.join(output_dir, "results.md")) as f:
            results = f.read()
    wall = ended - launched
    print(f"\n`accelerate launch examples/train_nft_sd3.py {' '.join(cli.extra)}`, {len(os.sched_getaffinity(0))} CPU cores\n")
    print("| phase | s | share |\n| --- | ---: | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {100 * seconds / wall:.0f}% |")
    print(f"| **wall time** | **{wall:.1f}** ({int(wall // 60)} min {wall % 60:.0f} s) | |\n")
    print(results)


if __name__ == "__main__":
    main()
