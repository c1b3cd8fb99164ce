"""Model-free rewards: JPEG file size, as in DDPO's compressibility experiments, on the release's scales."""

import io
from typing import List

import torch

from ..visualize import to_pil

# The release (Flow-GRPO's `rewards.py`, shared by DiffusionNFT) divides the compressibility reward by 500 so that it
# sits near the other rewards' scale in a weighted sum; its incompressibility reward stays in kB.
COMPRESSIBILITY_SCALE = 500.0


def _jpeg_kilobytes(images: torch.Tensor, quality: int = 95) -> List[float]:
    sizes = []
    for image in to_pil(images):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return sizes


def jpeg_compressibility(images: torch.Tensor, prompts, metadata) -> List[float]:
    """Minus the JPEG size (quality 95) of each image in kilobytes, divided by 500 (the release). Higher is more
    compressible (simpler)."""
    return [-size / COMPRESSIBILITY_SCALE for size in _jpeg_kilobytes(images)]


def jpeg_incompressibility(images: torch.Tensor, prompts, metadata) -> List[float]:
    """The JPEG size (quality 95) of each image, in kilobytes (the release's scale). Higher is more detailed."""
    return _jpeg_kilobytes(images)
