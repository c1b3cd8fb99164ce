"""`digit_judge`: the demo world's held-out judge, which no recipe trains on.

It shares nothing with the bundled `digit_eval` classifier (a CNN on raw RGB pixels, trained with shifts, brightness
and noise) but the train digits:
- the digit is read by an RBF support-vector machine (scikit-learn) on colour-free features: the stroke intensity
  (the brightest channel), cropped to its ink's bounding box, padded square and resized to 12 x 12, then
  standardised; it is trained with rotations, rescaling, thicker and blurred strokes;
- the colour is not learnt: the ink-weighted mean colour of the stroke, nearest of the six palette colours by
  angle.
`benchmarks/digit_judge.py` measures both judges on the held-out real digits in every colour.
"""

import functools
import math
from typing import Dict, List

import numpy as np
import torch

from .world import COLOR_NAMES, COLORS, load_digits_split, render

FEATURE_SIZE = 12
INK_THRESHOLD = 0.25  # of the image's brightest stroke: what counts as ink for the crop and the colour


def stroke_intensity(images: torch.Tensor) -> torch.Tensor:
    """`(N, H, W)`: the brightest channel of each pixel (a red, green or white stroke alike)."""
    return images.float().amax(dim=1)


def digit_features(images: torch.Tensor) -> np.ndarray:
    """`(N, 144)`: each image's stroke, cropped to its ink, padded square, resized to 12 x 12 and scaled to peak 1."""
    features = []
    for ink in stroke_intensity(images):
        peak = float(ink.max())
        if peak <= 1e-3:
            features.append(np.zeros(FEATURE_SIZE * FEATURE_SIZE, dtype=np.float32))
            continue
        rows, cols = torch.nonzero(ink >= INK_THRESHOLD * peak, as_tuple=True)
        crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] / peak
        side = max(crop.shape)
        square = torch.zeros(side, side)
        top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
        square[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
        small = torch.nn.functional.interpolate(square[None, None], size=(FEATURE_SIZE, FEATURE_SIZE), mode="area")
        features.append(small.flatten().numpy())
    return np.stack(features)


def stroke_colors(images: torch.Tensor) -> List[str]:
    """The palette colour nearest (by angle) to the ink-weighted mean colour of each image's stroke."""
    palette = torch.nn.functional.normalize(torch.tensor([COLORS[c] for c in COLOR_NAMES], dtype=torch.float32), dim=1)
    ink = stroke_intensity(images)
    peak = ink.flatten(1).amax(dim=1).clamp_min(1e-6).view(-1, 1, 1)
    weight = (ink / peak).clamp(min=0) * (ink >= INK_THRESHOLD * peak)
    mean = (images.float() * weight.unsqueeze(1)).sum(dim=(2, 3))
    similarity = torch.nn.functional.normalize(mean, dim=1) @ palette.T
    return [COLOR_NAMES[i] for i in similarity.argmax(dim=1).tolist()]


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rotations of up to 15 degrees, scale 0.8-1.15, and on a third each thicker (dilated) or blurred strokes."""
    n = len(images)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(15)
    scale = 0.8 + 0.35 * torch.rand(n, generator=generator)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros(n)], 1), torch.stack([sin, cos, torch.zeros(n)], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(images, grid, align_corners=False)
    kind = torch.randint(3, (n,), generator=generator)
    thick = torch.nn.functional.max_pool2d(out, 3, stride=1, padding=1)
    blurred = torch.nn.functional.avg_pool2d(out, 3, stride=1, padding=1)
    pick = kind.view(-1, 1, 1, 1)
    return torch.where(pick == 1, thick, torch.where(pick == 2, blurred, out))


@functools.lru_cache(maxsize=2)
def train_digit_reader(copies: int = 6, seed: int = 0):
    """The scikit-learn pipeline (standardise, RBF SVM) on `copies` augmented renderings of each train digit."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    digits, labels = load_digits_split("train")
    generator = torch.Generator().manual_seed(seed)
    white = render(digits, ["yellow"] * len(digits)).amax(dim=1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    features = [digit_features(white)]
    for _ in range(copies - 1):
        features.append(digit_features(_augment(white, generator)))
    reader = make_pipeline(StandardScaler(), SVC(C=10.0, gamma="scale"))
    reader.fit(np.concatenate(features), np.tile(labels, copies))
    return reader


class DigitJudge:
    """GenEval-style credit as `digit_eval` gives (0.5 digit + 0.5 colour; `strict`, `digit`, `color`), from a
    judge that shares no model, features or augmentations with it: the held-out judge of the demo world.

    Reads the `digit` and `color` metadata of `diffusers_nft.demo.world.prompt_dataset`.
    """

    def __init__(self, **_):
        self.reader = train_digit_reader()

    def predict(self, images: torch.Tensor):
        """Predicted digits and colour names of images `(B, 3, H, W)` in [0, 1]."""
        images = images.detach().float().cpu()
        if images.shape[-1] != 32:
            images = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", antialias=True)
        return torch.as_tensor(self.reader.predict(digit_features(images))), stroke_colors(images)

    def __call__(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]) -> Dict[str, List[float]]:
        for meta, prompt in zip(metadata, prompts):
            if "digit" not in meta or "color" not in meta:
                raise ValueError(f"digit_judge needs 'digit' and 'color' metadata for {prompt!r}; use the demo prompts.")
        digits, colors = self.predict(images)
        digit_right = [float(d == int(m["digit"])) for d, m in zip(digits.tolist(), metadata)]
        color_right = [float(c == m["color"]) for c, m in zip(colors, metadata)]
        return {"scores": [0.5 * d + 0.5 * c for d, c in zip(digit_right, color_right)],
                "strict": [d * c for d, c in zip(digit_right, color_right)], "digit": digit_right,
                "color": color_right}
