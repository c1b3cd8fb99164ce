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
    def probabilities(self, images: torch.Tensor):
        """`(B, 10)` digit and `(B, 6)` colour probabilities of images `(B, 3, H, W)` in [0, 1]."""
        digit_logits, color_logits = self.model(images.to(self.device, torch.float32))
        return digit_logits.softmax(-1).cpu(), color_logits.softmax(-1).cpu()

    def predict(self, images: torch.Tensor):
        """Predicted digits and colour names of images `(B, 3, H, W)` in [0, 1]."""
        digits, colors = self.probabilities(images)
        return digits.argmax(1), [COLOR_NAMES[i] for i in colors.argmax(1).tolist()]

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


def _views(images: torch.Tensor) -> torch.Tensor:
    """`(8, B, 3, H, W)`: the images as rendered, moved by 2 pixels four ways, dimmed, blurred, and thickened."""
    shifted = [torch.roll(images, shifts=s, dims=d) for s, d in ((2, 2), (-2, 2), (2, 3), (-2, 3))]
    blurred = torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1)
    thick = torch.nn.functional.max_pool2d(images, 3, stride=1, padding=1)
    return torch.stack([images, *shifted, images * 0.7, blurred, thick])


class RobustDigitEval(DigitEval):
    """`digit_eval_robust`: the bundled classifier's *probabilities* of the prompt's digit and colour, averaged over
    eight views of each image (moved, dimmed, blurred, thickened): `0.5 P(digit) + 0.5 P(colour)`.

    A pattern that fools the classifier at one alignment and contrast, with a confident argmax, earns little here:
    the reward asks for a digit that reads as one in every view. `strict`, `digit` and `color` are the argmax
    decisions of the averaged probabilities, as `digit_eval` logs them.
    """

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor):
        """`(B, 10)` digit and `(B, 6)` colour probabilities, averaged over the views."""
        views = _views(images.to(self.device, torch.float32).clamp(0, 1))
        digit_logits, color_logits = self.model(views.flatten(0, 1))
        n = len(views)
        return (digit_logits.softmax(-1).view(n, len(images), -1).mean(0).cpu(),
                color_logits.softmax(-1).view(n, len(images), -1).mean(0).cpu())

    def __call__(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]) -> Dict[str, List[float]]:
        for meta, prompt in zip(metadata, prompts):
            if "digit" not in meta or "color" not in meta:
                raise ValueError(f"digit_eval_robust needs 'digit' and 'color' metadata for {prompt!r}.")
        digits, colors = self.probabilities(images)
        want_digit = torch.tensor([int(m["digit"]) for m in metadata])
        want_color = torch.tensor([COLOR_NAMES.index(m["color"]) for m in metadata])
        rows = torch.arange(len(metadata))
        p_digit, p_color = digits[rows, want_digit], colors[rows, want_color]
        digit_right = (digits.argmax(1) == want_digit).float()
        color_right = (colors.argmax(1) == want_color).float()
        return {"scores": (0.5 * p_digit + 0.5 * p_color).tolist(), "strict": (digit_right * color_right).tolist(),
                "digit": digit_right.tolist(), "color": color_right.tolist()}


class EnsembleDigitEval(DigitEval):
    """`digit_eval_ensemble`: `digit_eval`'s credit, read from the mean probabilities of the bundled classifier and
    four more of its class, each trained from its own seed with stronger augmentation (shear, stroke contrast, a
    blacked-out patch; `train_classifier(augment="ensemble")`).

    A pattern that fools one network seldom fools five trained apart, so the policy has to draw what they agree on.

    Args:
        folder: Folder of `classifier.safetensors` and `ensemble/member_*.safetensors` (default: the bundled one).
        device: Where the classifiers run.
    """

    def __init__(self, folder: Optional[str] = None, device=None, **_):
        super().__init__(folder=folder, device=device)
        members = os.path.join(folder or WEIGHTS, "ensemble")
        names = sorted(n for n in os.listdir(members) if n.startswith("member_") and n.endswith(".safetensors"))
        self.members = [self.model] + [load_classifier(members, n).to(self.device) for n in names]

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor):
        images = images.to(self.device, torch.float32)
        outputs = [model(images) for model in self.members]
        digits = torch.stack([d.softmax(-1) for d, _ in outputs]).mean(0)
        colors = torch.stack([c.softmax(-1) for _, c in outputs]).mean(0)
        return digits.cpu(), colors.cpu()
