"""What a run tells people while it trains: the start-up block, `metrics.jsonl`, the trackers (tensorboard, wandb,
... through accelerate), the reward curve, the validation grids and the closing summary. It takes plain values
(metrics rows, images, prompts), never the trainer; only the main process writes."""

import json
import math
import os
import time
from typing import Dict, List, Optional, Sequence

import torch
from accelerate.logging import get_logger

from .generation import stills
from .visualize import plot_reward_curve, save_grid, with_sources

logger = get_logger(__name__)

METRICS_FILE = "metrics.jsonl"
REWARD_CURVE = "reward_curve.png"
PLOT_EVERY_S = 30.0  # a plot costs ~0.1 s: redrawn at most this often, and always at the last iteration


class RunLog:
    """The run's logs.

    Args:
        accelerator: The run's `Accelerator` (its trackers, and which process writes).
        output_dir: The run's folder (metrics, curve, `samples/`).
        trackers: `NFTConfig.trackers()`: tracker names, "all", or None.
        logging_dir: Where tensorboard writes (for the closing summary's command).
    """

    def __init__(self, accelerator, output_dir: str, trackers=None, logging_dir: Optional[str] = None):
        self.accelerator, self.output_dir = accelerator, output_dir
        self.trackers, self.logging_dir = trackers, logging_dir
        self._last_plot = -math.inf

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def start(self, project: str, config: dict, description: str) -> None:
        """Open the trackers with the run's `config` and log the start-up block."""
        if self.is_main:
            self.accelerator.init_trackers(project, config=tracker_config(config))
        logger.info(description)

    def resume(self, step: int) -> None:
        """Drop the rows a run logged after the checkpoint it resumes from, at `step`: they are logged again."""
        path = os.path.join(self.output_dir, METRICS_FILE)
        if not self.is_main or not os.path.isfile(path):
            return
        with open(path) as f:
            rows = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
        with open(path + ".tmp", "w") as f:
            f.writelines(rows)
        os.replace(path + ".tmp", path)

    def log(self, metrics: Dict[str, float], history: List[Dict[str, float]], last: bool = False) -> None:
        """One iteration's metrics to the trackers and `metrics.jsonl`; the reward curve when it is due."""
        step = metrics["step"]
        self.accelerator.log({k: v for k, v in metrics.items() if k != "step"}, step=step)
        if not self.is_main:
            return
        with open(os.path.join(self.output_dir, METRICS_FILE), "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if time.monotonic() - self._last_plot >= PLOT_EVERY_S or last:
            self.plot(history)

    def plot(self, history: List[Dict[str, float]], folder: Optional[str] = None) -> Optional[str]:
        """The reward curve of `history` as `reward_curve.png` in `folder` (the run's by default)."""
        if not self.is_main or not history:
            return None
        path = os.path.join(folder or self.output_dir, REWARD_CURVE)
        plot_reward_curve(history, path)
        self._last_plot = time.monotonic()
        return path

    def grid(self, images: torch.Tensor, prompts: Sequence[str], step: int, scale: int = 1,
             caption: str = "", sources: Optional[Sequence] = None) -> Optional[str]:
        """A labelled grid (a row per prompt) as `samples/step_<step>.png` (animated WebP for videos), and in the
        trackers as `validation`; with `sources` (PIL images, image-conditioned runs) each row starts with its own."""
        if not self.is_main:
            return None
        folder = os.path.join(self.output_dir, "samples")
        os.makedirs(folder, exist_ok=True)
        per_prompt = len(images) // max(1, len(prompts))
        labels = [f"seed {k}" for k in range(per_prompt)]
        if sources:
            images, labels = with_sources(images, sources, per_prompt), ["source"] + labels
        path = save_grid(images, os.path.join(folder, f"step_{step:06d}"), rows=len(prompts), labels=list(prompts),
                         scale=scale, column_labels=labels, caption=caption)
        logger.info("Saved sample grid %s", path)
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.add_images("validation", stills(images).numpy(), step, dataformats="NCHW")
            elif tracker.name == "wandb":
                import wandb

                tracker.log({"validation": [wandb.Image(path)]}, step=step)
        return path

    def summary(self, iterations: int) -> str:
        """The closing block: what `output_dir` holds, and how to look at the curves."""
        out = self.output_dir
        names = sorted(os.listdir(out)) if os.path.isdir(out) else []
        checkpoints = [n for n in names if n.startswith("checkpoint-")]
        lines = [f"Done after {iterations} iterations. {os.path.abspath(out)} holds:"]
        lines += [f"  {n}" for n in names if not n.startswith(("checkpoint-", "."))]
        if checkpoints:
            lines.append(f"  {len(checkpoints)} checkpoints: {', '.join(checkpoints)}")
        if self.trackers == "all" or "tensorboard" in (self.trackers or []):
            lines.append(f"Curves: tensorboard --logdir {self.logging_dir}")
        return "\n".join(lines)


def startup_block(title: str, rows: Dict[str, str]) -> str:
    """`Training <title>:` and one aligned line per row."""
    return f"Training {title}:\n" + "\n".join(f"  {key:<11} {value}" for key, value in rows.items())


def count(n: int, noun: str) -> str:
    """`"1 process"`, `"2 processes"`."""
    return f"{n} {noun}{'' if n == 1 else 'es' if noun.endswith('s') else 's'}"


def tracker_config(config: dict) -> dict:
    """Config values that every tracker accepts (no None, no lists)."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()}
