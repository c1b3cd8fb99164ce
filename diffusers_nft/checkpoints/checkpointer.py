"""The run's checkpoints: what a `checkpoint-<step>` folder holds, how each backend saves and restores the
optimizer (whole state under DDP and FSDP2, the engine's own partitions under DeepSpeed), and the checks before a
resume. The trainer asks it to save and to restore, and has no backend branch of its own.

`folder.py` below it makes each folder atomic (staged, then renamed) and reads only the named parts.
"""

import logging
import os
import random
import shutil
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .. import zero
from .folder import (
    STATE_FILE,
    CheckpointError,
    clear_previous_run,
    list_checkpoints,
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

    def read(self, value: Optional[str], trains: Optional[Dict[str, object]] = None
             ) -> Tuple[Optional[str], Optional[dict]]:
        """`(path, parts)` of the checkpoint `value` names (a folder or `"latest"`), checked against this run before
        any compute: its kind of run, its parts, every field of its state, the settings an exact resume needs, and
        `trains` (what the run trains: `trained_function`), whose changes are refused. `(None, None)` for none."""
        path = resolve_checkpoint(value, self.config.output_dir) if value else None
        if not path:
            return None, None
        zero.check_resumable(path, self.accelerator)
        parts = load_checkpoint(path, self.part_names())
        check_trainer_state(path, parts[STATE_FILE])
        check_resume_settings(path, parts[STATE_FILE]["config"], self.config)
        check_trained_function(path, parts[STATE_FILE].get("trains", {}), trains or {})
        return path, parts

    def claim_output_dir(self, resumed: Optional[str]) -> Optional[str]:
        """Before anything is written: a run that resumes (`resumed`, the checkpoint read) continues its folder; a
        fresh one starts in a folder without another run's files. Those are removed with `overwrite_output_dir`, or
        with `resume_from_checkpoint="latest"` when the earlier run never saved a checkpoint nor a LoRA (it was
        cut short). Otherwise the folder is left as it is and the refusal returned: training refuses to start
        unless `train(resume_from_checkpoint=...)` resumes it (TRL's way); the scripts refuse before loading.

        Returns:
            None, or why a fresh run may not start here (`fresh_run_refusal`).
        """
        config, accelerator = self.config, self.accelerator
        if accelerator.is_main_process:
            lock_output_dir(config.output_dir)  # for the length of the process: one run per folder at a time
            if resumed:
                set_aside_later_checkpoints(config.output_dir, resumed)
        if config.resume_from_checkpoint == "latest" and not resumed and accelerator.is_main_process:
            logger.info("resume_from_checkpoint='latest': %s holds no checkpoint yet, so this run starts from step 0.",
                        config.output_dir)
        found = [] if resumed else previous_run(config.output_dir)
        if not found:
            return None
        refusal = fresh_run_refusal(config, found)
        if refusal:
            return refusal
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


def fresh_run_refusal(config: NFTConfig, found: Optional[List[str]] = None) -> Optional[str]:
    """Why a run that resumes nothing may not start in `config.output_dir` (None when it may): the folder holds
    another run (`found`, or what `previous_run` lists), and neither `overwrite_output_dir` nor a `"latest"` resume
    of a run cut short before its first checkpoint or LoRA says to replace it."""
    found = previous_run(config.output_dir) if found is None else found
    cut_short = config.resume_from_checkpoint == "latest" and not any(n.endswith(".safetensors") for n in found)
    if not found or config.overwrite_output_dir or cut_short:
        return None
    shown = ", ".join(found[:6]) + (", ..." if len(found) > 6 else "")
    return (f"output_dir {config.output_dir!r} already holds a run ({shown}). Continue it with "
            "--resume_from_checkpoint latest, replace it with --overwrite_output_dir, or choose another --output_dir.")


def set_aside_later_checkpoints(output_dir: str, resumed: str) -> List[str]:
    """A run resumed from `checkpoint-N` of `output_dir` owns the folder's future: its checkpoints after N belong to
    the branch it leaves, and are renamed `checkpoint-K.abandoned` (kept, but no longer counted by rotation or
    `latest`). Returns their new paths."""
    if os.path.realpath(os.path.dirname(os.path.normpath(resumed))) != os.path.realpath(output_dir):
        return []
    step = int(os.path.basename(os.path.normpath(resumed)).split("-")[1])
    moved = []
    for later in list_checkpoints(output_dir):
        if int(os.path.basename(later).split("-")[1]) > step:
            target = later + ".abandoned"
            shutil.rmtree(target, ignore_errors=True)
            os.replace(later, target)
            moved.append(target)
    if moved:
        logger.warning("Resuming from %s: the later checkpoints of the branch it leaves were set aside as %s.",
                       resumed, ", ".join(os.path.basename(m) for m in moved))
    return moved


def check_trainer_state(path: str, state: object) -> None:
    """Every field of a checkpoint's `trainer_state.json` that a resume uses, checked before any compute.

    Raises:
        CheckpointError: Naming the file and the field.
    """
    def whole(value, low=0) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= 10**9

    where = os.path.join(path, STATE_FILE)
    problem = None
    if not isinstance(state, dict):
        problem = "it is not a JSON object"
    elif not all(whole(state.get(key)) for key in ("global_step", "optimizer_step")):
        problem = f"global_step {state.get('global_step')!r} and optimizer_step {state.get('optimizer_step')!r} " \
                  "must be whole numbers of steps from 0 to 1e9"
    elif not isinstance(state.get("config"), dict):
        problem = "it has no 'config' (the settings it was written with), so the resume cannot be checked"
    elif not (isinstance(state.get("history"), list) and isinstance(state.get("reward_normalizer"), dict)):
        problem = "'history' must be a list and 'reward_normalizer' an object"
    else:
        sampler = state.get("prompt_sampler")
        if not (isinstance(sampler, dict) and all(whole(sampler.get(k)) for k in ("epoch", "position"))
                and whole(sampler.get("num_prompts"), 1) and sampler["position"] <= sampler["num_prompts"]):
            problem = f"prompt_sampler {sampler!r} needs whole epoch, position <= num_prompts and num_prompts >= 1"
    if problem:
        raise CheckpointError(f"{where}: {problem}. The checkpoint was edited or damaged; resume from another one.")


def trained_function(lora_config, reward_names, reward_weights, prompts) -> Dict[str, object]:
    """What a run trains, as a checkpoint records it: the LoRA's alpha and targets, the rewards and their weights
    (changing any of these changes the trained function; a changed rank fails on the tensors' shapes, naming
    `--rank`), and a fingerprint of the prompt set."""
    import hashlib

    targets = lora_config.target_modules
    return {"lora_alpha": lora_config.lora_alpha,
            "lora_targets": sorted(targets) if not isinstance(targets, str) else targets,
            "rewards": list(reward_names), "reward_weights": [float(w) for w in reward_weights],
            "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest()}


def check_trained_function(path: str, saved: Dict[str, object], current: Dict[str, object]) -> None:
    """Refuse a resume that would change what the checkpoint trains (LoRA alpha or targets, the rewards or their
    weights), naming the setting; warn when the prompt set differs."""
    differ = [key for key in current if key in saved and saved[key] != current[key]]
    refused = [f"{key}: {saved[key]!r} -> {current[key]!r}" for key in differ if key != "prompts_sha256"]
    if refused:
        raise CheckpointError(f"Cannot resume from {path!r}: it trained another function ({'; '.join(refused)}). "
                              "Resume with the checkpoint's LoRA and rewards, or start a new run.")
    if "prompts_sha256" in differ:
        warnings.warn(f"Resuming from {path!r} with another prompt set than the checkpoint's (same count or not): "
                      "the prompt order continues, over other prompts.")


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
