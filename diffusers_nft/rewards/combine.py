"""Several rewards scored together, validated, and summed with weights."""

from typing import Dict, List, Optional, Sequence, Union

import torch

from .registry import RewardFunc, load_reward, reward_name


class RewardError(ValueError):
    """A reward raised or returned something unusable; the message names the reward and the prompt."""


class WeightedRewards:
    """Score images with several rewards; the total is their weighted sum.

    Args:
        reward_funcs: Names from the registry, callables, or a mix.
        weights: One weight per reward; 1.0 each by default.
    """

    def __init__(self, reward_funcs: Union[str, RewardFunc, Sequence], weights: Optional[Sequence[float]] = None):
        if isinstance(reward_funcs, str) or callable(reward_funcs):
            reward_funcs = [reward_funcs]
        if not reward_funcs:
            raise ValueError("At least one reward is needed: pass reward_funcs=['jpeg_compressibility'] or a callable.")
        weights = list(weights) if weights is not None else [1.0] * len(reward_funcs)
        if len(weights) != len(reward_funcs):
            raise ValueError(f"{len(reward_funcs)} rewards but {len(weights)} reward_weights; give one weight each.")
        names = [reward_name(r) for r in reward_funcs]
        self.names = [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]
        self.funcs = [load_reward(r) for r in reward_funcs]
        self.weights = [float(w) for w in weights]

    def __call__(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]) -> Dict[str, torch.Tensor]:
        """Score a batch.

        Returns:
            A float32 tensor of shape `(B,)` per reward name, and their weighted sum under `"total"`.

        Raises:
            RewardError: A reward raised, returned the wrong number of values, or a value that is not finite.
        """
        scores = {name: self._score(name, func, images, prompts, metadata) for name, func in zip(self.names, self.funcs)}
        scores["total"] = sum(w * scores[n] for n, w in zip(self.names, self.weights))
        return scores

    @staticmethod
    def _score(name, func, images, prompts, metadata) -> torch.Tensor:
        try:
            values = func(images, prompts, metadata)
        except Exception as error:
            raise RewardError(
                f"Reward {name!r} raised {type(error).__name__}: {error} (batch of {len(prompts)} images; "
                f"first prompt {prompts[0]!r})."
            ) from error
        try:
            values = torch.as_tensor(
                values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=torch.float64
            ).flatten()
        except (TypeError, ValueError) as error:
            raise RewardError(f"Reward {name!r} must return a sequence of floats, got {type(values).__name__}.") from error
        if values.numel() != len(prompts):
            raise RewardError(
                f"Reward {name!r} returned {values.numel()} values for {len(prompts)} images "
                f"(first prompt {prompts[0]!r}); it must return one float per image."
            )
        bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
        if bad:
            i = bad[0]
            raise RewardError(
                f"Reward {name!r} returned {values[i].item()} for the image of prompt {prompts[i]!r} "
                f"({len(bad)} non-finite value(s) in the batch). Rewards must be finite."
            )
        return values.float()
