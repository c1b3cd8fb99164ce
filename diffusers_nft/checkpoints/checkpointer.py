"""The run's checkpoints: what a `checkpoint-<step>` folder holds, how each backend saves and restores the
optimizer (whole state under DDP and FSDP2, the engine's own partitions under DeepSpeed), and the checks before a
resume. The trainer asks it to save and to restore, and has no backend branch of its own.

`folder.py` below it makes each folder atomic (staged, then renamed) and reads only the named parts.
"""

import logging
import random
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .. import zero
from .folder import (
    STATE_FILE,
    CheckpointError,
    clear_previous_run,
    load_checkpoint,
    lock_output_dir,
    previous_run,
    resolve_checkpoint,
    save_checkpoint,
    staging_folder,
    start_checkpoint,
)
from ..config import NFTConfig, resume_differences
from ..policy import OLD, TRAINED
from ..sharding import gather_optimizer_state, shard_optimizer_state

logger = logging.getLogger(__name__)
LORA_PARTS = ("trained", OLD, "ema")  # the policy's weights by their public names (`policy.WEIGHTS`)
OPTIMIZER_PART = "optimizer.pt"  # under DeepSpeed, the engine's per-process files (see zero.py) instead
SCHEDULER_PART, RNG_PART = "lr_scheduler.pt", "random_states.pt"


def lora_part(which: str) -> str:
    """The part of `which` weights: `lora_default.safetensors` (PEFT's name of the trained adapter), `lora_old...`,
    `lora_ema...`."""
    return f"lora_{TRAINED if which == 'trained' else which}.safetensors"


class Checkpointer:
    """Saves and restores everything an exact resume needs.

    Args:
        accelerator: The run's `Accelerator`; its distributed type picks the backend.
        config: The run's `NFTConfig` (output folder, rotation, the settings a resume must match).
    """

    def __init__(self, accelerator, config: NFTConfig):
        self.accelerator, self.config = accelerator, config
        self.deepspeed = zero.uses_deepspeed(accelerator)

    def part_names(self) -> List[str]:
        """The files a checkpoint of this backend must hold (the state file aside)."""
        names = [lora_part(which) for which in LORA_PARTS] + [SCHEDULER_PART, RNG_PART]
        return names if self.deepspeed else names + [OPTIMIZER_PART]

    def read(self, value: Optional[str]) -> Tuple[Optional[str], Optional[dict]]:
        """`(path, parts)` of the checkpoint `value` names (a folder or `"latest"`), checked against this run before
        any compute: its kind of run, its parts, and the settings an exact resume needs. `(None, None)` for none."""
        path = resolve_checkpoint(value, self.config.output_dir) if value else None
        if not path:
            return None, None
        zero.check_resumable(path, self.accelerator)
        parts = load_checkpoint(path, self.part_names())
        check_resume_settings(path, parts[STATE_FILE].get("config", {}), self.config)
        return path, parts

    def claim_output_dir(self, resumed: Optional[str]) -> None:
        """Before anything is written: a run that resumes (`resumed`, the checkpoint read) continues its folder; a
        fresh one starts in a folder without another run's files. Those are removed with `overwrite_output_dir`, or
        with `resume_from_checkpoint="latest"` when the earlier run never saved a checkpoint nor a LoRA (it was
        cut short); otherwise the run is refused before any compute.

        Raises:
            ValueError: If `output_dir` holds another run, with the three ways on.
        """
        config, accelerator = self.config, self.accelerator
        if accelerator.is_main_process:
            lock_output_dir(config.output_dir)  # for the length of the process: one run per folder at a time
        found = [] if resumed else previous_run(config.output_dir)
        latest = config.resume_from_checkpoint == "latest"
        if latest and not resumed and accelerator.is_main_process:
            logger.info("resume_from_checkpoint='latest': %s holds no checkpoint yet, so this run starts from step 0.",
                        config.output_dir)
        if not found:
            return
        cut_short = latest and not any(name.endswith(".safetensors") for name in found)
        if not (config.overwrite_output_dir or cut_short):
            shown = ", ".join(found[:6]) + (", ..." if len(found) > 6 else "")
            raise ValueError(f"output_dir {config.output_dir!r} already holds a run ({shown}). Continue it with "
                             "--resume_from_checkpoint latest, replace it with --overwrite_output_dir, or choose "
                             "another --output_dir.")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            removed = clear_previous_run(config.output_dir)
            logger.info("Removed the earlier run's %s from %s (%s).", ", ".join(removed), config.output_dir,
                        "--overwrite_output_dir" if config.overwrite_output_dir else "it never saved a checkpoint")
        accelerator.wait_for_everyone()

    def save(self, step: int, *, policy, model, optimizer, lr_scheduler, state: dict,
             extra: Callable[[str, Dict[str, dict]], None] = lambda folder, lora: None) -> Optional[str]:
        """Write `checkpoint-<step>` atomically; every process calls it (gathering FSDP2 tensors and writing ZeRO
        partitions take all of them). `extra(folder, lora)` adds files beside the parts, on the main process;
        `lora` maps each of `LORA_PARTS` to the tensors just gathered.

        Returns:
            The checkpoint folder (None on other processes).
        """
        accelerator, output_dir = self.accelerator, self.config.output_dir
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            start_checkpoint(output_dir, step)
        accelerator.wait_for_everyone()
        lora = {lora_part(which): policy.state_dict(which) for which in LORA_PARTS}
        if self.deepspeed:
            zero.save(model, staging_folder(output_dir, step))
            optimizer_part = {}
        else:
            optimizer_part = {OPTIMIZER_PART: gather_optimizer_state(optimizer)}
        accelerator.wait_for_everyone()
        path = None
        if accelerator.is_main_process:
            extra(staging_folder(output_dir, step), {which: lora[lora_part(which)] for which in LORA_PARTS})
            parts = {**lora, **optimizer_part, SCHEDULER_PART: lr_scheduler.state_dict(), RNG_PART: rng_states(),
                     STATE_FILE: state}
            path = save_checkpoint(output_dir, step, parts, self.config.save_total_limit, staged=True)
        accelerator.wait_for_everyone()
        return path

    def restore(self, path: str, parts: dict, *, policy, model, optimizer, lr_scheduler) -> dict:
        """Load the LoRA adapters, optimizer, lr scheduler and RNG states of `parts`; returns the trainer state."""
        try:
            for which in LORA_PARTS:
                policy.load_state_dict(which, parts[lora_part(which)])
            if self.deepspeed:
                zero.load(model, path)  # after the LoRA: it also restores the master weights behind them
            else:
                optimizer.load_state_dict(shard_optimizer_state(parts[OPTIMIZER_PART], optimizer))
            lr_scheduler.load_state_dict(parts[SCHEDULER_PART])
        except (KeyError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"Cannot resume from {path!r}: {error}") from error
        set_rng_states(parts.get(RNG_PART))
        return parts[STATE_FILE]


def check_resume_settings(path: str, saved: Dict[str, object], config: NFTConfig) -> None:
    """Refuse settings that break an exact resume; warn about the other changes."""
    must_match, others = resume_differences(saved, config.to_dict())
    if must_match:
        raise CheckpointError(f"Cannot resume exactly from {path!r}: these settings differ from the checkpoint's "
                              f"({'; '.join(must_match)}). Resume with the checkpoint's values.")
    if others:
        warnings.warn(f"Resuming from {path!r} with settings that differ from the checkpoint's: {'; '.join(others)}.")


def rng_states() -> dict:
    """The RNG states as tensors, numbers and strings, which `torch.load(weights_only=True)` reads back."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Optional[dict]) -> None:
    if not states:
        return
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
