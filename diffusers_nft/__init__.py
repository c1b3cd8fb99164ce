"""diffusers-nft: DiffusionNFT (online RL on the forward process) for flow-matching diffusers pipelines."""

__version__ = "0.1.0"

from .advantages import Optimality, rewards_to_optimality
from .config import FlowGRPOConfig, NFTConfig
from .loss import NFTLoss, NFTLossOutput

__all__ = ["FlowGRPOConfig", "FlowGRPOTrainer", "HackingGuard", "NFTConfig", "NFTLoss", "NFTLossOutput", "NFTTrainer",
           "Optimality",
           "rewards_to_optimality"]


def __getattr__(name):
    # The trainer pulls in diffusers and accelerate; the math above stays importable without them.
    if name == "NFTTrainer":
        from .trainer import NFTTrainer

        return NFTTrainer
    if name == "FlowGRPOTrainer":
        from .flow_grpo_trainer import FlowGRPOTrainer

        return FlowGRPOTrainer
    if name == "HackingGuard":
        from .guard import HackingGuard

        return HackingGuard
    raise AttributeError(name)
