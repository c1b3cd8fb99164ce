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
        depth = base64.b64decode(text[:48], validate=True)[24]  # the IHDR's bit depth: 8 bytes of signature, 16 in
        if depth > 8:  # converted to 8 bits, a 16-bit mid-grey would be scored as white
            raise ValueError(f"image {i} is a {depth}-bit PNG: send 8-bit images (as RemoteReward does)")
        try:
            arrays.append(np.asarray(image.convert("RGB")))
        except Exception as error:
            raise ValueError(f"image {i} is not a base64 PNG ({error})") from error
    if len({a.shape for a in arrays}) > 1:
        raise ValueError(f"images differ in size: {sorted({a.shape for a in arrays})}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


IMAGES_KEY = "__images__"  # a metadata value that is an image tensor, sent as PNGs


def encode_metadata(metadata: List[dict]) -> List[dict]:
    """Metadata for JSON: image tensors in [0, 1] (a source `(3, H, W)`, a mask `(1, H, W)`, several `(N, C, H, W)`)
    as `{"__images__": [base64 PNG, ...], "stack": ...}`, lossless for 8-bit images; other values as they are."""
    return [{k: _encode_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in row.items()} for row in metadata]


def decode_metadata(metadata: List[dict], max_pixels: Optional[int] = None) -> List[dict]:
    """`encode_metadata`'s image values back to tensors (3 channels, or 1 for a mask); the rest as it is.

    Raises:
        ImageTooLarge, ValueError: As `decode_images` for a bad or too large image.
    """
    return [{k: _decode_tensor(v, max_pixels) if isinstance(v, dict) and IMAGES_KEY in v else v
             for k, v in row.items()} for row in metadata]


def _encode_tensor(tensor: torch.Tensor) -> dict:
    frames = tensor.detach().float().cpu()
    stack = frames.dim() == 4
    frames = frames if stack else frames[None]
    encoded = []
    for frame in (frames.clamp(0, 1) * 255).round().to(torch.uint8):
        array = frame[0].numpy() if frame.shape[0] == 1 else frame.permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array), "L" if frame.shape[0] == 1 else "RGB").save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return {IMAGES_KEY: encoded, "stack": stack, "channels": int(frames.shape[1])}


def _decode_tensor(value: dict, max_pixels: Optional[int]) -> torch.Tensor:
    images = decode_images(value[IMAGES_KEY], max_pixels=max_pixels)
    if value.get("channels") == 1:
        images = images[:, :1]  # a mask: its one channel, repeated in RGB by the PNG decoder
    return images if value.get("stack") else images[0]
