"""Accuracy of a pipeline on the demo world's 60 evaluation prompts, judged by the bundled classifier."""

from typing import Dict, Sequence

import torch

from .reward import DigitEval
from .world import prompt_records


@torch.no_grad()
def evaluate(pipe, seeds: Sequence[int] = (0, 1), guidance_scale: float = 1.0, num_steps: int = 40,
             max_sequence_length: int = 32, batch_size: int = 120) -> Dict[str, float]:
    """Strict accuracy (digit and colour right), digit and colour accuracy, overall and on held-out combinations.

    Every (prompt, seed) pair is generated with the pipeline's own Euler sampler at 32 px, fixed seeds.
    """
    records = [r for r in prompt_records("eval") for _ in seeds]
    seed_list = [s for _ in prompt_records("eval") for s in seeds]
    judge = DigitEval()
    images = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        generators = [torch.Generator().manual_seed(s) for s in seed_list[start : start + batch_size]]
        out = pipe([r["prompt"] for r in chunk], height=32, width=32, num_inference_steps=num_steps,
                   guidance_scale=guidance_scale, generator=generators, output_type="pt",
                   max_sequence_length=max_sequence_length)
        images.append(out.images.float().cpu())
    images = torch.cat(images)
    digits, colors = judge.predict(images)
    digit_right = torch.tensor([int(d) == r["digit"] for d, r in zip(digits, records)], dtype=torch.float32)
    color_right = torch.tensor([c == r["color"] for c, r in zip(colors, records)], dtype=torch.float32)
    strict = digit_right * color_right
    held = torch.tensor([r["held_out"] for r in records])
    return {
        "strict": strict.mean().item(),
        "digit": digit_right.mean().item(),
        "color": color_right.mean().item(),
        "strict_held_out": strict[held].mean().item(),
        "images": len(records),
    }
