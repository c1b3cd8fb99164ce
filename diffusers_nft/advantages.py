"""Rewards to optimality probabilities. Pure tensor math: no diffusers, no models."""

from dataclasses import dataclass

import torch

STD_SCOPES = ("global", "group")
ADV_MODES = ("all", "positive_only", "negative_only", "one_only", "binary")


@dataclass
class Optimality:
    """What `rewards_to_optimality` returns.

    Attributes:
        r: Optimality probability per sample in [0, 1]; exactly 0.5 in a group whose rewards are all equal.
        advantages: Normalised advantage per sample, before clipping.
        zero_variance_fraction: Fraction of groups whose rewards are all equal (they teach nothing).
    """

    r: torch.Tensor
    advantages: torch.Tensor
    zero_variance_fraction: float


def rewards_to_optimality(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    adv_clip_max: float = 5.0,
    std_scope: str = "global",
    eps: float = 1e-4,
    mode: str = "all",
) -> Optimality:
    """Turn rewards into the optimality probability `r` of DiffusionNFT.

    `A = (R - mean of R over the prompt's group) / (std + eps)`, with the standard deviation taken over the whole
    batch (`std_scope="global"`, the release) or over the group (`"group"`), then
    `r = 0.5 + 0.5 * clip(A, -c, c) / c` with `c = adv_clip_max`. Pass the rewards of *all* processes, so every
    process computes the statistics of the whole iteration batch.

    Args:
        rewards: Reward per sample, shape `(N,)`.
        group_ids: Integer id of each sample's prompt group, shape `(N,)`; samples of one prompt share an id.
        adv_clip_max: Clip value `c` > 0.
        std_scope: `"global"` or `"group"`.
        eps: Added to the standard deviation.
        mode: The release's advantage modes, each applied to the clipped advantage before the map to r (as the
            release does). `"all"` (default) as above; `"positive_only"` clamps it at >= 0 and `"negative_only"` at
            <= 0 (r in [0.5, 1] and [0, 0.5]; both loss terms stay); `"one_only"` replaces it by 1 where A > 0 and
            0 elsewhere (r in {0.5, 0.5 + 0.5 / c}: 0.6 at c = 5); `"binary"` by its sign (r in {0.5 - 0.5 / c,
            0.5, 0.5 + 0.5 / c}: 0.4, 0.5, 0.6 at c = 5).

    Returns:
        An `Optimality` with `r` and `advantages` of shape `(N,)` in float32.
    """
    if rewards.ndim != 1 or group_ids.shape != rewards.shape:
        raise ValueError(f"rewards and group_ids must be 1-D of equal length, got {rewards.shape} and {group_ids.shape}.")
    if mode not in ADV_MODES:
        raise ValueError(f"mode must be one of {ADV_MODES}, got {mode!r}.")
    if std_scope not in STD_SCOPES:
        raise ValueError(f"std_scope must be one of {STD_SCOPES}, got {std_scope!r}.")
    if not adv_clip_max > 0:
        raise ValueError(f"adv_clip_max must be > 0, got {adv_clip_max}.")
    rewards = rewards.double()
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max()) + 1
    counts = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, inverse, torch.ones_like(rewards))
    means = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, inverse, rewards) / counts
    centered = rewards - means[inverse]
    group_max = torch.full((num_groups,), -torch.inf, dtype=torch.float64).scatter_reduce(0, inverse, rewards, "amax")
    group_min = torch.full((num_groups,), torch.inf, dtype=torch.float64).scatter_reduce(0, inverse, rewards, "amin")
    constant = group_max == group_min
    # Exact zeros for constant groups, whatever the rounding of their mean.
    centered = torch.where(constant[inverse], torch.zeros_like(centered), centered)
    if std_scope == "global":
        std = rewards.std(unbiased=False)
    else:
        group_var = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, inverse, centered**2) / counts
        std = group_var.sqrt()[inverse]
    advantages = centered / (std + eps)
    r = _optimality(advantages, adv_clip_max, mode)
    return Optimality(r.float(), advantages.float(), constant.double().mean().item())


def _optimality(advantages: torch.Tensor, adv_clip_max: float, mode: str) -> torch.Tensor:
    """`r = 0.5 + 0.5 * A' / c` with `A'` the clipped advantage after the mode, as the release computes it."""
    clipped = advantages.clamp(-adv_clip_max, adv_clip_max)
    if mode == "positive_only":
        clipped = clipped.clamp(min=0.0)
    elif mode == "negative_only":
        clipped = clipped.clamp(max=0.0)
    elif mode == "one_only":
        clipped = (clipped > 0).to(clipped.dtype)
    elif mode == "binary":
        clipped = clipped.sign()
    return (0.5 + 0.5 * clipped / adv_clip_max).clamp(0.0, 1.0)
