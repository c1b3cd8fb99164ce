"""CFG-free rollouts on the noise grid of the pipeline's own scheduler. Only the final latents are kept."""

from typing import Callable, Optional, Sequence

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

from .solvers import SAMPLERS, integrate, model_sigmas

__all__ = ["SAMPLERS", "is_flow_matching_scheduler", "model_sigmas", "pipeline_sigmas", "rollout"]


def is_flow_matching_scheduler(scheduler) -> bool:
    """Whether a scheduler samples a rectified flow (`x_t = (1 - t) * x0 + t * eps`, velocity prediction)."""
    if isinstance(scheduler, (FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler)):
        return True
    config = getattr(scheduler, "config", {})
    return bool(config.get("use_flow_sigmas")) and config.get("prediction_type") == "flow_prediction"


def pipeline_sigmas(
    scheduler, num_steps: int, sigmas: Optional[Sequence[float]] = None, mu: Optional[float] = None
) -> torch.Tensor:
    """The noise grid that a pipeline's flow-matching scheduler produces for `num_steps` steps.

    This is what the pipeline itself would sample on (the release collects its data on it too): for SD3.5-Medium
    (shift 3) at 10 steps, 1.0, 0.96013, ..., 0.27805, 0.00893, then 0. The scheduler's own settings apply: its
    shift, resolution-dependent shifting through `mu`, terminal stretching, Karras/exponential/beta spacing.

    Args:
        scheduler: The pipeline's scheduler, copied from its config (UniPC and DPM-Solver with flow sigmas too:
            Wan samples on UniPC's grid, 1 - 1e-6, 0.9376, ... at 6 steps and shift 3).
        num_steps: Number of solver steps.
        sigmas: The sigmas the pipeline passes to `set_timesteps` (FLUX passes `linspace(1, 1 / n, n)`), or None.
        mu: The resolution-dependent shift, required when the scheduler uses dynamic shifting.

    Returns:
        `num_steps + 1` decreasing noise levels in float64, the last one 0.
    """
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        copy = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config, stochastic_sampling=False)
    else:  # UniPC / DPM-Solver with flow sigmas (Wan): their own grid, which differs from Euler's at the same shift
        copy = type(scheduler).from_config(scheduler.config)
    kwargs = {"mu": mu} if copy.config.get("use_dynamic_shifting", False) else {}
    if sigmas is not None:
        kwargs["sigmas"] = sigmas
    copy.set_timesteps(None if sigmas is not None else num_steps, device="cpu", **kwargs)
    grid = copy.sigmas.double()
    if len(grid) != num_steps + 1 or float(grid[-1]) != 0:
        raise ValueError(f"The scheduler gave the grid {grid.tolist()} for {num_steps} steps; expected "
                         f"{num_steps + 1} values ending at 0. Use a FlowMatchEulerDiscreteScheduler config.")
    return grid


def rollout(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sigmas: torch.Tensor,
    noise: torch.Tensor,
    sampler: str = "dpm_solver",
) -> torch.Tensor:
    """Integrate the probability-flow ODE from `noise` to clean latents on the grid `sigmas`.

    Args:
        velocity_fn: Maps `(latents, sigma)`, with `sigma` a float32 tensor of shape `(B,)`, to the velocity
            `eps - x0`.
        sigmas: The grid, from `pipeline_sigmas`; the model is called at `model_sigmas(sigmas)`.
        noise: Starting latents.
        sampler: One of `SAMPLERS` (see `diffusers_nft.solvers`).

    Returns:
        The final latents, in the dtype of `noise`.
    """
    return integrate(velocity_fn, noise, sigmas, sampler)
