"""CFG-free rollouts with any flow-matching solver of diffusers. Only the final latents are kept."""

from typing import Callable, Optional

import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.configuration_utils import ConfigMixin

from .config import SAMPLERS


def is_flow_matching_scheduler(scheduler) -> bool:
    """Whether a scheduler samples a rectified flow (`x_t = (1 - t) * x0 + t * eps`, velocity prediction)."""
    if isinstance(scheduler, (FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler)):
        return True
    config = getattr(scheduler, "config", {})
    return bool(config.get("use_flow_sigmas")) and config.get("prediction_type") == "flow_prediction"


def make_sampler(name: str, pipeline_scheduler: ConfigMixin, shift: Optional[float] = None):
    """Build the scheduler that collects data, by name, with a static time shift.

    Args:
        name: `"euler"` (`FlowMatchEulerDiscreteScheduler`), `"heun"` (`FlowMatchHeunDiscreteScheduler`),
            `"dpm_solver"` (2nd-order multistep DPM-Solver++ on flow sigmas, the release's solver) or `"unipc"`
            (`UniPCMultistepScheduler` on flow sigmas).
        pipeline_scheduler: The pipeline's own flow-matching scheduler; its `num_train_timesteps` is kept.
        shift: The time shift `sigma' = shift * sigma / (1 + (shift - 1) * sigma)`; by default the scheduler's
            own `shift`. Resolution-dependent ("dynamic") shifting is this with `shift = exp(mu)`.

    Returns:
        A fresh scheduler instance.
    """
    config = pipeline_scheduler.config
    if shift is None:
        shift = config.get("shift", None) or config.get("flow_shift", None) or 1.0
    num_train_timesteps = config.get("num_train_timesteps", 1000)
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler.from_config(
            config, shift=shift, use_dynamic_shifting=False, stochastic_sampling=False
        )
    if name == "heun":
        return FlowMatchHeunDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
    flow_kwargs = dict(
        num_train_timesteps=num_train_timesteps,
        use_flow_sigmas=True,
        prediction_type="flow_prediction",
        flow_shift=shift,
        solver_order=2,
    )
    if name == "dpm_solver":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", final_sigmas_type="zero", **flow_kwargs)
    if name == "unipc":
        return UniPCMultistepScheduler(final_sigmas_type="zero", **flow_kwargs)
    raise ValueError(f"Unknown sampler {name!r}; choose one of {SAMPLERS}.")


def sigma_grid(scheduler, num_steps: int) -> torch.Tensor:
    """The distinct noise levels in (0, 1] that a solver visits in `num_steps` steps, from high to low."""
    scheduler.set_timesteps(num_steps, device="cpu")
    sigmas = torch.as_tensor(scheduler.sigmas, dtype=torch.float64)
    sigmas = torch.unique_consecutive(sigmas[sigmas > 0])
    return sigmas[:num_steps].float()


@torch.no_grad()
def rollout(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler,
    noise: torch.Tensor,
    num_steps: int,
) -> torch.Tensor:
    """Integrate the probability-flow ODE from `noise` to clean latents.

    Args:
        velocity_fn: Maps `(latents, sigma)` with `sigma` of shape `(B,)` to the velocity `eps - x0`.
        scheduler: A flow-matching scheduler (see `make_sampler`).
        noise: Starting latents at sigma = 1.
        num_steps: Number of solver steps.

    Returns:
        The final latents, in the dtype of `noise`.
    """
    scheduler.set_timesteps(num_steps, device=noise.device)
    num_train_timesteps = scheduler.config.num_train_timesteps
    latents = noise
    for t in scheduler.timesteps:
        sigma = (t.float() / num_train_timesteps).expand(latents.shape[0]).to(latents.device)
        velocity = velocity_fn(latents, sigma)
        latents = scheduler.step(velocity.to(latents.dtype), t, latents, return_dict=False)[0].to(noise.dtype)
    return latents
