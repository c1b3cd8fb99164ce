#!/usr/bin/env python
"""The paper's claims, reproduced on the bundled demo world, each as mean +- spread over seeds.

    python benchmarks/digits_claims.py                          # all claims, seeds 0 1 2
    python benchmarks/digits_claims.py --claims a b --seeds 0   # a subset
    python benchmarks/digits_claims.py --resume                 # keep the runs already in claims.json

Every NFT run is the demo recipe (`diffusers_nft.demo.recipe`, what `accelerate launch examples/train_nft_sd3.py`
trains) with one thing changed. Replicate `k` trains with seed `k` and evaluates on seeds `2k` and `2k + 1` of the 60
evaluation prompts (40-step Euler, EMA weights, no CFG unless said), so base and NFT see the same noise.

  (a) strict accuracy: base without CFG, base with its best CFG scale, NFT without CFG;
  (b) NFT vs dropping the negative loss term (the r-weighted positive term alone, `drop_negative_term`; not the
      release's `adv_mode="positive_only"`): accuracy and diversity over iterations;
  (c) data collected with Euler, Heun, DPM-Solver and UniPC;
  (d) nft_beta 0.1 (the recipe) vs 1.0, and x0_adaptive vs velocity weighting;
  (e) the held-out (digit, colour) combinations, before and after;
  (f) an honest win: NFT trained on the sturdier `digit_eval_robust` (the classifier's probabilities over 8 views
      of each image) and `digit_eval_ensemble` (five classifiers of its class trained apart) against the base
      with its best CFG, by the held-out judge;
  (screen) variants of (f) tried on one seed: velocity weighting, and a KL to the base model;
  (g) the published mitigations of the CFG-free gap on the best (f) run: the KL anchored to the base model with its
      best CFG (`kl_reference_guidance_scale`, CRD), with a reward-adaptive weight, or a hinge on the velocity-norm
      ratio (`norm_guard_weight`, NormGuard): `g_screen` runs the candidates on seeds 3-5 to choose one by the
      held-out judge, `g` reports the chosen one on seeds 0-2 beside the best (f) run.

Every accuracy is reported by the training reward (`digit_eval`, the bundled CNN) and by the held-out judge
(`digit_judge`, `diffusers_nft.demo.judge`: another model class and features, never trained on); the table's last
two columns are the judge's.

Writes `claims.md` (the table), `claims.json` (every number) and `claims_b.png`, `claims_f.png`,
`claims_screen.png`, `claims_training.png` (plots, for the claims run)
to `--output_dir`. Each run is evaluated every `--eval_every` iterations, so (b) has curves. The results are
written after every run, so a stopped benchmark keeps them: `--resume` reads them back and runs only what is missing
(the runs are long: about 2 minutes each on 2 CPU cores with the short-text demo model and its 24 iterations; the
tables in docs/results.md ran 40 iterations on the model before, 5-7 minutes each).
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Dict, List

import torch

from diffusers_nft import NFTTrainer
from diffusers_nft.demo import load_demo_pipeline, prompt_dataset
from diffusers_nft.demo.accuracy import accuracy, diversity
from diffusers_nft.demo.recipe import DEMO_CONFIG, DEMO_REWARD, demo_config

# One change to the demo recipe per run; "nft" is the recipe itself (DPM-Solver, nft_beta 0.1, x0_adaptive).
RUNS = {
    "nft": {},
    "no_negative_term": {"drop_negative_term": True},
    "euler": {"sampler": "euler"},
    "heun": {"sampler": "heun"},
    "unipc": {"sampler": "unipc"},
    "nft_beta_1": {"nft_beta": 1.0},
    "velocity": {"loss_weighting": "velocity"},
    "robust": {"reward": "digit_eval_robust"},
    "ensemble": {"reward": "digit_eval_ensemble"},
    "ensemble_velocity": {"reward": "digit_eval_ensemble", "loss_weighting": "velocity"},
    "ensemble_kl_0p01": {"reward": "digit_eval_ensemble", "kl_beta": 0.01},
    "ensemble_kl_0p1": {"reward": "digit_eval_ensemble", "kl_beta": 0.1},
    "ensemble_kl_1": {"reward": "digit_eval_ensemble", "kl_beta": 1.0},
    "ensemble_kl_100": {"reward": "digit_eval_ensemble", "kl_beta": 100.0},
    # Half the recipe's learning rate for twice its iterations: a slower policy may leave the reward's blind spots
    # alone for longer.
    "ensemble_slow": {"reward": "digit_eval_ensemble", "learning_rate": 3.5e-4, "iterations": 80},
    # (g) the published mitigations of the CFG-free gap, on the best (f) run: a KL to the base model *with its best
    # CFG* (4; Flow-Factory's CRD), with a reward-adaptive weight, and a hinge on the velocity-norm ratio (NormGuard)
    "ensemble_crd": {"reward": "digit_eval_ensemble", "kl_beta": 0.01, "kl_reference_guidance_scale": 4.0},
    "ensemble_crd_adaptive": {"reward": "digit_eval_ensemble", "kl_beta": 0.05, "kl_reference_guidance_scale": 4.0,
                              "reward_adaptive_kl": True},
    "ensemble_normguard": {"reward": "digit_eval_ensemble", "kl_beta": 0.01, "norm_guard_weight": 10.0},
}
# (g) picks one of its candidates on seeds 3, 4, 5 (`--claims g_screen --seeds 3 4 5`), by the held-out judge, and
# reports it on seeds 0, 1, 2 beside the best (f) run (`--claims g`). `ensemble_crd_adaptive` is defined but not in
# the screen yet (its 3 runs did not fit the session that ran the others).
G_CANDIDATES = ["ensemble_crd", "ensemble_normguard"]
G_CHOSEN = "ensemble_normguard"  # the screen: judge 0.786 against 0.758 for ensemble_crd (seeds 3-5)
CLAIM_RUNS = {
    "a": ["nft"],
    "b": ["nft", "no_negative_term"],
    "c": ["euler", "heun", "nft", "unipc"],
    "d": ["nft", "nft_beta_1", "velocity"],
    "e": ["nft"],
    "f": ["nft", "robust", "ensemble", "ensemble_kl_0p01"],
    "screen": ["ensemble_velocity", "ensemble_kl_0p01", "ensemble_kl_0p1", "ensemble_kl_1", "ensemble_kl_100",
               "ensemble_slow"],
    "g_screen": G_CANDIDATES,
    "g": ["ensemble_kl_0p01", G_CHOSEN],
}
CFG_SCALES = (2.0, 4.0, 7.0)


def run_names(claims: List[str]) -> List[str]:
    """The runs that `claims` need, in table order."""
    return [n for n in RUNS if any(n in CLAIM_RUNS[c] for c in claims)]


def eval_seeds(replicate: int):
    return (2 * replicate, 2 * replicate + 1)


def measure(pipe, replicate: int, with_diversity: bool, guidance_scale: float = 1.0) -> Dict[str, float]:
    result = accuracy(pipe, seeds=eval_seeds(replicate), guidance_scale=guidance_scale)
    if with_diversity:
        result["diversity"] = diversity(pipe, seeds=[100 * replicate + i for i in range(8)],
                                        guidance_scale=guidance_scale)
    return result


def base_results(replicate: int) -> Dict[str, Dict[str, float]]:
    pipe = load_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    results = {"seed": replicate, "base": measure(pipe, replicate, with_diversity=True)}
    for scale in CFG_SCALES:
        results[f"base_cfg_{scale:g}"] = measure(pipe, replicate, with_diversity=False, guidance_scale=scale)
    return results


def nft_run(name: str, replicate: int, iterations: int, eval_every: int, with_diversity: bool) -> dict:
    """Train the demo recipe with `RUNS[name]` changed; evaluate the EMA weights every `eval_every` iterations."""
    pipe = load_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    with tempfile.TemporaryDirectory() as output_dir:
        change = dict(RUNS[name])
        reward = change.pop("reward", DEMO_REWARD)
        iterations = change.pop("iterations", iterations)
        args = demo_config(output_dir=output_dir, seed=replicate, max_steps=iterations, report_to="none",
                           reward_scoring="sync", validation_prompts=None, **change)
        trainer = NFTTrainer(pipe, reward, args=args, train_dataset=prompt_dataset("train"))  # release LoRA
        curve, start = [], time.perf_counter()
        for iteration in range(1, iterations + 1):
            trainer.step()
            if iteration % eval_every == 0 or iteration == iterations:
                train_time = time.perf_counter() - start
                with trainer.policy.ema_weights():
                    point = measure(trainer.pipeline, replicate, with_diversity)
                point.update(iteration=iteration, train_seconds=train_time)
                curve.append(point)
                print(f"  {name} seed {replicate} it {iteration}: strict {point['strict']:.3f}", flush=True)
                start = time.perf_counter() - train_time
    reward = [m["reward/total/mean"] for m in trainer.history]
    return {"seed": replicate, "curve": curve, "final": curve[-1], "training_reward": reward}


def mean_spread(values: List[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def best_cfg(base_by_seed: List[dict], key: str = "strict") -> str:
    """The CFG scale with the best mean `key` accuracy over seeds."""
    return max((f"base_cfg_{s:g}" for s in CFG_SCALES),
               key=lambda name: statistics.mean(b[name].get(key, -1.0) for b in base_by_seed))


COLUMNS = ("strict", "strict_held_out", "digit", "diversity", "judge_strict", "judge_strict_held_out")


def table(claims: List[str], base_by_seed: List[dict], runs: Dict[str, List[dict]]) -> str:
    """The markdown table: one row per model; strict / held-out strict / digit / diversity by the training reward
    (`digit_eval`), then strict / held-out strict by the held-out judge (`digit_judge`, never trained on)."""
    def row(label, results):
        cells = [mean_spread([r[k] for r in results]) if all(k in r for r in results) else "-" for k in COLUMNS]
        return f"| {label} | " + " | ".join(cells) + " |"

    scales = ", ".join(f"{s:g}" for s in CFG_SCALES)
    rows = [row("base, no CFG", [b["base"] for b in base_by_seed])]
    for key, judge in (("strict", "digit_eval"), ("judge_strict", "digit_judge")):
        cfg = best_cfg(base_by_seed, key)
        judged = all(key in b[cfg] for b in base_by_seed)
        if key == "strict" or (judged and cfg != best_cfg(base_by_seed)):
            rows.append(row(f"base, CFG {cfg.rsplit('_', 1)[1]} (best of {scales} by {judge})",
                            [b[cfg] for b in base_by_seed]))
    labels = {"nft": "NFT (the demo recipe: DPM-Solver, nft_beta 0.1, x0_adaptive), no CFG", "no_negative_term": "no negative term (r-weighted positive fitting only), no CFG",
              "euler": "NFT, data from Euler", "heun": "NFT, data from Heun", "unipc": "NFT, data from UniPC",
              "nft_beta_1": "NFT, nft_beta 1.0", "velocity": "NFT, velocity weighting",
              "robust": "NFT trained on digit_eval_robust, no CFG",
              "ensemble": "NFT trained on digit_eval_ensemble, no CFG",
              "ensemble_velocity": "NFT trained on digit_eval_ensemble, velocity weighting, no CFG"}
    for name in RUNS:
        if name in runs:
            label = labels.get(name, _short_label(name) + ", no CFG")  # the screen's runs: named by what they change
            rows.append(row(label, [r["final"] for r in runs[name]]))
    head = ("| model (claims " + ", ".join(claims) + ") | strict | held-out strict | digit | diversity | "
            "judge: strict | judge: held-out strict |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    return head + "\n".join(rows) + "\n"


def plot(runs: Dict[str, List[dict]], base_by_seed: List[dict], output_dir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def band(ax, name, key, label):
        points = list(zip(*[[p[key] for p in r["curve"]] for r in runs[name]]))
        x = [p["iteration"] for p in runs[name][0]["curve"]]
        mean = [statistics.mean(v) for v in points]
        low, high = [min(v) for v in points], [max(v) for v in points]
        ax.plot(x, mean, marker="o", label=label)
        ax.fill_between(x, low, high, alpha=0.2)

    if "no_negative_term" in runs and "nft" in runs:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        fig.suptitle(f"Claim (b): negative samples matter (demo world, {_seeds(runs['nft'])})")
        for ax, key, title in zip(axes, ("strict", "diversity"), ("strict accuracy (no CFG)", "diversity")):
            band(ax, "nft", key, "NFT")
            band(ax, "no_negative_term", key, "no negative term")
            ax.axhline(statistics.mean(b["base"][key] for b in base_by_seed), color="gray", ls="--", label="base")
            ax.set_xlabel("iteration")
            ax.set_title(title)
            ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(output_dir, "claims_b.png"), dpi=100)
        plt.close(fig)

    if "robust" in runs and "nft" in runs and all("judge_strict" in p for p in runs["nft"][0]["curve"]):
        plot_claim_f(plt, band, runs, base_by_seed, output_dir)
    if any(name in runs for name in CLAIM_RUNS["screen"]):
        plot_screen(plt, band, runs, base_by_seed, output_dir, "screen")
    if any(name in runs for name in CLAIM_RUNS["g_screen"]):
        plot_screen(plt, band, runs, base_by_seed, output_dir, "g_screen")
    if any(name in runs for name in CLAIM_RUNS["g"]):
        plot_screen(plt, band, runs, base_by_seed, output_dir, "g")

    if not runs:  # no run has every seed yet
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, results in runs.items():
        curves = list(zip(*[r["training_reward"] for r in results]))
        ax.plot(range(1, len(curves) + 1), [statistics.mean(v) for v in curves], label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean training reward of the iteration's samples")
    ax.set_title(f"Training reward of every claims run ({_seeds(next(iter(runs.values())))})")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "claims_training.png"), dpi=100)
    plt.close(fig)


def plot_claim_f(plt, band, runs: Dict[str, List[dict]], base_by_seed: List[dict], output_dir: str) -> None:
    """Strict accuracy over iterations by each judge: NFT on digit_eval and on digit_eval_robust, and the base."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    fig.suptitle(f"Claim (f): strict accuracy by each judge, no CFG ({_seeds(runs['nft'])}; band: min-max)")
    for ax, key, judge in zip(axes, ("strict", "judge_strict"), ("digit_eval (the reward)", "digit_judge (held out)")):
        for name in CLAIM_RUNS["f"]:
            if name in runs:
                band(ax, name, key, _short_label(name))
        cfg = best_cfg(base_by_seed, key)
        ax.axhline(statistics.mean(b[cfg][key] for b in base_by_seed), color="gray", ls="--",
                   label=f"base, CFG {cfg.rsplit('_', 1)[1]} (its best)")
        ax.axhline(statistics.mean(b["base"][key] for b in base_by_seed), color="gray", ls=":", label="base, no CFG")
        ax.set_xlabel("iteration")
        ax.set_title(f"judged by {judge}")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "claims_f.png"), dpi=100)
    plt.close(fig)


def plot_screen(plt, band, runs: Dict[str, List[dict]], base_by_seed: List[dict], output_dir: str,
                claim: str = "screen") -> None:
    """The held-out judge's strict accuracy over iterations for each run of `claim`, against the base."""
    fig, ax = plt.subplots(figsize=(11, 4.5))
    names = [n for n in CLAIM_RUNS[claim] if n in runs]
    title = {"screen": "Screen", "g_screen": "Claim (g), screen", "g": "Claim (g)"}[claim]
    ax.set_title(f"{title}: held-out judge (digit_judge), no CFG ({_seeds(runs[names[0]])})")
    for name in names:
        band(ax, name, "judge_strict", _short_label(name))
    cfg = best_cfg(base_by_seed, "judge_strict")
    ax.axhline(statistics.mean(b[cfg]["judge_strict"] for b in base_by_seed), color="gray", ls="--",
               label=f"base, CFG {cfg.rsplit('_', 1)[1]} (its best)")
    ax.axhline(statistics.mean(b["base"]["judge_strict"] for b in base_by_seed), color="gray", ls=":",
               label="base, no CFG")
    ax.set_xlabel("iteration")
    ax.set_ylabel("strict accuracy by the judge")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside: the curves fill the axes
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, f"claims_{claim}.png"), dpi=100)
    plt.close(fig)


def _short_label(name: str) -> str:
    """`"NFT on digit_eval_ensemble, kl_beta 0.01"`: the run's reward and what else it changes, for legends."""
    change = dict(RUNS[name])
    label = "NFT on " + change.pop("reward", DEMO_REWARD)
    return ", ".join([label] + [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in change.items()])


def _seeds(results: List[dict]) -> str:
    """`"seed 0"` or `"seeds 0, 1, 2"`, for plot titles."""
    return ("seed " if len(results) == 1 else "seeds ") + ", ".join(str(r["seed"]) for r in results)


def load_previous(path: str):
    """The base results and runs of an earlier claims.json, each tagged with its seed."""
    with open(path) as f:
        previous = json.load(f)
    seeds = previous["args"]["seeds"]  # files written before results carried their seed list them in this order
    base = [dict(b, seed=b["seed"] if "seed" in b else seeds[i]) for i, b in enumerate(previous["base"])]
    runs = {name: [dict(r, seed=r["seed"] if "seed" in r else seeds[i]) for i, r in enumerate(results)]
            for name, results in previous["runs"].items()}
    return base, runs


def write(args, base: List[dict], runs: Dict[str, List[dict]], seconds: float) -> str:
    """claims.json with every result so far; the table (returned) and plots with the runs done for all `--seeds`."""
    with open(os.path.join(args.output_dir, "claims.json"), "w") as f:
        json.dump({"args": vars(args), "base": base, "runs": runs, "seconds": seconds}, f, indent=1)
    chosen = {n: [r for r in runs.get(n, []) if r["seed"] in args.seeds] for n in run_names(args.claims)}
    complete = {n: v for n, v in chosen.items() if {r["seed"] for r in v} == set(args.seeds)}
    base_by_seed = [b for b in base if b["seed"] in args.seeds]
    markdown = table(args.claims, base_by_seed, complete)
    with open(os.path.join(args.output_dir, "claims.md"), "w") as f:
        f.write(markdown)
    plot(complete, base_by_seed, args.output_dir)
    return markdown


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", nargs="+", default=list(CLAIM_RUNS), choices=list(CLAIM_RUNS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=DEMO_CONFIG["max_steps"])
    parser.add_argument("--eval_every", type=int, default=10)
    parser.add_argument("--output_dir", default="benchmarks/results/digits_claims")
    parser.add_argument("--resume", action="store_true", help="Keep the runs in --output_dir/claims.json; run the rest.")
    args = parser.parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))

    start = time.time()
    names = run_names(args.claims)
    base, runs = [], {}  # every result, tagged with its seed
    if args.resume and os.path.exists(os.path.join(args.output_dir, "claims.json")):
        base, runs = load_previous(os.path.join(args.output_dir, "claims.json"))
    base += [base_results(k) for k in args.seeds if k not in {b["seed"] for b in base}]
    base.sort(key=lambda b: b["seed"])
    todo = [(name, k) for name in names for k in args.seeds if k not in {r["seed"] for r in runs.get(name, [])}]
    for name, k in todo:
        print(f"run {name}, seed {k} ({time.time() - start:.0f}s)", flush=True)
        runs.setdefault(name, []).append(
            nft_run(name, k, args.iterations, args.eval_every, with_diversity=name in CLAIM_RUNS["b"]))
        runs[name].sort(key=lambda r: r["seed"])
        write(args, base, runs, time.time() - start)  # after every run: a stopped benchmark keeps its results
    print(write(args, base, runs, time.time() - start))
    print(f"{len(todo)} NFT runs, {time.time() - start:.0f} s; written to {args.output_dir}")


if __name__ == "__main__":
    main()
