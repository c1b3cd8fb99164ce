"""Text rendering reward: OCR of the image against the quoted text of the prompt, offline with RapidOCR."""

from typing import List, Optional

import numpy as np
import torch

from ..visualize import to_pil
from .base import require


def quoted_text(prompt: str) -> Optional[str]:
    """The text between the first pair of double quotes, or None."""
    parts = prompt.split('"')
    return parts[1] if len(parts) >= 3 else None


def ocr_similarity(target: str, recognised: str) -> float:
    """`1 - min(levenshtein, len) / len` of lower-cased, space-free texts; 1 if the target is inside the reading."""
    from rapidfuzz.distance import Levenshtein

    target = target.replace(" ", "").lower()
    recognised = recognised.replace(" ", "").lower()
    if not target:
        return 1.0
    if target in recognised:
        return 1.0
    return 1.0 - min(Levenshtein.distance(recognised, target), len(target)) / len(target)


class OCRReward:
    """How well the image renders the prompt's quoted text, in [0, 1] (0 when nothing is read).

    RapidOCR runs ONNX Runtime models that ship inside its wheel: no network. Prompts without a quoted text raise.

    Args:
        det_limit_side_len: RapidOCR's detection size limit (its default when None); small values such as 64
            are much faster on small images.
        min_confidence: Readings below this confidence are ignored.
    """

    def __init__(self, det_limit_side_len: Optional[int] = None, min_confidence: float = 0.0):
        rapidocr = require("rapidocr_onnxruntime", "ocr", "rapidocr_onnxruntime")
        require("rapidfuzz", "ocr")
        options = {} if det_limit_side_len is None else {"det_limit_side_len": det_limit_side_len}
        self.engine = rapidocr.RapidOCR(**options)
        self.min_confidence = min_confidence

    def read(self, image) -> str:
        result, _ = self.engine(np.asarray(image))
        return "".join(text for _, text, confidence in result or [] if float(confidence) >= self.min_confidence)

    def __call__(self, images: torch.Tensor, prompts: List[str], metadata) -> List[float]:
        scores = []
        for image, prompt in zip(to_pil(images), prompts):
            target = quoted_text(prompt)
            if target is None:
                raise ValueError(f'The ocr reward needs the text to render in double quotes, e.g. \'a sign that says "open"\'; got {prompt!r}.')
            scores.append(ocr_similarity(target, self.read(image)))
        return scores
