"""Checkpoint folders, written atomically: a temporary folder, then one rename.

A checkpoint is a folder `checkpoint-<step>` of named parts. The file extension says how a part is stored:
`.safetensors` (a dict of tensors), `.json` (plain data) or `.pt` (tensors, numbers, strings and containers of them:
optimizer, lr scheduler, RNG states). Reading never runs code: only the parts the caller names are opened, `.pt`
parts with `torch.load(weights_only=True)`, and any other file in the folder is ignored. Subfolders belong to
whoever wrote them (DeepSpeed's per-process state) and are not read as parts. A folder is complete when its rename happened; a crash mid-write leaves only a
`.tmp-checkpoint-*` folder, which is ignored and cleaned up.
"""

import json
import os
import re
import shutil
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "trainer_state.json"
# What `np.random.get_state()` pickles to: plain arrays, nothing that can run code.
_MULTIARRAY = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 renamed it
_NUMPY_ARRAY_GLOBALS = [_MULTIARRAY._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
_NAME = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or unreadable."""


def _write_part(path: str, value: Any) -> None:
    if path.endswith(".safetensors"):
        save_file(value, path)
    elif path.endswith(".json"):
        with open(path, "w") as f:
            json.dump(value, f, indent=2)
    else:
        torch.save(value, path)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _read_part(path: str) -> Any:
    if path.endswith(".safetensors"):
        return load_file(path)
    if path.endswith(".json"):
        with open(path) as f:
            return json.load(f)
    with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):  # RNG states of checkpoints written before 0.2
        return torch.load(path, map_location="cpu", weights_only=True)


def check_output_dir(output_dir: str) -> None:
    """Raise `ValueError` unless `output_dir` can be created and written to (by this process), and is neither the
    filesystem's root nor inside the package (where a run's files would mix with its code)."""
    real, package = os.path.realpath(output_dir), os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    if real == os.path.realpath(os.sep) or real == package or real.startswith(package + os.sep):
        where = "the root folder" if real == os.path.realpath(os.sep) else "inside the diffusers_nft package"
        raise ValueError(f"output_dir {output_dir!r} is {where}: choose a folder of its own, such as "
                         "--output_dir nft-run.")
    probe = os.path.join(output_dir, f".write-test-{os.getpid()}")  # one per process: ranks share the folder
    try:
        os.makedirs(output_dir, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"output_dir {output_dir!r} is not writable ({error}). Choose another --output_dir.") from error


# The temporary folders the package itself makes in output_dir (a checkpoint being written or deleted, a LoRA being
# saved); a user's own `.tmp-notes/` is not one of them.
_OUR_TEMPORARY = re.compile(r"^\.tmp-(checkpoint-\d+(-deleting)?|lora-\w+)$")
# What a run writes into its output_dir; the first three mark a folder as holding a run.
_RUN_MARKERS = re.compile(r"^(metrics\.jsonl|checkpoint-\d+|pytorch_lora_weights.*\.safetensors)$")
_RUN_FILES = re.compile(r"^(metrics\.jsonl|checkpoint-\d+|pytorch_lora_weights.*\.safetensors|reward_curve\.png|"
                        r"samples|logs|README\.md|images|results\.md|best)$")


LOCK_FILE = ".diffusers-nft.lock"
_HELD: Dict[str, int] = {}  # the output folders this process holds: real path -> the lock file's descriptor


def lock_output_dir(output_dir: str) -> None:
    """Hold `output_dir` for this process until it exits (an exclusive `flock` on `.diffusers-nft.lock`, which the
    kernel releases whatever way the process ends). This process may take it again; another may not.

    Raises:
        ValueError: If another process holds it, naming that process.
    """
    import fcntl

    real = os.path.realpath(output_dir)
    if real in _HELD:
        return
    os.makedirs(real, exist_ok=True)
    fd = os.open(os.path.join(real, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ValueError(f"output_dir {output_dir!r} is in use by another run (process {other}): two runs in one "
                         "folder would mix their checkpoints and metrics. Wait for it to end, or choose another "
                         "--output_dir.") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[real] = fd


def previous_run(output_dir: str) -> List[str]:
    """The files and folders an earlier run left in `output_dir` (empty when it holds none)."""
    names = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
    if not any(_RUN_MARKERS.match(name) for name in names):
        return []
    return sorted([name for name in names if _RUN_FILES.match(name) or _OUR_TEMPORARY.match(name)], key=_natural)


def clear_previous_run(output_dir: str) -> List[str]:
    """Remove what `previous_run` lists (only what a run writes; other files stay); returns their names."""
    names = previous_run(output_dir)
    for name in names:
        path = os.path.join(output_dir, name)
        remove(path)
    return names


def _natural(name: str):
    """checkpoint-2 before checkpoint-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_checkpoints(output_dir: str) -> List[str]:
    """Complete checkpoint folders in `output_dir`, oldest step first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _NAME.match(name))]
    found = [(step, name) for step, name in found if os.path.isfile(os.path.join(output_dir, name, STATE_FILE))]
    return [os.path.join(output_dir, name) for _, name in sorted(found)]


def staging_folder(output_dir: str, step: int) -> str:
    """Where checkpoint `step` is written before its rename (the same path on every process)."""
    return os.path.join(output_dir, f".tmp-checkpoint-{step}")


def start_checkpoint(output_dir: str, step: int) -> str:
    """Create an empty staging folder for checkpoint `step` (removing a crashed attempt's) and return it.

    Other processes may write their own files into it before `save_checkpoint(..., staged=True)` finishes it.
    """
    tmp = staging_folder(output_dir, step)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    return tmp


def save_checkpoint(
    output_dir: str, step: int, parts: Dict[str, Any], total_limit: Optional[int] = None, staged: bool = False
) -> str:
    """Write `parts` to `output_dir/checkpoint-<step>` atomically, then keep only the newest `total_limit`.

    Args:
        output_dir: The run's folder.
        step: The iteration the checkpoint is taken at.
        parts: File name -> value; must include `trainer_state.json`.
        total_limit: How many checkpoints to keep, or None for all.
        staged: True if `start_checkpoint` already created the staging folder (and other processes wrote into it).

    Returns:
        The checkpoint folder.
    """
    if STATE_FILE not in parts:
        raise ValueError(f"A checkpoint needs a {STATE_FILE} part.")
    final = os.path.join(output_dir, f"checkpoint-{step}")
    tmp = staging_folder(output_dir, step) if staged else start_checkpoint(output_dir, step)
    for name, value in parts.items():
        if name != STATE_FILE:
            _write_part(os.path.join(tmp, name), value)
    _write_part(os.path.join(tmp, STATE_FILE), parts[STATE_FILE])  # last: its presence marks a whole folder
    if os.path.lexists(final):
        remove(final)
    os.replace(tmp, final)
    _fsync_dir(output_dir)
    if total_limit is not None:
        for old in list_checkpoints(output_dir)[:-total_limit]:
            # Renamed first: a deletion cut short leaves a `.tmp-` folder, never a half checkpoint that counts.
            doomed = os.path.join(output_dir, f".tmp-{os.path.basename(old)}-deleting")
            os.replace(old, doomed)
            remove(doomed, missing_ok=True)
    return final


def remove(path: str, missing_ok: bool = False) -> None:
    """Remove a file, a folder, or a symbolic link itself (never what it points to: `rmtree` refuses links, and a
    checkpoint folder that is a link would otherwise crash the run at its last save)."""
    try:
        if os.path.islink(path) or not os.path.isdir(path):
            os.remove(path)
        else:
            shutil.rmtree(path)
    except FileNotFoundError:
        if not missing_ok:
            raise


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_incomplete(output_dir: str) -> None:
    """Remove the temporary folders a crash left behind: checkpoints being written or deleted, a LoRA being saved."""
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            if _OUR_TEMPORARY.match(name) and os.path.isdir(os.path.join(output_dir, name)):
                remove(os.path.join(output_dir, name), missing_ok=True)


def resolve_checkpoint(resume_from_checkpoint: str, output_dir: str) -> Optional[str]:
    """The folder to resume from: a path, or `"latest"` for the newest complete one in `output_dir`.

    Returns None for `"latest"` when `output_dir` has no checkpoint yet (a fresh start).

    Raises:
        CheckpointError: If a given path is not a complete checkpoint.
    """
    if resume_from_checkpoint == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = resume_from_checkpoint
    if not os.path.isdir(path):
        raise CheckpointError(
            f"resume_from_checkpoint={path!r} does not exist. Pass a checkpoint-<step> folder or 'latest'."
        )
    if not os.path.isfile(os.path.join(path, STATE_FILE)):
        raise CheckpointError(f"{path!r} is not a complete checkpoint (no {STATE_FILE}); pick an earlier one.")
    return path


def load_checkpoint(path: str, required: List[str]) -> Dict[str, Any]:
    """Read the parts `required` (and `trainer_state.json`) of a checkpoint folder, and nothing else.

    Raises:
        CheckpointError: If a required part is missing or cannot be read as data (a pickle that would run code
            is refused, never executed).
    """
    names = sorted(set(required) | {STATE_FILE})
    missing = [name for name in names if not os.path.isfile(os.path.join(path, name))]
    if missing:
        raise CheckpointError(f"Checkpoint {path!r} is incomplete: {missing} missing. Resume from another one.")
    parts = {}
    for name in names:
        try:
            parts[name] = _read_part(os.path.join(path, name))
        except Exception as error:
            raise CheckpointError(
                f"Checkpoint {path!r} is corrupt: cannot read {name} ({type(error).__name__}: {error}). "
                "Resume from another checkpoint."
            ) from error
    return parts
