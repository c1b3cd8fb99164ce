"""`FlowGRPOTrainer`: `NFTTrainer` with Flow-GRPO's objective (`objectives.flow_grpo`) and config
(`FlowGRPOConfig`), as TRL keeps one trainer per method."""

from typing import Optional

from .config import NFTConfig
from .data import PromptSource
from .trainer import NFTTrainer


class FlowGRPOTrainer(NFTTrainer):
    """`NFTTrainer` with `objective="flow_grpo"`: Flow-GRPO (arXiv 2505.05470) on the same pipeline families,
    rewards, LoRA, checkpoints and card, configured by `FlowGRPOConfig` (SDE noise level 0.7, clip 1e-4, KL 0.04,
    CFG 4.5).

    Example:
        ```py
        trainer = FlowGRPOTrainer(pipe, "jpeg_compressibility", FlowGRPOConfig(output_dir="grpo"), ["a cat", "a dog"])
        trainer.train()
        ```
    """

    def __init__(self, pipeline, reward_funcs, args: Optional[NFTConfig] = None, train_dataset: PromptSource = None,
                 **kwargs):
        super().__init__(pipeline, reward_funcs, args, train_dataset, objective="flow_grpo", **kwargs)
