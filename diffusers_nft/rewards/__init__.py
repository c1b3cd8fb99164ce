"""Rewards. They know images, prompts and metadata; they do not know the trainer."""

from .combine import RewardError, WeightedRewards
from .jpeg import jpeg_compressibility, jpeg_incompressibility
from .registry import available_rewards, load_reward, register_reward

__all__ = [
    "RewardError",
    "WeightedRewards",
    "available_rewards",
    "jpeg_compressibility",
    "jpeg_incompressibility",
    "load_reward",
    "register_reward",
]
