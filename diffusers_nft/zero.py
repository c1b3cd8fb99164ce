"""DeepSpeed ZeRO under accelerate: the config values the trainer owns, and checkpoints of the partitioned state.

ZeRO-2 keeps every parameter whole on every process but splits the optimizer state (the Adam moments and the
float32 master copy of the trainable weights) over the processes. So the optimizer state cannot be saved from one
process, and the LoRA weights cannot be restored by copying into the parameters alone: the next step would
overwrite them from the master copy. DeepSpeed's own engine checkpoint does both right; every process writes its
partition, and a resume needs the same number of processes.

The engine also needs the per-process micro-batch size, the number of micro-batches per optimizer step and the
gradient clipping from its config; here they come from `NFTConfig`, so one set of numbers drives every backend.
"""

import json
import os

from accelerate.utils import DistributedType

from .checkpoints.folder import STATE_FILE, CheckpointError

ENGINE_FOLDER = "deepspeed"
_TAG = "state"


def uses_deepspeed(accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def prepare(accelerator, config, gradient_accumulation_steps: int) -> None:
    """Before `accelerator.prepare`: under DeepSpeed, refuse what its engine cannot do and write the run's batch
    geometry into its config; under DDP and FSDP2, nothing."""
    if not uses_deepspeed(accelerator):
        return
    if config.skip_nonfinite:
        raise ValueError("skip_nonfinite does not work under DeepSpeed (its engine steps inside backward); "
                         "drop --skip_nonfinite, or use DDP or FSDP2.")
    configure(accelerator, config.train_batch_size, gradient_accumulation_steps, config.max_grad_norm)


def configure(accelerator, micro_batch_size: int, gradient_accumulation_steps: int, max_grad_norm: float) -> None:
    """Write the trainer's batch geometry and clipping into the DeepSpeed config, before `accelerator.prepare`.

    The trainer feeds the engine no dataloader, so accelerate cannot infer the micro-batch size; and the number of
    micro-batches per optimizer step is the trainer's, not the launcher config's default of 1.
    """
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = micro_batch_size
    config["gradient_accumulation_steps"] = gradient_accumulation_steps
    config["train_batch_size"] = micro_batch_size * gradient_accumulation_steps * accelerator.num_processes
    config["gradient_clipping"] = max_grad_norm


def save(engine, checkpoint_folder: str) -> None:
    """Write the engine's state (trainable weights, this process's optimizer partition) under `checkpoint_folder`.

    Every process must call it. Frozen weights (the base model, the old adapter) are not written: the LoRA parts of
    the checkpoint hold what of them changes.
    """
    engine.save_checkpoint(os.path.join(checkpoint_folder, ENGINE_FOLDER), tag=_TAG, exclude_frozen_parameters=True)


def load(engine, checkpoint_folder: str) -> None:
    """Restore what `save` wrote, master weights and optimizer partitions included. Every process must call it."""
    path = os.path.join(checkpoint_folder, ENGINE_FOLDER)
    engine.load_checkpoint(path, tag=_TAG, load_module_strict=False, load_optimizer_states=True,
                           load_lr_scheduler_states=False)


def check_resumable(checkpoint_folder: str, accelerator) -> None:
    """Raise `CheckpointError` unless this run can resume `checkpoint_folder`, before any model is touched.

    DeepSpeed checkpoints hold the engine's per-process optimizer partitions, the others one whole optimizer state:
    a run resumes a checkpoint of its own kind, and a DeepSpeed one with as many processes.
    """
    written_by_deepspeed = os.path.isdir(os.path.join(checkpoint_folder, ENGINE_FOLDER))
    if written_by_deepspeed != uses_deepspeed(accelerator):
        raise CheckpointError(
            f"{checkpoint_folder!r} was written {'with' if written_by_deepspeed else 'without'} DeepSpeed and this "
            f"run is {'not ' if written_by_deepspeed else ''}under DeepSpeed: the optimizer state is stored "
            "differently. Resume with the accelerate config that wrote the checkpoint."
        )
    if not written_by_deepspeed:
        return
    try:
        with open(os.path.join(checkpoint_folder, STATE_FILE)) as f:
            saved = json.load(f).get("num_processes")
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{checkpoint_folder!r} is corrupt: cannot read {STATE_FILE} ({error}).") from error
    if saved != accelerator.num_processes:
        raise CheckpointError(
            f"{checkpoint_folder!r} was written by {saved} DeepSpeed processes and this run has "
            f"{accelerator.num_processes}. ZeRO partitions the optimizer state per process: resume with "
            f"--num_processes {saved}."
        )
