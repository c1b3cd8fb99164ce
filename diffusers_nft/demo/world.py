"""The demo world: coloured handwritten digits on black, named by prompts. Fixed, so results compare.

Images are 32x32 RGB: one scikit-learn `load_digits` digit (8x8, shipped with scikit-learn), upscaled to 24x24,
centred on black, painted in one of six colours (pixel = stroke intensity x colour). The 1797 digits split into
a train part and a held-out part. Prompts name the digit as a word and the colour, in several phrasings; a fixed
set of (digit, colour) combinations is kept out of every NFT training prompt, and the evaluation covers all 60.
"""

import functools
from typing import Dict, List, Tuple

import numpy as np
import torch

COLORS: Dict[str, Tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
}
COLOR_NAMES = list(COLORS)
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PHRASINGS = [
    "a handwritten {word} in {color}",
    "the digit {digit}, {color}",
    "a {color} handwritten digit {word}",
    "the number {word} written in {color}",
]
EVAL_PHRASING = PHRASINGS[0]
IMAGE_SIZE, DIGIT_SIZE = 32, 24
# The bundled model's text tokens per sample: every prompt fits in 20 CLIP tokens and 8 T5 tokens (its T5
# vocabulary is trained on them: whole-word pieces). Each sample also carries 16 image tokens; 77 + 32 text tokens
# made sampling and training cost about 2.6x the 20 + 12 of now.
CLIP_LENGTH = 20
MAX_SEQUENCE_LENGTH = 12
# One held-out colour per digit, rotating through the colours: 10 of the 60 combinations.
HELD_OUT = tuple((digit, COLOR_NAMES[(digit + 2) % len(COLOR_NAMES)]) for digit in range(10))


def prompt_for(digit: int, color: str, phrasing: str = EVAL_PHRASING) -> str:
    return phrasing.format(word=DIGIT_WORDS[digit], digit=digit, color=color)


def all_combinations() -> List[Tuple[int, str]]:
    return [(digit, color) for digit in range(10) for color in COLOR_NAMES]


def all_prompts() -> List[str]:
    """Every prompt of the world: each (digit, colour) in each phrasing."""
    return [prompt_for(digit, color, phrasing) for digit, color in all_combinations() for phrasing in PHRASINGS]


def prompt_records(split: str) -> List[dict]:
    """Prompt rows with their metadata (`digit`, `color`, `held_out`).

    Args:
        split: `"train"` (every phrasing of the 50 combinations not held out), `"eval"` (the 60 combinations,
            one phrasing each) or `"held_out"` (the 10 held-out combinations, one phrasing each).
    """
    if split == "train":
        return [
            {"prompt": prompt_for(d, c, p), "digit": d, "color": c, "held_out": False}
            for d, c in all_combinations() if (d, c) not in HELD_OUT for p in PHRASINGS
        ]
    combos = all_combinations() if split == "eval" else list(HELD_OUT) if split == "held_out" else None
    if combos is None:
        raise ValueError(f"split must be 'train', 'eval' or 'held_out', got {split!r}.")
    return [{"prompt": prompt_for(d, c), "digit": d, "color": c, "held_out": (d, c) in HELD_OUT} for d, c in combos]


def prompt_dataset(split: str):
    """`prompt_records(split)` as a `datasets.Dataset`, ready for `NFTTrainer`."""
    from datasets import Dataset

    return Dataset.from_list(prompt_records(split))


@functools.lru_cache(maxsize=None)  # read once per process: the demo builds and rewards call it per batch
def load_digits_split(part: str) -> Tuple[np.ndarray, np.ndarray]:
    """The scikit-learn digits (8x8, values 0-16) and their labels: `"train"` (80%) or `"held_out"` (20%), fixed."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.RandomState(0).permutation(len(data.images))
    cut = int(0.8 * len(order))
    index = order[:cut] if part == "train" else order[cut:] if part == "held_out" else None
    if index is None:
        raise ValueError(f"part must be 'train' or 'held_out', got {part!r}.")
    return data.images[index], data.target[index]


def render(digits: np.ndarray, colors: List[str], offsets=None) -> torch.Tensor:
    """Paint 8x8 digits (values 0-16) as 32x32 RGB images in [0, 1]: `(N, 3, 32, 32)`.

    Args:
        digits: `(N, 8, 8)` arrays.
        colors: One colour name per digit.
        offsets: Optional `(N, 2)` integer shifts (rows, columns) of the digit inside the frame, for augmentation.
    """
    strokes = torch.as_tensor(np.asarray(digits), dtype=torch.float32).unsqueeze(1) / 16.0
    strokes = torch.nn.functional.interpolate(strokes, size=(DIGIT_SIZE, DIGIT_SIZE), mode="bilinear", align_corners=False)
    images = torch.zeros(len(strokes), 3, IMAGE_SIZE, IMAGE_SIZE)
    margin = (IMAGE_SIZE - DIGIT_SIZE) // 2
    palette = torch.tensor([COLORS[c] for c in colors], dtype=torch.float32) / 255
    for i, stroke in enumerate(strokes):
        dy, dx = (int(offsets[i][0]), int(offsets[i][1])) if offsets is not None else (0, 0)
        top, left = margin + dy, margin + dx
        images[i, :, top : top + DIGIT_SIZE, left : left + DIGIT_SIZE] = stroke.clamp(0, 1) * palette[i].view(3, 1, 1)
    return images
