"""Pictures people look at before they read: sample grids and reward curves."""

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .metrics import TOTAL, eval_key, reward_key, reward_names


def to_pil(images: torch.Tensor) -> List[Image.Image]:
    """Float images `(B, 3, H, W)` in [0, 1] to PIL images."""
    arrays = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arrays]


def image_grid(
    images: torch.Tensor,
    rows: int,
    labels: Optional[Sequence[str]] = None,
    scale: int = 1,
    column_labels: Optional[Sequence[str]] = None,
    caption: Optional[str] = None,
    font_size: int = 14,
) -> Image.Image:
    """Tile images row by row into one picture, with optional labels above each row and column and a caption.

    Args:
        images: `(rows * cols, 3, H, W)` in [0, 1].
        rows: Number of rows.
        labels: One label per row, written above it.
        scale: Nearest-neighbour upscaling of each tile, for tiny images.
        column_labels: One label per column (such as the seed), written above the first row.
        caption: A line under the grid (such as the sampling settings).
        font_size: Text height in pixels.
    """
    from PIL import ImageFont

    font = ImageFont.load_default(size=font_size)
    tiles = to_pil(images)
    cols = len(tiles) // rows
    w, h = tiles[0].width * scale, tiles[0].height * scale
    line = font_size + 6
    label_h, top, bottom = (line if labels else 0), (line if column_labels else 0), (line if caption else 0)
    grid = Image.new("RGB", (max(cols * w, 8 * font_size), top + rows * (h + label_h) + bottom), "white")
    draw = ImageDraw.Draw(grid)
    for i, tile in enumerate(tiles[: rows * cols]):
        row, col = divmod(i, cols)
        grid.paste(tile.resize((w, h), Image.NEAREST), (col * w, top + row * (h + label_h) + label_h))
    for col, label in enumerate(column_labels or []):
        draw.text((col * w + 2, 2), str(label), fill="black", font=font)
    for row, label in enumerate(labels or []):
        draw.text((2, top + row * (h + label_h) + 2), _fit(draw, str(label), font, grid.width - 4), fill="black", font=font)
    if caption:
        draw.text((2, grid.height - line + 2), _fit(draw, caption, font, grid.width - 4), fill="dimgray", font=font)
    return grid


def save_grid(images: torch.Tensor, stem: str, rows: int, fps: int = 8, **grid_kwargs) -> str:
    """Write `image_grid` of images `(N, 3, H, W)` to `stem.png`, or of videos `(N, F, 3, H, W)` to an animated
    `stem.webp` (`stem.gif` where Pillow lacks animated WebP), one grid per frame. Returns the path written."""
    if images.dim() == 4:
        path = stem + ".png"
        image_grid(images, rows=rows, **grid_kwargs).save(path)
        return path
    from PIL import features

    frames = [image_grid(images[:, f], rows=rows, **grid_kwargs) for f in range(images.shape[1])]
    path = stem + (".webp" if features.check("webp") else ".gif")
    options = {"lossless": True} if path.endswith(".webp") else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0, **options)
    return path


def with_sources(images: torch.Tensor, sources: Sequence[Image.Image], per_prompt: int) -> torch.Tensor:
    """`images` (`per_prompt` per prompt, `(N, 3, H, W)` or videos `(N, F, 3, H, W)`) with each prompt's source image
    before its own, resized to them (held still through a video): the grid's first column shows what was edited."""
    height, width = images.shape[-2:]
    out = []
    for i, source in enumerate(sources):
        data = np.asarray(source.convert("RGB").resize((width, height)), dtype=np.float32) / 255
        tile = torch.from_numpy(data).permute(2, 0, 1)
        tile = tile.expand(images.shape[1], -1, -1, -1) if images.dim() == 5 else tile
        out += [tile[None].to(images.dtype), images[i * per_prompt : (i + 1) * per_prompt].cpu()]
    return torch.cat(out)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text` on one line (newlines and runs of spaces as one space), cut with an ellipsis to fit in `width`
    pixels: a binary search over its length, so a 20,000-character prompt costs a few measurements."""
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= width:
        return text
    low, high = 0, min(len(text), width)  # a glyph is at least a pixel wide: no more characters than pixels fit
    while low < high:
        mid = (low + high + 1) // 2
        if draw.textlength(text[:mid] + "...", font=font) <= width:
            low = mid
        else:
            high = mid - 1
    return text[:low] + "..."


def plot_reward_curve(history: List[Dict[str, float]], path: str, keys: Optional[Sequence[str]] = None,
                      title: str = "Reward per iteration") -> None:
    """Plot reward means against the iteration and save a PNG at `path`: one panel per reward, each on its own
    scale (a -3.9 beside a 0.5 flattens neither).

    Each panel has the reward's mean with a +-std band clipped to the values it took, its held-out evaluation as
    dots where one ran, and the extra values the reward reports (such as GenEval's `strict`) as dashed lines on an
    axis of their own. With several rewards, the weighted total gets a panel too.

    Args:
        history: Metrics rows, one per iteration (see `diffusers_nft.metrics`).
        path: Where the PNG goes (written beside, then renamed).
        keys: Reward names to draw, a panel each; default: every reward, and the total when there are several.
        title: The figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(reward_names(history[-1]))
    rewards = [n for n in names if "/" not in n and n != TOTAL]
    if keys is None:
        keys = rewards + ([TOTAL] if len(rewards) > 1 else [])
    extras = [n for n in names if "/" in n]
    fig, axes = plt.subplots(len(keys), 1, figsize=(6, 1.2 + 2.3 * len(keys)), dpi=100, sharex=True, squeeze=False)
    orphans = [e for e in extras if e.split("/")[0] not in keys]  # their reward has no panel: the last one shows them
    for i, (key, ax) in enumerate(zip(keys, axes[:, 0])):
        own = [e for e in extras if e.split("/")[0] == key] + (orphans if i == len(keys) - 1 else [])
        _plot_panel(ax, history, key, own, color=i)
    axes[-1, 0].set_xlabel("iteration")
    axes[-1, 0].xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def _plot_panel(ax, history: List[Dict[str, float]], key: str, extras: Sequence[str], color: int) -> None:
    """One reward's panel: mean, its +-std band, the held-out evaluation, and its logged-only extras."""
    steps = [h["step"] for h in history]
    mean, std, low, high = (np.array([h.get(reward_key(key, stat), fill) for h in history]) for stat, fill in
                            (("mean", np.nan), ("std", np.nan), ("min", -np.inf), ("max", np.inf)))
    # A +-std band never leaves the values the reward took (a 0/1 reward's band stays within [0, 1]).
    ax.plot(steps, mean, color=f"C{color}", label=f"{key} (trained, mean +- std)")
    ax.fill_between(steps, np.maximum(mean - std, low), np.minimum(mean + std, high), color=f"C{color}", alpha=0.2)
    points = [(h["step"], h[eval_key(key)]) for h in history if eval_key(key) in h]
    if points:  # the held-out evaluation (eval_dataset), where it ran
        ax.plot(*zip(*points), marker="o", ls=":", color=f"C{color}", label=f"{key} (eval prompts)")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if extras:  # logged, not trained on: their own axis, so their scale does not flatten the reward's
        more, more_names = _plot_extras(ax.twinx(), history, extras, first_color=color + 1)
        handles, names = handles + more, names + more_names
    ax.legend(handles, names, loc="best", fontsize=7)


def _plot_extras(ax, history: List[Dict[str, float]], extras: Sequence[str], first_color: int):
    """Dashed lines of the logged-only values on `ax`; returns its legend handles and labels."""
    steps = [h["step"] for h in history]
    for i, key in enumerate(extras):
        ax.plot(steps, [h.get(reward_key(key), np.nan) for h in history], ls="--", color=f"C{first_color + i}",
                label=f"{key} (logged only)")
    ax.set_ylabel("logged only (mean)")
    return ax.get_legend_handles_labels()
