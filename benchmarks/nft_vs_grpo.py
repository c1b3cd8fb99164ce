#!/usr/bin/env python
"""DiffusionNFT against Flow-GRPO on the demo world: same base model, prompts, reward, LoRA and evaluation.

    python benchmarks/nft_vs_grpo.py                       # the sweep (seed 0), then both methods on seeds 0 1 2
    python benchmarks/nft_vs_grpo.py --skip_sweep --grpo_learning_rate 7e-4 --grpo_clip_range 1e-4

Each run is saved to `--output_dir/runs/<name>.json` as it ends; a rerun reuses those and runs only what is missing.

NFT is the demo recipe (`diffusers_nft.demo.recipe`). Flow-GRPO is its published recipe (SDE noise level 0.7,
clip 1e-4, KL 0.04 on the SDE means, CFG 4.5 while sampling and training, group-normalised advantages) scaled to
the demo as NFT's was: the same 16 x 8 images per iteration, 8 sampler steps, half the transitions trained
(timestep fraction 0.5), the same optimizer steps per iteration. A small sweep of its learning rate and clip range on
seed 0 picks the setting the seeds then run with; the sweep is reported too.

Every run is evaluated every `--eval_every` iterations on the 60 evaluation prompts (strict accuracy: digit and
colour right; EMA weights, 40 Euler steps, seeds 2k and 2k + 1 for replicate k), without CFG, and for Flow-GRPO
also with the CFG it trained with. Training time excludes the evaluations.

Writes `nft_vs_grpo.md` (tables), `nft_vs_grpo.json` (every number) and `nft_vs_grpo.png` to `--output_dir`.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digits_claims import mean_spread, measure  # noqa: E402

from diffusers_nft import NFTTrainer  # noqa: E402
from diffusers_nft.demo import load_demo_pipeline, prompt_dataset  # noqa: E402
from diffusers_nft.demo.recipe import DEMO_REWARD, demo_config  # noqa: E402

GRPO_RECIPE = dict(objective="flow_grpo", grpo_noise_level=0.7, grpo_clip_range=1e-4, grpo_kl_beta=0.04,
                   grpo_guidance_scale=4.5)
SWEEP = [dict(learning_rate=lr, grpo_clip_range=clip) for lr in (7e-4, 2e-3) for clip in (1e-4, 1e-3)]
THRESHOLDS = (0.75, 0.85)


def train_and_track(overrides: dict, replicate: int, iterations: int, eval_every: int, cfg: Optional[float]) -> dict:
    """Train the demo recipe with `overrides`; evaluate the EMA weights every `eval_every` iterations."""
    pipe = load_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    with tempfile.TemporaryDirectory() as output_dir:
        args = demo_config(output_dir=output_dir, seed=replicate, max_steps=iterations, report_to="none",
                           reward_scoring="sync", validation_prompts=None, **overrides)
        trainer = NFTTrainer(pipe, DEMO_REWARD, args=args, train_dataset=prompt_dataset("train"))
        curve, train_time = [], 0.0
        for iteration in range(1, iterations + 1):
            start = time.perf_counter()
            trainer.step()
            train_time += time.perf_counter() - start
            if iteration % eval_every == 0 or iteration == iterations:
                with trainer.policy.ema_weights():
                    point = {"strict": measure(trainer.pipeline, replicate, False)["strict"]}
                    if cfg:
                        point["strict_cfg"] = measure(trainer.pipeline, replicate, False, guidance_scale=cfg)["strict"]
                point.update(iteration=iteration, images=iteration * args.images_per_iteration,
                             train_seconds=train_time)
                curve.append(point)
                print(f"  {overrides.get('objective', 'nft')} seed {replicate} it {iteration}: {point}", flush=True)
    return {"seed": replicate, "overrides": overrides, "curve": curve,
            "training_reward": [m["reward/total/mean"] for m in trainer.history]}


def base_point(replicate: int, cfg: float) -> dict:
    pipe = load_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return {"iteration": 0, "images": 0, "train_seconds": 0.0, "strict": measure(pipe, replicate, False)["strict"],
            "strict_cfg": measure(pipe, replicate, False, guidance_scale=cfg)["strict"]}


def images_to_reach(run: dict, threshold: float, key: str = "strict", start: Optional[dict] = None) -> Optional[int]:
    """Images sampled at the first evaluation (the base model's `start` point included) whose `key` accuracy is at
    least `threshold`."""
    points = ([start] if start else []) + run["curve"]
    return next((p["images"] for p in points if p[key] >= threshold), None)


def reach_cell(runs: List[dict], threshold: float, key: str = "strict", base: Optional[List[dict]] = None) -> str:
    starts = _by_seed(base, runs) if base else [None] * len(runs)
    values = [images_to_reach(r, threshold, key, b) for r, b in zip(runs, starts)]
    reached = [v for v in values if v is not None]
    text = _int_spread(reached) if reached else "-"
    return text if len(reached) == len(values) else f"{text} ({len(reached)} of {len(values)} seeds; others > budget)"


def _by_seed(base: List[dict], runs: List[dict]) -> List[dict]:
    """The base point of each run's seed."""
    return [next(b for b in base if b["seed"] == r["seed"]) for r in runs]


def _int_spread(values: List[int]) -> str:
    if len(values) == 1:
        return f"{values[0]}"
    return f"{statistics.mean(values):.0f} ± {statistics.stdev(values):.0f}"


def ratio_cell(grpo: List[dict], nft: List[dict], threshold: float) -> str:
    """GRPO's images over NFT's, per seed; where GRPO did not reach it within the budget, the budget stands in and
    the cell is a lower bound (`>`)."""
    ratios, bound = [], False
    for g, n in zip(sorted(grpo, key=lambda r: r["seed"]), sorted(nft, key=lambda r: r["seed"])):
        ni, gi = images_to_reach(n, threshold), images_to_reach(g, threshold)
        if ni is None:
            return "- (NFT did not reach it)"
        if gi is None:
            gi, bound = g["curve"][-1]["images"], True
        ratios.append(gi / ni)
    return ("> " if bound else "") + mean_spread(ratios) + "x"


def tables(sweep: List[dict], nft: List[dict], grpo: List[dict], base: List[dict], cfg: float) -> str:
    lines = ["## Sweep (Flow-GRPO, seed 0, strict accuracy without CFG / with CFG at the end)", "",
             "| learning rate | clip range | strict | strict with CFG | best strict on the way |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for run in sweep:
        o, last = run["overrides"], run["curve"][-1]
        best = max(p["strict"] for p in run["curve"])
        lines.append(f"| {o['learning_rate']:g} | {o['grpo_clip_range']:g} | {last['strict']:.3f} | "
                     f"{last.get('strict_cfg', float('nan')):.3f} | {best:.3f} |")
    budget = nft[0]["curve"][-1]["images"] if nft else 0
    seeds = ", ".join(str(r["seed"]) for r in nft)
    lines += ["", f"## Head-to-head (seeds {seeds}; mean ± std over seeds)", "",
              "| | NFT (no CFG) | Flow-GRPO (no CFG) | Flow-GRPO (CFG {:g}) | ratio GRPO / NFT |".format(cfg),
              "| --- | ---: | ---: | ---: | ---: |",
              f"| base model strict | {mean_spread([b['strict'] for b in base])} | "
              f"{mean_spread([b['strict'] for b in base])} | {mean_spread([b['strict_cfg'] for b in base])} | |"]
    for t in THRESHOLDS:
        lines.append(f"| images to reach {t:.2f} strict | {reach_cell(nft, t)} | {reach_cell(grpo, t)} | "
                     f"{reach_cell(grpo, t, 'strict_cfg', base)} | {ratio_cell(grpo, nft, t)} (no CFG) |")
    final = lambda runs, key: mean_spread([r["curve"][-1][key] for r in runs])  # noqa: E731
    lines.append(f"| strict after {budget} images | {final(nft, 'strict')} | {final(grpo, 'strict')} | "
                 f"{final(grpo, 'strict_cfg')} | |")
    seconds = lambda runs: _int_spread([round(r["curve"][-1]["train_seconds"]) for r in runs])  # noqa: E731
    lines.append(f"| training seconds for {budget} images (2 CPU cores) | {seconds(nft)} | {seconds(grpo)} | | "
                 f"{statistics.mean(r['curve'][-1]['train_seconds'] for r in grpo) / statistics.mean(r['curve'][-1]['train_seconds'] for r in nft):.2f}x |")
    return "\n".join(lines) + "\n"


def plot(nft: List[dict], grpo: List[dict], base: List[dict], cfg: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    seeds = ", ".join(str(r["seed"]) for r in nft)
    fig.suptitle(f"DiffusionNFT vs Flow-GRPO on the demo world (strict accuracy, seeds {seeds}; band: min-max)")
    series = [(nft, "strict", "NFT, no CFG", "tab:blue"), (grpo, "strict", "Flow-GRPO, no CFG", "tab:orange"),
              (grpo, "strict_cfg", f"Flow-GRPO, CFG {cfg:g}", "tab:red")]
    for ax, x_key, x_label in zip(axes, ("images", "train_seconds"), ("images sampled", "training time (s, 2 CPU cores)")):
        for runs, key, label, color in series:
            if not runs:
                continue
            starts = [b[key] for b in base]
            rows = [[s] + [p[key] for p in r["curve"]] for s, r in zip(starts, runs)]
            xs = [[0.0] + [p[x_key] for p in r["curve"]] for r in runs]
            x = [statistics.mean(v) for v in zip(*xs)]
            columns = list(zip(*rows))
            ax.plot(x, [statistics.mean(c) for c in columns], marker="o", color=color, label=label)
            ax.fill_between(x, [min(c) for c in columns], [max(c) for c in columns], color=color, alpha=0.15)
        for t in THRESHOLDS:
            ax.axhline(t, color="gray", lw=0.8, ls=":")
        ax.set_xlabel(x_label)
        ax.set_ylabel("strict accuracy (digit and colour right)")
        ax.set_ylim(0, 1)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=40, help="Iterations per run (the demo's 40).")
    parser.add_argument("--sweep_iterations", type=int, default=12)
    parser.add_argument("--eval_every", type=int, default=10)
    parser.add_argument("--skip_sweep", action="store_true")
    parser.add_argument("--grpo_learning_rate", type=float, default=None, help="Skip the sweep's choice.")
    parser.add_argument("--grpo_clip_range", type=float, default=None)
    parser.add_argument("--output_dir", default="benchmarks/results/nft_vs_grpo")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    os.makedirs(os.path.join(args.output_dir, "runs"), exist_ok=True)
    cfg = GRPO_RECIPE["grpo_guidance_scale"]
    state = run_all(args, cfg)
    report = tables(state["sweep"], state["nft"], state["grpo"], state["base"], cfg)
    with open(os.path.join(args.output_dir, "nft_vs_grpo.md"), "w") as f:
        f.write(report)
    with open(os.path.join(args.output_dir, "nft_vs_grpo.json"), "w") as f:
        json.dump({**state, "args": vars(args)}, f, indent=1)
    plot(state["nft"], state["grpo"], state["base"], cfg, os.path.join(args.output_dir, "nft_vs_grpo.png"))
    print(report)


def cached(folder: str, name: str, compute):
    """The run `name` from `folder/runs/name.json`, computed and written there first if it is not there: a stopped
    benchmark reruns only what is missing."""
    path = os.path.join(folder, "runs", f"{name}.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    result = compute()
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".tmp", path)
    return result


def run_all(args, cfg: float) -> Dict[str, list]:
    """The sweep, then every seed's base point, NFT run and Flow-GRPO run."""
    out, state = args.output_dir, {"sweep": [], "nft": [], "grpo": [], "base": []}
    if not args.skip_sweep:
        for change in SWEEP:
            overrides = {**GRPO_RECIPE, **change, "timestep_fraction": 0.5}
            name = f"sweep_lr{change['learning_rate']:g}_clip{change['grpo_clip_range']:g}"
            state["sweep"].append(cached(out, name, lambda o=overrides: train_and_track(
                o, 0, args.sweep_iterations, args.sweep_iterations, cfg)))
    chosen = choose(state["sweep"], args)
    for seed in args.seeds:
        state["base"].append(cached(out, f"base_seed{seed}", lambda: dict(base_point(seed, cfg), seed=seed)))
        state["nft"].append(cached(out, f"nft_seed{seed}",
                                   lambda: train_and_track({}, seed, args.iterations, args.eval_every, None)))
        state["grpo"].append(cached(out, f"grpo_seed{seed}",
                                    lambda: train_and_track(chosen, seed, args.iterations, args.eval_every, cfg)))
    return state


def choose(sweep: List[dict], args) -> dict:
    """The Flow-GRPO setting of the seeds: given on the command line, else the sweep's best final strict accuracy."""
    overrides = {**GRPO_RECIPE, "timestep_fraction": 0.5}
    if args.grpo_learning_rate is not None or not sweep:
        return {**overrides, "learning_rate": args.grpo_learning_rate or 7e-4,
                "grpo_clip_range": args.grpo_clip_range or GRPO_RECIPE["grpo_clip_range"]}
    best = max(sweep, key=lambda r: r["curve"][-1]["strict"])
    return dict(best["overrides"])


if __name__ == "__main__":
    main()
