"""Classifier-free guidance, in one place for sampling and for objectives that train on guided velocities."""

from typing import Callable, Optional

import torch

from .pipelines import Conditioning, select_conditioning
from .pipelines.base import SOURCE, UNCONDITIONAL


def empty_prompt_rows(uncond: Conditioning, num_rows: int) -> Conditioning:
    """The empty prompt's conditioning (one row) repeated for `num_rows` samples."""
    return select_conditioning(uncond, torch.zeros(num_rows, dtype=torch.long))


def guided_velocity(predict: Callable, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning,
                    uncond: Optional[Conditioning] = None, guidance_scale: float = 1.0) -> torch.Tensor:
    """`predict(x, sigma, cond)`, or with `uncond` the guided `v_u + scale (v_c - v_u)`.

    Two calls rather than one of twice the batch: the empty prompt's text may be shorter than the prompts'
    (masked text encoders), so the rows cannot always be stacked.
    """
    v_cond = predict(x, sigma, cond)
    if uncond is None:
        return v_cond
    if SOURCE in cond:  # the unconditional branch drops the text, and keeps the source image
        source = cond[SOURCE]  # (with the empty prompt's states where the text encoder reads the image too)
        uncond = {**uncond, SOURCE: {**source, **source.get(UNCONDITIONAL, {})}}
    v_uncond = predict(x, sigma, uncond)
    return v_uncond + guidance_scale * (v_cond - v_uncond)
