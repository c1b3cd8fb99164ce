"""A run's checkpoints, in two layers:

- `folder`: the on-disk format. A `checkpoint-<step>` folder of named parts, written atomically (staged, then
  renamed) and read without running code.
- `checkpointer`: what a run's checkpoint holds (the LoRA adapters, the optimizer under each backend, the lr
  schedule, RNG states, the loop's state) and the checks before a resume.
"""

from .checkpointer import Checkpointer, check_resume_settings, trained_function
from .folder import (
    STATE_FILE,
    CheckpointError,
    check_output_dir,
    clean_incomplete,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)

__all__ = ["STATE_FILE", "CheckpointError", "Checkpointer", "check_output_dir", "check_resume_settings",
           "clean_incomplete", "list_checkpoints", "load_checkpoint", "resolve_checkpoint", "save_checkpoint",
           "trained_function"]
