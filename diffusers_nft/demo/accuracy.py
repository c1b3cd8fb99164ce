"""Accuracy and diversity of a pipeline on the demo world, judged by the bundled classifier."""

from contextlib import nullcontext
from typing import Dict, List, Sequence

import torch

from ..evaluate import evaluate_models
from ..generation import generate_images
from ..pipelines import get_family
from .judge import DigitJudge
from .reward import DigitEval
from .world import COLOR_NAMES, MAX_SEQUENCE_LENGTH, prompt_for, prompt_records


def generate(pipe, prompts: List[str], seeds: List[int], guidance_scale: float = 1.0, num_steps: int = 40,
             max_sequence_length: int = MAX_SEQUENCE_LENGTH, batch_size: int = 120) -> torch.Tensor:
    """Images (N, 3, 32, 32) in [0, 1], one per (prompt, seed) pair, from the pipeline's own (Euler) call."""
    family = get_family(pipe)
    kwargs = family.call_kwargs(32, num_steps, max_sequence_length, guidance_scale)
    return generate_images(pipe, prompts, seeds, call_kwargs=kwargs, batch_size=batch_size, family=family)


def accuracy(pipe, seeds: Sequence[int] = (0, 1), guidance_scale: float = 1.0, num_steps: int = 40,
             max_sequence_length: int = MAX_SEQUENCE_LENGTH, batch_size: int = 120) -> Dict[str, float]:
    """Strict accuracy (digit and colour right), digit and colour accuracy, overall and on held-out combinations,
    by the training reward (`digit_eval`: `strict`, `digit`, ...) and by the held-out judge that no recipe trains on
    (`digit_judge`: `judge_strict`, `judge_digit`, ...).

    `diffusers_nft.evaluate` on the 60 evaluation prompts: each prompt is generated once per seed `s`, at 32 px, and
    prompt `i` uses the noise of seed `1000 * s + i`. No two images share their noise: with one noise for all
    prompts, the few noises decide most of the digits (seeds 0 and 1 alone would give the base model 0.70, seeds 2
    and 3 would give it 0.42).
    """
    judges = {"digit_eval": DigitEval(), "digit_judge": DigitJudge()}
    results, _ = evaluate_models(
        pipe, {"model": nullcontext}, prompt_records("eval"), judges, seeds=seeds,
        guidance_scales=(guidance_scale,), num_steps=num_steps, resolution=32,
        max_sequence_length=max_sequence_length, batch_size=batch_size, group_by="held_out",
    )
    summary = next(iter(results.values()))
    out = {"images": len(seeds) * len(prompt_records("eval"))}
    for judge, prefix in (("digit_eval", ""), ("digit_judge", "judge_")):
        out.update({
            f"{prefix}strict": summary[f"{judge}/strict/mean"],
            f"{prefix}digit": summary[f"{judge}/digit/mean"],
            f"{prefix}color": summary[f"{judge}/color/mean"],
            f"{prefix}strict_held_out": summary[f"{judge}/strict/held_out=True/mean"],
        })
    return out


def diversity(pipe, seeds: Sequence[int] = tuple(range(8)), guidance_scale: float = 1.0, num_steps: int = 40,
              max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> float:
    """Mean pixel distance between images of the same prompt: how much the samples of one prompt differ.

    Ten prompts (each digit once, colours rotating), `len(seeds)` images each; the RMS difference over pixels of
    every pair of images of a prompt, averaged. 0 when a prompt always gives the same image (mode collapse).
    """
    prompts = [prompt_for(d, COLOR_NAMES[d % len(COLOR_NAMES)]) for d in range(10)]
    images = generate(pipe, [p for p in prompts for _ in seeds], [s for _ in prompts for s in seeds],
                      guidance_scale, num_steps, max_sequence_length)
    groups = images.flatten(1).view(len(prompts), len(seeds), -1)
    distances = torch.cdist(groups, groups) / groups.shape[-1] ** 0.5  # RMS pixel difference of each pair
    pairs = torch.triu_indices(len(seeds), len(seeds), offset=1)
    return distances[:, pairs[0], pairs[1]].mean().item()
