"""The wire format of remote rewards: images as base64 PNG (lossless 8-bit), with prompts and metadata."""

import base64
import io
import warnings
from typing import List, Optional

import numpy as np
import torch
from PIL import Image

from ..visualize import to_pil


def encode_images(images: torch.Tensor) -> List[str]:
    """Float images `(B, 3, H, W)` in [0, 1] to base64 PNG strings."""
    encoded = []
    for image in to_pil(images):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return encoded


class ImageTooLarge(ValueError):
    """An image has more pixels than the server allows."""


def decode_images(encoded: List[str], max_pixels: Optional[int] = None) -> torch.Tensor:
    """Base64 PNG strings back to a float tensor `(B, 3, H, W)` in [0, 1].

    Args:
        encoded: The images.
        max_pixels: Refuse an image with more pixels, from its header, before any pixel is decoded (a 27 KB PNG
            can declare 13000 x 13000 pixels).

    Raises:
        ImageTooLarge: If an image has more than `max_pixels` pixels.
        ValueError: If a string is not a PNG image, or the images differ in size.
    """
    arrays = []
    for i, text in enumerate(encoded):
        try:
            with warnings.catch_warnings():  # our own pixel limit decides, below
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))  # reads the header only
            if image.format != "PNG":
                raise ValueError(f"format {image.format}")
        except Image.DecompressionBombError as error:
            raise ImageTooLarge(f"image {i}: {error}") from error
        except Exception as error:
            raise ValueError(f"image {i} is not a base64 PNG ({error})") from error
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise ImageTooLarge(f"image {i} is {image.width}x{image.height}: more than {max_pixels} pixels")
        try:
            arrays.append(np.asarray(image.convert("RGB")))
        except Exception as error:
            raise ValueError(f"image {i} is not a base64 PNG ({error})") from error
    if len({a.shape for a in arrays}) > 1:
        raise ValueError(f"images differ in size: {sorted({a.shape for a in arrays})}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
