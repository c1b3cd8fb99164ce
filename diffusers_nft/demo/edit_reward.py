"""The edit world's reward (`digit_edit`) and its held-out judge (`digit_edit_judge`).

Both read the row's target (`digit`, `color`), which attribute the instruction changes (`edit`) and the source image
(`source_image`, which the trainer puts in every row's metadata for an image-conditioned run).
"""

from typing import Dict, List

import torch

from .judge import INK_THRESHOLD, DigitJudge, stroke_intensity
from .reward import DigitEval

STROKE_WEIGHT = 0.25


def _check(metadata: List[dict], name: str) -> None:
    for meta in metadata:
        missing = [k for k in ("digit", "color", "edit", "source_image") if k not in meta]
        if missing:
            raise ValueError(f"{name} needs {missing} in each row: train on `diffusers_nft.demo.edit_world` rows with "
                             "--image_column image (the source).")


def stroke_similarity(images: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the stroke intensities (brightest channel) of each image and its source, in [0, 1]."""
    a, b = stroke_intensity(images).flatten(1), stroke_intensity(sources).flatten(1)
    return torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-6).clamp(min=0)


def _sources(metadata: List[dict], images: torch.Tensor) -> torch.Tensor:
    sources = torch.stack([m["source_image"].float() for m in metadata])
    if sources.shape[-2:] != images.shape[-2:]:
        sources = torch.nn.functional.interpolate(sources, size=images.shape[-2:], mode="bilinear")
    return sources


class DigitEdit(DigitEval):
    """`digit_edit`: `digit_eval`'s credit for the edit's target (0.5 for its digit, 0.5 for its colour), read by the
    bundled classifier; for a colour edit, a quarter of the score is instead the stroke kept from the source
    (`stroke_similarity`), so that recolouring by redrawing earns less than recolouring the same stroke.

    Logged beside it: `followed` (the changed attribute is right), `kept` (the other one is still the source's) and
    `strict` (both).
    """

    def __call__(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]) -> Dict[str, List[float]]:
        _check(metadata, "digit_edit")
        out = super().__call__(images, prompts, metadata)
        color_edit = torch.tensor([m["edit"] == "color" for m in metadata])
        stroke = stroke_similarity(images.float().cpu(), _sources(metadata, images.cpu()))
        scores = torch.tensor(out["scores"])
        scores = torch.where(color_edit, (1 - STROKE_WEIGHT) * scores + STROKE_WEIGHT * stroke, scores)
        digit, color = torch.tensor(out["digit"]), torch.tensor(out["color"])
        followed = torch.where(color_edit, color, digit)
        kept = torch.where(color_edit, digit, color)
        return {"scores": scores.tolist(), "strict": out["strict"], "followed": followed.tolist(),
                "kept": kept.tolist()}


def stroke_iou(images: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """Intersection over union of the ink (above `INK_THRESHOLD` of each image's peak) of each image and its source."""
    def ink(x):
        strokes = stroke_intensity(x)
        return strokes >= INK_THRESHOLD * strokes.flatten(1).amax(1).clamp_min(1e-6).view(-1, 1, 1)

    a, b = ink(images), ink(sources)
    return (a & b).flatten(1).sum(1) / (a | b).flatten(1).sum(1).clamp(min=1)


class DigitEditJudge(DigitJudge):
    """`digit_edit_judge`: the held-out judge of the edit world, which no recipe trains on.

    `digit_judge`'s readers (an SVM on colour-free strokes, the ink's mean colour) decide `followed` (the changed
    attribute is the target's) and `kept`: the other attribute is still the source's and, for a colour edit, the ink
    overlaps the source's (intersection over union >= 0.8: the bundled VAE's
    round trip of a source keeps 0.91-0.98 of it, another drawing of the same digit 0.56-0.89). `strict` (both) is the score.
    """

    MIN_IOU = 0.8

    def __call__(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]) -> Dict[str, List[float]]:
        _check(metadata, "digit_edit_judge")
        out = super().__call__(images, prompts, metadata)
        color_edit = torch.tensor([m["edit"] == "color" for m in metadata])
        digit, color = torch.tensor(out["digit"]), torch.tensor(out["color"])
        same_stroke = (stroke_iou(images.float().cpu(), _sources(metadata, images.cpu())) >= self.MIN_IOU).float()
        followed = torch.where(color_edit, color, digit)
        kept = torch.where(color_edit, digit * same_stroke, color)
        strict = followed * kept
        return {"scores": strict.tolist(), "strict": strict.tolist(), "followed": followed.tolist(),
                "kept": kept.tolist()}
