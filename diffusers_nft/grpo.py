"""Flow-GRPO's pieces (arXiv 2505.05470): the SDE with the ODE's marginals, the Gaussian log-probability of each of
its transitions, and PPO's clipped surrogate. Pure tensor math: no diffusers, no models.

On the rectified flow `x_sigma = (1 - sigma) x0 + sigma eps` with velocity `v = eps - x0`, the reverse-time SDE

    x_{s'} = x_s + [v + std_s^2 / (2 s) (x_s + (1 - s) v)] (s' - s) + std_s sqrt(s - s') z,
    std_s = a sqrt(s / (1 - s)),

has the marginals of the probability-flow ODE for any noise level `a` (the release uses 0.7), so each step is a
Gaussian whose mean depends on the policy's velocity: that mean carries the policy gradient.
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass
class SDEStep:
    """One transition of the SDE.

    Attributes:
        prev_sample: The next (less noisy) latents, given or drawn.
        mean: The transition's mean (carries the velocity's gradient).
        std: The noise level `std_s` per sample, shaped to broadcast against the latents (the KL divides by it).
        log_prob: `(B,)`: the Gaussian log-density of `prev_sample`, averaged over its elements (the release).
    """

    prev_sample: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    log_prob: torch.Tensor


def _per_sample(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A scalar or `(B,)` value shaped `(B, 1, ...)` against `like`, in float32."""
    value = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    return value.reshape(-1, *([1] * (like.ndim - 1))).expand(like.shape[0], *([1] * (like.ndim - 1)))


def sde_std(sigma: torch.Tensor, sigma_max: float, noise_level: float) -> torch.Tensor:
    """`noise_level * sqrt(sigma / (1 - sigma))`; at `sigma == 1` the denominator uses `sigma_max`, the grid's
    largest level below 1 (the release's guard against the division by zero)."""
    safe = torch.where(sigma == 1, torch.full_like(sigma, sigma_max), sigma)
    return noise_level * torch.sqrt(sigma / (1 - safe))


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """`log N(x; mean, scale^2)` element-wise, averaged over all but the batch axis: `(B,)`."""
    log_density = -((x - mean) ** 2) / (2 * scale**2) - torch.log(scale) - 0.5 * math.log(2 * math.pi)
    return log_density.flatten(1).mean(dim=1)


def sde_step(
    x: torch.Tensor,
    velocity: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    *,
    noise_level: float,
    sigma_max: float,
    prev_sample: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
) -> SDEStep:
    """One SDE step from noise level `sigma` to `sigma_next < sigma`, in float32.

    Args:
        x: Latents at `sigma`, `(B, ...)`.
        velocity: The policy's velocity at `(x, sigma)`.
        sigma, sigma_next: Scalars or `(B,)` noise levels.
        noise_level: The release's `a` (0.7).
        sigma_max: The grid's largest level below 1 (see `sde_std`).
        prev_sample: The recorded next latents, to score; else `mean + scale * noise` is drawn.
        noise: Standard-normal noise shaped like `x` (required when `prev_sample` is None).
    """
    x, velocity = x.float(), velocity.float()
    s, s_next = _per_sample(sigma, x), _per_sample(sigma_next, x)
    dt = s_next - s
    std = sde_std(s, sigma_max, noise_level)
    mean = x * (1 + std**2 / (2 * s) * dt) + velocity * (1 + std**2 * (1 - s) / (2 * s)) * dt
    scale = std * torch.sqrt(-dt)
    if prev_sample is None:
        if noise is None:
            raise ValueError("sde_step needs prev_sample (to score it) or noise (to draw it).")
        prev_sample = mean + scale * noise.float()
    log_prob = gaussian_log_prob(prev_sample.detach().float(), mean, scale)
    return SDEStep(prev_sample=prev_sample, mean=mean, std=std, log_prob=log_prob)


def sde_rollout(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sigmas: torch.Tensor,
    noise: torch.Tensor,
    step_noise: Callable[[int], torch.Tensor],
    *,
    noise_level: float,
):
    """Sample the SDE on the grid `sigmas` (decreasing, ending at 0), recording every state and log-probability.

    Args:
        velocity_fn: `(latents, sigma (B,) float32) -> velocity`, as `sampling.rollout` takes (CFG included).
        sigmas: `T + 1` noise levels.
        noise: The starting latents at `sigmas[0]`.
        step_noise: `k -> ` standard-normal noise of step `k`, shaped like `noise`.
        noise_level: The release's `a`.

    Returns:
        `(states, log_probs)`: `(B, T + 1, ...)` latents (float32, `states[:, -1]` the sample) and `(B, T)`.
    """
    grid = [float(s) for s in sigmas]
    sigma_max = grid[1]
    x, states, log_probs = noise.float(), [noise.float()], []
    for k in range(len(grid) - 1):
        sigma = torch.full((len(x),), grid[k], dtype=torch.float32, device=x.device)
        step = sde_step(x, velocity_fn(x, sigma), sigma, grid[k + 1], noise_level=noise_level, sigma_max=sigma_max,
                        noise=step_noise(k).to(x.device))
        x = step.prev_sample
        states.append(x)
        log_probs.append(step.log_prob)
    return torch.stack(states, dim=1), torch.stack(log_probs, dim=1)


def clipped_surrogate(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_range: float):
    """PPO's loss `mean(max(-A ratio, -A clip(ratio, 1 - c, 1 + c)))` with `ratio = exp(log_prob - old_log_prob)`.

    Returns:
        `(loss, ratio)`; the gradient of a sample whose ratio left the clip range in its advantage's direction is 0.
    """
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.maximum(unclipped, clipped).mean(), ratio
