"""From one process's scored rollouts to the credit it trains with, in one pass: gather every process's rewards and
groups (a group may straddle processes), combine the rewards into their weighted total, let the objective turn the
totals into credit (NFT's optimality probability r, Flow-GRPO's advantage), and keep this process's share."""

from dataclasses import dataclass
from typing import Dict

import torch

from .metrics import TOTAL


@dataclass
class Credit:
    """An iteration's rewards and credit.

    Attributes:
        scores: Reward name -> every process's scores, with the weighted `"total"`.
        group_ids: Every process's group ids (the prompt of each sample).
        local: This process's samples' credit, in the order of its rollouts.
        metrics: What the objective logs of the credit (`r/mean`, `zero_variance_groups`, ...).
    """

    scores: Dict[str, torch.Tensor]
    group_ids: torch.Tensor
    local: torch.Tensor
    metrics: Dict[str, float]


def assign_credit(rollouts, *, accelerator, rewards, objective, plan) -> Credit:
    """The credit of `rollouts` (this process's), with every process's rewards behind it.

    Args:
        rollouts: This process's `Rollouts` (their `rewards` and `group_ids`).
        accelerator: The run's `Accelerator` (the gather).
        rewards: The `WeightedRewards` that combine the named rewards into the total.
        objective: The `Objective` whose `credit` turns totals into credit.
        plan: The `IterationPlan` (which images are this process's).
    """
    def gather(tensor: torch.Tensor) -> torch.Tensor:
        return accelerator.gather(tensor.to(accelerator.device)).cpu()

    scores = {name: gather(values) for name, values in rollouts.rewards.items()}
    scores[TOTAL] = rewards.combine(scores)
    group_ids = gather(rollouts.group_ids)
    credit, metrics = objective.credit(scores[TOTAL], group_ids)
    return Credit(scores, group_ids, credit[plan.images_of(accelerator.process_index)], metrics)
