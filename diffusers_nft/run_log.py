"""What a run tells people while it trains: the start-up block, `metrics.jsonl`, the trackers (tensorboard, wandb,
... through accelerate), the reward curve, the validation grids and the closing summary. It takes plain values
(metrics rows, images, prompts), never the trainer; only the main process writes."""

import ast
import json
import logging
import math
import os
import re
import time
from typing import Dict, List, Optional, Sequence

import torch
from accelerate.logging import get_logger

from .generation import stills
from .metrics import TOTAL, reward_key
from .visualize import plot_reward_curve, save_grid, to_pil, with_sources

logger = get_logger(__name__)

METRICS_FILE = "metrics.jsonl"
REWARD_CURVE = "reward_curve.png"
PLOT_EVERY_S = 30.0  # a plot costs ~0.1 s: redrawn at most this often, and always at the last iteration


class RepeatedTruncations(logging.Filter):
    """Lets diffusers' "The following part of your input was truncated ..." through once per text: a pipeline
    warns at every call, so an overlong prompt would fill the log once per sampling batch."""

    MARK = "was truncated because"

    def __init__(self):
        super().__init__()
        self.seen = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.MARK not in message:
            return True
        head, _, tail = message.partition(": ")
        try:  # the truncated parts of the batch, repeated for each image of a prompt and each text encoder
            parts = {str(part) for part in ast.literal_eval(tail)}
        except (ValueError, SyntaxError, TypeError):
            parts = {tail}
        new = parts - self.seen
        if not new:
            return False
        self.seen |= new
        record.msg, record.args = f"{head}: {sorted(new)} (logged once; later truncations of the same text are not)", None
        return True


def quiet_repeated_truncations() -> None:
    """Put one `RepeatedTruncations` on the handlers of diffusers' logger (it does not propagate), once."""
    for handler in logging.getLogger("diffusers").handlers:
        if not any(isinstance(f, RepeatedTruncations) for f in handler.filters):
            handler.addFilter(RepeatedTruncations())


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
        quiet_repeated_truncations()  # an overlong prompt is said once, not at every sampling batch
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
        """Drop the rows a run logged after the checkpoint it resumes from, at `step`: they are logged again. A torn
        last row (a write cut short by a crash or a full disk) is dropped too.

        Raises:
            ValueError: For a row before the last that is not JSON, naming the file and line.
        """
        path = os.path.join(self.output_dir, METRICS_FILE)
        if not self.is_main or not os.path.isfile(path):
            return
        with open(path) as f:
            lines = [line for line in f if line.strip()]
        rows = []
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                if number == len(lines):
                    logger.warning("%s, line %d: a torn last row (%s), dropped.", path, number, error)
                    break
                raise ValueError(f"{path}, line {number}: not a JSON row ({error}); fix or remove the line.") from None
            if row.get("step", 0) <= step:
                rows.append(line if line.endswith("\n") else line + "\n")
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
        self._track_grid(images, prompts, step, per_prompt + bool(sources))
        return path

    def _track_grid(self, images: torch.Tensor, prompts: Sequence[str], step: int, per_prompt: int) -> None:
        """Each prompt's images to the trackers under its prompt: tensorboard tags `validation/<i> <prompt>`, wandb
        captions."""
        rows = stills(images)
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                for i, prompt in enumerate(prompts):
                    tracker.writer.add_images(f"validation/{i} {prompt}", rows[i * per_prompt:(i + 1) * per_prompt]
                                              .numpy(), step, dataformats="NCHW")
            elif tracker.name == "wandb":
                import wandb

                tracker.log({"validation": [wandb.Image(image, caption=f"{prompts[k // per_prompt]} (#{k % per_prompt})")
                                            for k, image in enumerate(to_pil(rows))]}, step=step)

    def summary(self, iterations: int, history: List[Dict[str, float]], runtime: float, images: int) -> str:
        """The closing block: how long it took, the final reward, what `output_dir` holds, how to see the curves.

        Args:
            iterations: Iterations done in all; `history` has their metrics.
            runtime: Seconds this `train()` took (its evaluations, checkpoints and grids included).
            images: Images this `train()` sampled.
        """
        out = self.output_dir
        names = sorted(os.listdir(out)) if os.path.isdir(out) else []
        checkpoints = sorted((n for n in names if re.fullmatch(r"checkpoint-\d+", n)), key=lambda n: int(n.split("-")[1]))
        lines = [f"Done after {count(iterations, 'iteration')}: {runtime_words(runtime)}, "
                 f"{images / max(runtime, 1e-9):.3g} images/s"
                 + (f", final reward {history[-1][reward_key(TOTAL)]:.4g}" if history else "")
                 + (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
                    if torch.cuda.is_available() else "") + ".",
                 f"{os.path.abspath(out)} holds:"]
        lines += [f"  {n}" for n in names if not n.startswith(("checkpoint-", "."))]
        if checkpoints:
            lines.append(f"  {len(checkpoints)} checkpoints: {', '.join(checkpoints)}")
        if self.trackers == "all" or "tensorboard" in (self.trackers or []):
            lines.append(f"Curves: tensorboard --logdir {self.logging_dir}")
        return "\n".join(lines)


def runtime_words(seconds: float) -> str:
    """`"2 h 03 min"`, `"4 min 05 s"`, `"12.3 s"`."""
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes >= 60:
        return f"{minutes // 60} h {minutes % 60:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{seconds:.1f} s"


def precision_words(mixed_precision: str, frozen_dtype: torch.dtype) -> str:
    """The start-up block's precision line."""
    return (f"mixed precision {mixed_precision}: frozen weights in {str(frozen_dtype).replace('torch.', '')}, "
            "the LoRA in float32")


def device_words(device: torch.device) -> str:
    """The start-up block's device line: the device, and the GPU's name and memory where there is one."""
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    return f"{device} ({torch.get_num_threads()} threads)" if device.type == "cpu" else str(device)


def startup_block(title: str, rows: Dict[str, str]) -> str:
    """`Training <title>:` and one aligned line per row."""
    return f"Training {title}:\n" + "\n".join(f"  {key:<11} {value}" for key, value in rows.items())


def count(n: int, noun: str) -> str:
    """`"1 process"`, `"2 processes"`."""
    return f"{n} {noun}{'' if n == 1 else 'es' if noun.endswith('s') else 's'}"


def tracker_config(config: dict) -> dict:
    """Config values that every tracker accepts (no None, no lists)."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()}
