"""The pictures: labelled grids and reward curves whose bands stay within the values the reward took."""

import numpy as np
import torch
from PIL import Image

from diffusers_nft.visualize import image_grid, plot_reward_curve


def test_grid_labels_rows_columns_and_settings_in_a_readable_font():
    images = torch.zeros(4, 3, 32, 32)  # black tiles: any dark pixel in a label strip is text
    plain = image_grid(images, rows=2, scale=2)
    labelled = image_grid(images, rows=2, labels=["base: a cat", "NFT: a cat"], scale=2,
                          column_labels=["seed 0", "seed 1"], caption="40 Euler steps, no CFG", font_size=14)
    assert plain.size == (128, 128)
    line = 14 + 6
    assert labelled.size == (128, 128 + 2 * line + line + line)  # header, two row labels, caption
    pixels = np.asarray(labelled.convert("L"))
    header, caption = pixels[:line], pixels[-line:]
    assert (header < 128).sum() > 50 and (caption < 200).sum() > 50  # text drawn, several pixels tall
    ink_rows = np.where((header < 128).any(axis=1))[0]
    assert ink_rows.max() - ink_rows.min() >= 8  # a 14 px font, not the 6 px bitmap default


def test_reward_band_is_clipped_to_the_rewards_range_and_logged_values_get_their_own_axis(tmp_path, monkeypatch):
    import matplotlib.axes

    bands, axes_used = [], []
    fill = matplotlib.axes.Axes.fill_between
    plot = matplotlib.axes.Axes.plot

    def record_fill(self, x, low, high, **kwargs):
        bands.append((np.asarray(low), np.asarray(high)))
        return fill(self, x, low, high, **kwargs)

    def record_plot(self, *args, **kwargs):
        axes_used.append((kwargs.get("label"), id(self)))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", record_fill)
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", record_plot)
    history = [{"step": i + 1, "reward/digit_eval/mean": m, "reward/digit_eval/std": 0.45, "reward/digit_eval/min": 0.0,
                "reward/digit_eval/max": 1.0, "reward/digit_eval/strict/mean": 30 * m}
               for i, m in enumerate([0.5, 0.8, 0.95])]
    plot_reward_curve(history, str(tmp_path / "curve.png"))
    (low, high), = bands  # one reward: one band, no duplicate "total"
    np.testing.assert_allclose(low, [0.05, 0.35, 0.5])
    np.testing.assert_allclose(high, [0.95, 1.0, 1.0])
    labels = dict(axes_used)
    assert set(labels) == {"digit_eval (trained, mean +- std)", "digit_eval/strict (logged only)"}
    assert labels["digit_eval (trained, mean +- std)"] != labels["digit_eval/strict (logged only)"]  # a second axis
    assert Image.open(tmp_path / "curve.png").size[0] >= 600


def test_each_reward_gets_a_panel_on_its_own_scale(tmp_path, monkeypatch):
    # -3.9 beside 0.5 on one axis flattens both: each reward (and the weighted total) is a panel of its own.
    import matplotlib.pyplot as plt

    figures = []
    savefig = plt.Figure.savefig
    monkeypatch.setattr(plt.Figure, "savefig", lambda self, *a, **k: figures.append(self) or savefig(self, *a, **k))
    stats = {"mean": 0.0, "std": 0.1, "min": -0.2, "max": 0.2}
    history = [{"step": i + 1, **{f"reward/{name}/{stat}": (value if stat != "std" else 0) + offset + 0.01 * i
                                  for name, value in (("aesthetic", -3.9), ("jpeg", 0.5), ("total", -3.4))
                                  for stat, offset in stats.items()}} for i in range(4)]
    plot_reward_curve(history, str(tmp_path / "curve.png"))
    (figure,) = figures
    panels = [ax for ax in figure.axes if ax.get_ylabel() in ("aesthetic", "jpeg", "total")]
    assert [ax.get_ylabel() for ax in panels] == ["aesthetic", "jpeg", "total"]
    for ax, centre in zip(panels, (-3.9, 0.5, -3.4)):
        low, high = ax.get_ylim()
        assert low < centre < high and high - low < 1  # zoomed on its own values
    assert figure.get_suptitle() == "Reward per iteration" and panels[-1].get_xlabel() == "iteration"


def test_metric_names_are_built_and_read_by_one_module(tiny_pipeline, tmp_path):
    """The trainer's rows hold exactly the keys metrics.py builds, and the card and plot read them back."""
    from diffusers_nft import NFTTrainer
    from diffusers_nft.metrics import REWARD_STATS, TOTAL, reward_key, reward_names, time_key

    from conftest import PROMPTS, tiny_config

    trainer = NFTTrainer(tiny_pipeline, ["jpeg_compressibility", "jpeg_incompressibility"],
                         tiny_config(tmp_path, max_steps=1, reward_weights=[1.0, 0.5]), PROMPTS)
    row = trainer.train()[0]
    assert reward_names(row) == ["jpeg_compressibility", "jpeg_incompressibility", TOTAL]
    for name in reward_names(row):
        assert all(reward_key(name, stat) in row for stat in REWARD_STATS)
        assert row[reward_key(name, "min")] <= row[reward_key(name)] <= row[reward_key(name, "max")]
    assert all(time_key(part) in row for part in ("sampling", "reward", "training", "iteration"))


def test_the_closing_block_lists_checkpoints_in_numeric_order_and_wandb_gets_captions(tmp_path, monkeypatch):
    import sys
    import types

    import torch
    from accelerate import Accelerator

    from diffusers_nft.run_log import RunLog

    for step in (2, 10, 1):
        (tmp_path / f"checkpoint-{step}").mkdir()
    log = RunLog(Accelerator(cpu=True), str(tmp_path), trackers=None)
    summary = log.summary(10, [{"reward/total/mean": 0.5}], runtime=125.0, images=320)
    assert "3 checkpoints: checkpoint-1, checkpoint-2, checkpoint-10" in summary
    assert summary.startswith("Done after 10 iterations: 2 min 05 s, 2.56 images/s, final reward 0.5.")

    logged = []
    fake_wandb = types.SimpleNamespace(Image=lambda image, caption: (image.size, caption))
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)
    tracker = types.SimpleNamespace(name="wandb", log=lambda values, step: logged.append((values, step)))
    monkeypatch.setattr(log.accelerator, "trackers", [tracker])
    log._track_grid(torch.rand(4, 3, 8, 8), ["a red cat", "a blue dog"], step=3, per_prompt=2)
    assert logged == [({"validation": [((8, 8), "a red cat (#0)"), ((8, 8), "a red cat (#1)"),
                                       ((8, 8), "a blue dog (#0)"), ((8, 8), "a blue dog (#1)")]}, 3)]


def test_grid_labels_of_long_and_multiline_prompts_are_cut_in_a_few_measurements(tmp_path, monkeypatch):
    import torch
    from PIL import Image, ImageDraw, ImageFont

    from diffusers_nft.visualize import _fit

    draw, font = ImageDraw.Draw(Image.new("RGB", (10, 10))), ImageFont.load_default()
    measured = []
    textlength = ImageDraw.ImageDraw.textlength
    monkeypatch.setattr(ImageDraw.ImageDraw, "textlength",
                        lambda self, text, *a, **k: measured.append(len(text)) or textlength(self, text, *a, **k))
    long, multiline = "a red cat " * 2000, "a red cat\non a mat\n\nat night"
    cut = _fit(draw, long, font, 200)
    assert cut.endswith("...") and textlength(draw, cut, font=font) <= 200
    assert textlength(draw, long[: len(cut) - 3 + 1] + "...", font=font) > 200  # the longest cut that fits
    assert len(measured) <= 12  # a binary search (the old cut measured 4,000 characters one at a time: 61 s)
    assert _fit(draw, multiline, font, 2000) == "a red cat on a mat at night"  # newlines crashed the grid
    assert image_grid(torch.rand(2, 3, 32, 32), rows=2, labels=[long, multiline]).size[1] >= 64
