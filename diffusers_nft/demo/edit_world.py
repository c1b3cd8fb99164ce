"""The edit demo world: a coloured digit (the source) and an instruction that changes its colour or its digit.

Sources are the digits world's images (`world.render`): a scikit-learn digit in one of six colours on black, 32x32.
An instruction asks for one change and keeps the rest: "make it blue" keeps the stroke and changes the colour;
"turn it into a seven" keeps the colour (and the position) and draws a seven. Training rows take their sources from
the train digits; evaluation rows from the held-out digits, whose strokes no model here has seen.

Each row carries what the edit should give (`digit`, `color`, read by `digit_eval` and `digit_edit`), what the
source was (`source_digit`, `source_color`) and which attribute the instruction changes (`edit`).
"""

from typing import List, Tuple

import numpy as np
import torch

from .world import COLOR_NAMES, DIGIT_WORDS, load_digits_split, render

COLOR_EDITS = ["make it {color}", "paint it {color}", "the same digit in {color}"]
DIGIT_EDITS = ["turn it into {a_word}", "change the digit to {digit}", "{a_word} in the same colour"]
TRAIN_SOURCES, EVAL_SOURCES = 240, 60


def instruction(edit: str, target_digit: int, target_color: str, phrasing: int = 0) -> str:
    """The instruction of an edit (`"color"` or `"digit"`) to the given target, in one of three phrasings."""
    if edit == "color":
        return COLOR_EDITS[phrasing].format(color=target_color)
    word = DIGIT_WORDS[target_digit]
    return DIGIT_EDITS[phrasing].format(a_word=("an " if word == "eight" else "a ") + word, digit=target_digit)


def random_edit(source_digit: int, source_color: int, generator: torch.Generator) -> Tuple[str, int, int]:
    """`(edit, target_digit, target_color_index)`: a colour or a digit change, never to the source's own value."""
    if torch.rand(1, generator=generator).item() < 0.5:
        shift = int(torch.randint(1, len(COLOR_NAMES), (1,), generator=generator))
        return "color", source_digit, (source_color + shift) % len(COLOR_NAMES)
    shift = int(torch.randint(1, 10, (1,), generator=generator))
    return "digit", (source_digit + shift) % 10, source_color


def edit_records(split: str) -> List[dict]:
    """Rows of the edit world: `"train"` (two edits, one of each kind, of each of 240 train digits, all phrasings
    drawn) or `"eval"` (one edit of each of 60 held-out digits, first phrasing, kinds alternating).

    Each row has `prompt`, `image` (the source, a PIL image), `digit` and `color` (the edit's target),
    `source_digit`, `source_color` and `edit`.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}.")
    digits, labels = load_digits_split("train" if split == "train" else "held_out")
    generator = torch.Generator().manual_seed(11 if split == "train" else 12)
    count = TRAIN_SOURCES if split == "train" else EVAL_SOURCES
    index = torch.randperm(len(digits), generator=generator)[:count]
    colors = torch.randint(len(COLOR_NAMES), (count,), generator=generator)
    sources = render(digits[index.numpy()], [COLOR_NAMES[c] for c in colors])
    rows = []
    for i, (k, c) in enumerate(zip(index.tolist(), colors.tolist())):
        kinds = ("color", "digit") if split == "train" else (("color", "digit")[i % 2],)
        for kind in kinds:
            rows.append(_row(sources[i], int(labels[k]), c, kind, generator, split == "train"))
    return rows


def _row(source: torch.Tensor, digit: int, color: int, kind: str, generator, any_phrasing: bool) -> dict:
    from PIL import Image

    while True:
        edit, target_digit, target_color = random_edit(digit, color, generator)
        if edit == kind:
            break
    phrasing = int(torch.randint(3, (1,), generator=generator)) if any_phrasing else 0
    pixels = (source.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return {"prompt": instruction(edit, target_digit, COLOR_NAMES[target_color], phrasing),
            "image": Image.fromarray(pixels), "digit": target_digit, "color": COLOR_NAMES[target_color],
            "source_digit": digit, "source_color": COLOR_NAMES[color], "edit": edit}


def edit_dataset(split: str):
    """`edit_records(split)` as a `datasets.Dataset` (the sources as an `Image` column), ready for `NFTTrainer`
    with `image_column="image"`."""
    from datasets import Dataset

    return Dataset.from_list(edit_records(split))


def training_pairs(seed: int, count: int):
    """Random (source, instruction, target) triples from the train digits, for pretraining the edit model.

    Returns:
        Sources and targets `(count, 3, 32, 32)` in [0, 1], and the instructions (every phrasing drawn). A digit
        edit's target is another train digit of the target class, in the source's colour and position.
    """
    digits, labels = load_digits_split("train")
    by_class = [np.flatnonzero(labels == d) for d in range(10)]
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(len(digits), (count,), generator=generator).tolist()
    colors = torch.randint(len(COLOR_NAMES), (count,), generator=generator).tolist()
    offsets = torch.randint(-2, 3, (count, 2), generator=generator).numpy()
    targets, target_colors, prompts = [], [], []
    for k, c in zip(index, colors):
        edit, target_digit, target_color = random_edit(int(labels[k]), c, generator)
        choices = by_class[target_digit]
        targets.append(k if edit == "color" else int(choices[int(torch.randint(len(choices), (1,), generator=generator))]))
        target_colors.append(COLOR_NAMES[target_color])
        prompts.append(instruction(edit, target_digit, COLOR_NAMES[target_color], int(torch.randint(3, (1,), generator=generator))))
    sources = render(digits[index], [COLOR_NAMES[c] for c in colors], offsets)
    return sources, render(digits[targets], target_colors, offsets), prompts
