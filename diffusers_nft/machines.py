"""What every machine of a run must see, checked on all of them at start-up.

A check that fails on one machine only would leave the others waiting for it in the next collective until the
process group's timeout (30 minutes). Here every process runs the check, the outcomes are gathered, and when any
failed every process raises the same error, naming each machine (host and process) and what it could not see.
"""

import os
import socket
import uuid
from typing import Callable, TypeVar

T = TypeVar("T")


def on_every_machine(step: Callable[[], T], what: str) -> T:
    """Run the setup `step` on every process of the run; if it raised on any, raise on all of them: `ValueError`
    with each failing machine's reason (with one process, the error itself).

    Args:
        step: A setup check or step; its return value is returned where it passed everywhere.
        what: What is set up, for the message ("the output folder", "the rewards").
    """
    state = _state()
    try:
        result, error = step(), None
    except Exception as raised:  # noqa: BLE001 - gathered, then raised on every process
        if state.num_processes == 1:
            raise
        result, error = None, raised
    if state.num_processes == 1:
        return result
    from accelerate.utils import gather_object

    reason = None if error is None else f"{type(error).__name__}: {error}"
    outcomes = gather_object([(socket.gethostname(), state.process_index, reason)])
    failed = [(host, rank, why) for host, rank, why in outcomes if why]
    if failed:
        lines = "\n".join(f"  - {host} (process {rank}): {why}" for host, rank, why in failed)
        raise ValueError(f"Setting up {what} failed on {len(failed)} of {state.num_processes} processes:\n{lines}\n"
                         "Every machine must see the same files: put them on storage all of them mount at the "
                         "same path, or copy them to each machine.") from error
    return result


def check_shared_output_dir(output_dir: str) -> None:
    """Every process sees the same `output_dir`: the main process writes a file there and each one reads it back.

    Checkpoints are written there by the main process (and by each process under DeepSpeed ZeRO) and read back by
    every process on resume, so a folder of the same name on each machine's own disk is not enough.
    """
    from accelerate.utils import broadcast_object_list

    state = _state()
    if state.num_processes == 1:
        return
    token = [f".machines-{uuid.uuid4().hex}" if state.is_main_process else None]
    broadcast_object_list(token)
    path = os.path.join(output_dir, token[0])
    if state.is_main_process:
        with open(path, "w") as f:
            f.write(socket.gethostname())
    state.wait_for_everyone()
    try:
        on_every_machine(lambda: _sees(path, output_dir), "the output folder")
    finally:
        state.wait_for_everyone()
        if state.is_main_process:
            os.remove(path)


def _state():
    """The run's processes (accelerate's `PartialState`, which joins the process group once). On CPU it must be told
    so, as `Accelerator` tells it from `ACCELERATE_USE_CPU`: a state made without would stay one process."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _sees(path: str, output_dir: str) -> None:
    if not os.path.isfile(path):
        raise ValueError(f"output_dir {output_dir!r} here is not the main process's folder (its file "
                         f"{os.path.basename(path)} is not there): checkpoints and resumes need one folder shared "
                         "by every machine")


def agreed_max(value: float, device) -> float:
    """The largest `value` over the processes (the value itself with one process): a decision every process
    must take alike."""
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    tensor = torch.tensor([value], dtype=torch.float64,
                          device=device if torch.distributed.get_backend() == "nccl" else "cpu")
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return float(tensor.item())
