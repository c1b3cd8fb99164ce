"""Whole tensors from sharded ones and back, for saving and loading under FSDP2.

FSDP2 (`fully_shard`, what accelerate's FSDP version 2 uses) turns every parameter into a `DTensor`: each process
holds one slice of it. Elementwise updates (the old-policy soft update, the EMA) work slice by slice, but a file
needs the whole tensor, and a whole tensor read from a file must be sliced again. Without sharding (one process,
DDP, DeepSpeed ZeRO-2, whose parameters stay whole) these functions return their input.

Gathering is a collective operation: every process must call them, in the same order.
"""

from typing import Dict, Optional

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


def is_sharded(tensor: torch.Tensor) -> bool:
    return isinstance(tensor, DTensor)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: gathered from every process if `tensor` is sharded, else `tensor` itself."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def shard_like(whole: torch.Tensor, like: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """`whole` (the same on every process) sliced as `like` is, on `like`'s device, in `dtype` or `like`'s."""
    whole = whole.to(like.device, dtype or like.dtype)
    return distribute_tensor(whole, like.device_mesh, like.placements) if is_sharded(like) else whole


def _params(optimizer) -> list:
    return [p for group in optimizer.param_groups for p in group["params"]]


def gather_optimizer_state(optimizer) -> Dict:
    """A snapshot of `optimizer.state_dict()`: every state tensor whole (gathered if sharded), copied to the CPU."""
    state = optimizer.state_dict()
    state["state"] = {
        index: {key: full_tensor(value).cpu().clone() if torch.is_tensor(value) else value for key, value in entry.items()}
        for index, entry in sorted(state["state"].items())
    }
    return state


def shard_optimizer_state(state: Dict, optimizer) -> Dict:
    """The inverse of `gather_optimizer_state`: whole state tensors sliced like the parameters they belong to."""
    params = _params(optimizer)
    state = dict(state)
    state["state"] = {
        index: {
            key: shard_like(value, params[index]) if is_sharded(params[index]) and torch.is_tensor(value)
            and value.shape == params[index].shape else value
            for key, value in entry.items()
        }
        for index, entry in sorted(state["state"].items())
    }
    return state
