"""`digit_eval`: GenEval-style scoring of the demo world, with the bundled classifier."""

import os
from typing import Dict, List, Optional

import torch

from .classifier import load_classifier
from .world import COLOR_NAMES

WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


class DigitEval:
    """Partial credit per image, in the GenEval manner: 0.5 for the right digit plus 0.5 for the right colour.
    `strict` (both right) is returned too, as the accuracy metric, and `digit` and `color` (each right or not).

    Reads the `digit` (int) and `color` (name) metadata that `diffusers_nft.demo.world.prompt_dataset` provides.

    Args:
        folder: Folder of `classifier.safetensors` (default: the bundled one).
        device: Where the classifier runs.
    """

    def __init__(self, folder: Optional[str] = None, device=None, **_):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model = load_classifier(folder or WEIGHTS).to(self.device)

    @torch.no_grad()
    def predict(self, images: torch.Tensor):
        """Predicted digits and colour names of images `(B, 3, H, W)` in [0, 1]."""
        digit_logits, color_logits = self.model(images.to(self.device, torch.float32))
        return digit_logits.argmax(1).cpu(), [COLOR_NAMES[i] for i in color_logits.argmax(1).tolist()]

    def __call__(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]) -> Dict[str, List[float]]:
        digits, colors = self.predict(images)
        scores, strict, digit_right, color_right = [], [], [], []
        for digit, color, meta, prompt in zip(digits.tolist(), colors, metadata, prompts):
            if "digit" not in meta or "color" not in meta:
                raise ValueError(f"digit_eval needs 'digit' and 'color' metadata for {prompt!r}; use the demo prompts.")
            digit_right.append(float(digit == int(meta["digit"])))
            color_right.append(float(color == meta["color"]))
            scores.append(0.5 * digit_right[-1] + 0.5 * color_right[-1])
            strict.append(digit_right[-1] * color_right[-1])
        return {"scores": scores, "strict": strict, "digit": digit_right, "color": color_right}
