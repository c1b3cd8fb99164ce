#!/usr/bin/env python
"""Calibrate the demo world's rewards and its held-out judge on real held-out digits in every colour.

    python benchmarks/digit_judge.py --out benchmarks/results/digit_judge.md

`digit_eval` (the bundled CNN, the reward the demo trains on), `digit_eval_ensemble` (its mean with four CNNs of
its class trained apart) and `digit_judge` (the held-out judge: an SVM on colour-free cropped strokes, and the
stroke's mean colour; `diffusers_nft.demo.judge`) score the 360 held-out
scikit-learn digits, never seen by either, rendered in each of the six colours: as rendered (centred, full
brightness), and moved by up to 3 pixels with strokes dimmed to 60-100 %.
"""

import argparse

import torch

from diffusers_nft.demo.judge import DigitJudge
from diffusers_nft.demo.reward import DigitEval, EnsembleDigitEval
from diffusers_nft.demo.world import COLOR_NAMES, load_digits_split, render


def accuracies(judge, images, labels, color):
    out = judge(images, [""] * len(images), [{"digit": int(label), "color": color} for label in labels])
    return [sum(out[k]) / len(images) for k in ("digit", "color", "strict")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="Also write the table to this markdown file.")
    args = parser.parse_args(argv)
    judges = {"digit_eval (trained on)": DigitEval(), "digit_eval_ensemble": EnsembleDigitEval(),
              "digit_judge (held out)": DigitJudge()}
    digits, labels = load_digits_split("held_out")
    generator = torch.Generator().manual_seed(0)
    lines = ["| colour | rendering | " + " | ".join(f"{name}: digit / colour / strict" for name in judges) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in judges) + " |"]
    for color in COLOR_NAMES:
        offsets = torch.randint(-3, 4, (len(digits), 2), generator=generator).numpy()
        dim = 0.6 + 0.4 * torch.rand(len(digits), 1, 1, 1, generator=generator)
        for label, images in (("centred", render(digits, [color] * len(digits))),
                              ("moved, dimmed", render(digits, [color] * len(digits), offsets) * dim)):
            cells = [" / ".join(f"{a:.3f}" for a in accuracies(j, images, labels, color)) for j in judges.values()]
            lines.append(f"| {color} | {label} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"{len(digits)} held-out digits per row.\n\n" + table)


if __name__ == "__main__":
    main()
