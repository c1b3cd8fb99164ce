"""How well a pipeline edits in the edit world: the 60 held-out edits, by `digit_edit` and by `digit_edit_judge`."""

import logging
import os
from typing import Callable, ContextManager, Dict, Sequence

from ..evaluate import evaluate_models
from .edit_reward import DigitEdit, DigitEditJudge
from .edit_world import edit_records

logger = logging.getLogger(__name__)

BASE_CFG_SCALES = (2.0, 3.0, 4.5)  # the base model's CFG is searched over these; the best by the judge is reported
KEYS = ("strict", "followed", "kept")


def edit_accuracy(pipe, models: Dict[str, Callable[[], ContextManager]], guidance_scales: Sequence[float] = (1.0,),
                  seeds: Sequence[int] = (0, 1), num_steps: int = 40, batch_size: int = 120):
    """Each model at each CFG scale on the held-out edits (a source digit never seen, and an instruction), every
    model on the same noise: `diffusers_nft.evaluate.evaluate_models` with the sources as the `image` argument.

    Returns:
        `(results, images)` of `evaluate_models`: `digit_edit/...` and `digit_edit_judge/...` means, also per kind of
        edit (`edit=color`, `edit=digit`).
    """
    rows = edit_records("eval")
    records = [{k: v for k, v in r.items() if k != "image"} for r in rows]
    judges = {"digit_edit": DigitEdit(), "digit_edit_judge": DigitEditJudge()}
    return evaluate_models(pipe, models, records, judges, seeds=seeds, guidance_scales=guidance_scales,
                           num_steps=num_steps, resolution=32, max_sequence_length=32, batch_size=batch_size,
                           group_by="edit", conditioning=[{"image": r["image"]} for r in rows])


def results_table(rows: Dict[str, Dict[str, float]]) -> str:
    """Markdown: a row per model, the reward's and the judge's strict / followed / kept means."""
    head = ("| held-out edits (60 x 2 seeds) | digit_edit score | strict | followed | kept "
            "| digit_edit_judge strict (held out) | followed | kept |\n| --- |" + " ---: |" * 7 + "\n")
    lines = []
    for label, s in rows.items():
        cells = [s["digit_edit/mean"]] + [s[f"digit_edit/{k}/mean"] for k in KEYS]
        cells += [s[f"digit_edit_judge/{k}/mean"] for k in KEYS]
        lines.append(f"| {label} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return head + "\n".join(lines) + "\n"


def write_edit_results(trainer) -> str:
    """`results.md` and `edits.png` in the run's folder: the base without CFG, the base at its best CFG (by the
    judge, of `BASE_CFG_SCALES`) and NFT without CFG."""
    published = trainer.policy.weights
    base, base_images = edit_accuracy(trainer.pipeline, {"base": lambda: published("base")},
                                      guidance_scales=(1.0, *BASE_CFG_SCALES))
    tuned, tuned_images = edit_accuracy(trainer.pipeline, {"NFT": lambda: published(trainer.published_weights)})
    best = max(BASE_CFG_SCALES, key=lambda s: base[f"base, CFG {s:g}"]["digit_edit_judge/strict/mean"])
    rows = {"base, no CFG": base["base, CFG 1"], f"base, best CFG ({best:g})": base[f"base, CFG {best:g}"],
            "NFT, no CFG": tuned["NFT, CFG 1"]}
    table = results_table(rows)
    folder = trainer.args.output_dir
    path = os.path.join(folder, "results.md")
    picture = write_edit_picture({"base": base_images["base, CFG 1"], f"base CFG {best:g}": base_images[f"base, CFG {best:g}"],
                                  "NFT": tuned_images["NFT, CFG 1"]}, os.path.join(folder, "edits"))
    with open(path, "w") as f:
        f.write(table + f"\n![source, base, base with CFG, NFT]({os.path.basename(picture)})\n")
    logger.info("Edit demo results (also in %s, picture %s):\n%s", path, picture, table)
    return path


def write_edit_picture(images: Dict[str, "object"], stem: str, shown: int = 8, seeds: int = 2) -> str:
    """A labelled grid: the first `shown` held-out sources, then each model's edit of them (first seed)."""
    import torch

    from ..conditioning import as_tensor
    from ..visualize import save_grid

    rows = edit_records("eval")[:shown]
    sources = torch.stack([as_tensor(r["image"]) for r in rows])
    tiles = [sources] + [out[[i * seeds for i in range(shown)]].cpu() for out in images.values()]
    return save_grid(torch.cat(tiles), stem, rows=len(tiles), labels=["source"] + list(images), scale=4,
                     caption=" | ".join(r["prompt"] for r in rows[:4]) + " ...")
