"""The bundled demo world: coloured handwritten digits, a tiny pretrained text-to-image pipeline, and its judge.

    from diffusers_nft.demo import load_demo_pipeline, prompt_dataset
    pipe = load_demo_pipeline()                       # offline, from the package folder
    train, evaluation = prompt_dataset("train"), prompt_dataset("eval")
"""

import os

from .world import HELD_OUT, prompt_dataset, prompt_records

WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
PIPELINE = os.path.join(WEIGHTS, "pipeline")


def load_demo_pipeline():
    """The bundled `StableDiffusion3Pipeline` (32 px, float32), loaded with `from_pretrained` from the package."""
    import torch
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline.from_pretrained(PIPELINE, dtype=torch.float32)


__all__ = ["HELD_OUT", "PIPELINE", "WEIGHTS", "load_demo_pipeline", "prompt_dataset", "prompt_records"]
