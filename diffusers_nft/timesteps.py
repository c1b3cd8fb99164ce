"""Noise levels at which each collected sample is trained. Pure tensor math: no diffusers, no models."""

from typing import Optional

import torch

TRAIN_TIMESTEPS = ("sampler_grid", "uniform", "logit_normal")


def num_train_timesteps(num_sampling_steps: int, timestep_fraction: float) -> int:
    """How many noise levels each sample is trained at: `int(timestep_fraction * num_sampling_steps)`, at least 1."""
    return max(1, int(timestep_fraction * num_sampling_steps))


def shift_sigmas(t: torch.Tensor, shift: float) -> torch.Tensor:
    """The time shift of SD3: `shift * t / (1 + (shift - 1) * t)`."""
    return shift * t / (1 + (shift - 1) * t)


def sample_train_sigmas(
    num_samples: int,
    num_timesteps: int,
    method: str = "sampler_grid",
    sampler_sigmas: Optional[torch.Tensor] = None,
    shift: float = 1.0,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Draw the training noise levels of every sample.

    Args:
        num_samples: Number of collected samples.
        num_timesteps: Noise levels per sample.
        method: `"sampler_grid"` (the release: distinct points of the sampler's own sigma grid, drawn without
            replacement per sample), `"uniform"` or `"logit_normal"` (continuous t, then shifted by `shift`).
        sampler_sigmas: The sampler's grid of noise levels in (0, 1], required for `"sampler_grid"`.
        shift: Time shift applied to continuous draws.
        logit_mean: Mean of the logit-normal distribution.
        logit_std: Standard deviation of the logit-normal distribution.
        generator: Random generator.

    Returns:
        Tensor of shape `(num_samples, num_timesteps)` in float32.
    """
    if method == "sampler_grid":
        if sampler_sigmas is None or len(sampler_sigmas) < num_timesteps:
            raise ValueError(f"sampler_grid needs a grid of at least {num_timesteps} sigmas, got {sampler_sigmas}.")
        keys = torch.rand(num_samples, len(sampler_sigmas), generator=generator)
        index = keys.argsort(dim=1)[:, :num_timesteps]
        return sampler_sigmas.float()[index]
    if method == "uniform":
        t = torch.rand(num_samples, num_timesteps, generator=generator)
    elif method == "logit_normal":
        t = torch.sigmoid(logit_mean + logit_std * torch.randn(num_samples, num_timesteps, generator=generator))
    else:
        raise ValueError(f"train_timesteps must be one of {TRAIN_TIMESTEPS}, got {method!r}.")
    # Keep away from sigma = 0, where x_t = x0 and the loss carries no signal.
    return shift_sigmas(t, shift).clamp(min=1e-3, max=1.0)
