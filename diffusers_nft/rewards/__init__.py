"""Rewards. They know images, prompts and metadata; they do not know the trainer.

Model rewards (`clipscore`, `pickscore`, `hpsv2`, `aesthetic`, `geneval`, `ocr`) load by name through the
registry, on first use.
"""

from .combine import RewardError, RunningStd, WeightedRewards, rewards_of
from .jpeg import jpeg_compressibility, jpeg_incompressibility
from .registry import available_rewards, load_reward, register_reward
from .remote import RemoteReward, RemoteRewardError
from .scoring import SCORING_MODES, RewardScorer
from .video import temporal_consistency, video_reward

__all__ = [
    "RemoteReward",
    "RemoteRewardError",
    "RewardError",
    "RewardScorer",
    "RunningStd",
    "SCORING_MODES",
    "WeightedRewards",
    "available_rewards",
    "jpeg_compressibility",
    "jpeg_incompressibility",
    "load_reward",
    "register_reward",
    "rewards_of",
    "temporal_consistency",
    "video_reward",
]
