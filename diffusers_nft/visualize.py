"""Pictures people look at before they read: sample grids and reward curves."""

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw


def to_pil(images: torch.Tensor) -> List[Image.Image]:
    """Float images `(B, 3, H, W)` in [0, 1] to PIL images."""
    arrays = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arrays]


def image_grid(images: torch.Tensor, rows: int, labels: Optional[Sequence[str]] = None, scale: int = 1) -> Image.Image:
    """Tile images row by row into one picture, optionally with a text label above each row.

    Args:
        images: `(rows * cols, 3, H, W)` in [0, 1].
        rows: Number of rows.
        labels: One label per row.
        scale: Nearest-neighbour upscaling of each tile, for tiny images.
    """
    tiles = to_pil(images)
    cols = len(tiles) // rows
    w, h = tiles[0].width * scale, tiles[0].height * scale
    label_h = 12 if labels else 0
    grid = Image.new("RGB", (cols * w, rows * (h + label_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i, tile in enumerate(tiles[: rows * cols]):
        row, col = divmod(i, cols)
        grid.paste(tile.resize((w, h), Image.NEAREST), (col * w, row * (h + label_h) + label_h))
    for row, label in enumerate(labels or []):
        draw.text((2, row * (h + label_h)), str(label)[: max(8, cols * w // 6)], fill="black")
    return grid


def plot_reward_curve(history: List[Dict[str, float]], path: str, keys: Optional[Sequence[str]] = None,
                      title: str = "Reward per iteration") -> None:
    """Plot reward means against the iteration and save a PNG at `path`.

    Each reward gets its mean with a +-std band (the weighted total too, when there are several); extra values a
    reward reports (such as GenEval's `strict`) are dashed lines without bands.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    names = sorted(k[len("reward/"):-len("/mean")] for k in history[-1] if k.startswith("reward/") and k.endswith("/mean"))
    rewards = [n for n in names if "/" not in n and n != "total"]
    if keys is None:
        keys = [f"reward/{n}" for n in rewards + (["total"] if len(rewards) > 1 else [])]
    extras = [f"reward/{n}" for n in names if "/" in n]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key in keys:
        mean = np.array([h.get(f"{key}/mean", np.nan) for h in history])
        std = np.array([h.get(f"{key}/std", np.nan) for h in history])
        ax.plot(steps, mean, label=key.split("/", 1)[-1])
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    for key in extras:
        ax.plot(steps, [h.get(f"{key}/mean", np.nan) for h in history], ls="--", label=key.split("/", 1)[-1])
    ax.set_title(title)
    ax.set_xlabel("iteration")
    ax.set_ylabel("reward (mean +- std)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
