"""Model-free rewards: JPEG file size, as in DDPO's compressibility experiments."""

import io
from typing import List

import torch

from ..visualize import to_pil


def _jpeg_kilobytes(images: torch.Tensor, quality: int = 95) -> List[float]:
    sizes = []
    for image in to_pil(images):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return sizes


def jpeg_compressibility(images: torch.Tensor, prompts, metadata) -> List[float]:
    """Minus the JPEG size (quality 95) of each image, in kilobytes. Higher is more compressible (simpler)."""
    return [-size for size in _jpeg_kilobytes(images)]


def jpeg_incompressibility(images: torch.Tensor, prompts, metadata) -> List[float]:
    """The JPEG size (quality 95) of each image, in kilobytes. Higher is more detailed."""
    return _jpeg_kilobytes(images)
