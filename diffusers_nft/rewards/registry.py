"""Rewards by name. A reward is any callable `(images, prompts, metadata) -> sequence of floats`.

- `images`: float tensor `(B, 3, H, W)` in [0, 1];
- `prompts`: list of B strings;
- `metadata`: list of B dicts, the prompt dataset's other columns.
"""

from typing import Callable, Dict, Union

from .jpeg import jpeg_compressibility, jpeg_incompressibility

RewardFunc = Callable[..., object]

_REGISTRY: Dict[str, Callable[[], RewardFunc]] = {
    "jpeg_compressibility": lambda: jpeg_compressibility,
    "jpeg_incompressibility": lambda: jpeg_incompressibility,
}


def register_reward(name: str, factory: Callable[[], RewardFunc]) -> None:
    """Register `factory` (called with no argument, once, when the reward is first used) under `name`."""
    _REGISTRY[name] = factory


def available_rewards():
    return sorted(_REGISTRY)


def load_reward(reward: Union[str, RewardFunc]) -> RewardFunc:
    """A reward callable from a registered name, or the callable itself."""
    if callable(reward):
        return reward
    if reward not in _REGISTRY:
        raise ValueError(f"Unknown reward {reward!r}. Registered rewards: {available_rewards()}; or pass a callable.")
    return _REGISTRY[reward]()


def reward_name(reward: Union[str, RewardFunc]) -> str:
    if isinstance(reward, str):
        return reward
    return getattr(reward, "__name__", None) or type(reward).__name__
