"""Several rewards scored together, validated, and combined into one scalar per image by a weighted sum."""

import math
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from .video import score_frames, takes_video
from .registry import RewardFunc, check_reward, load_reward, reward_name


class RewardError(ValueError):
    """A reward raised or returned something unusable; the message names the reward and the prompt."""


class RunningStd:
    """Running standard deviation of a stream of values (Welford), for reward normalisation."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: torch.Tensor) -> None:
        for value in values.double().tolist():
            self.count += 1
            delta = value - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (value - self.mean)

    @property
    def std(self) -> float:
        return (self.m2 / self.count) ** 0.5 if self.count > 1 else 1.0

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = state["count"], state["mean"], state["m2"]


class WeightedRewards:
    """Score images with several rewards, then combine them: `total = sum_i w_i * R_i` (optionally `R_i / std_i`).

    Args:
        reward_funcs: Registered names, callables, or a mix.
        weights: One weight per reward; 1.0 each by default.
        normalize: Divide each reward by its running standard deviation (over every image seen so far) before
            the weighted sum, so that rewards on different scales weigh as their weights say.
        video_frames: For videos `(B, F, 3, H, W)`: how many frames an image reward scores (their mean is the
            video's score); rewards marked with `video_reward` get the whole videos.
        **options: Passed to named model rewards: `device`, `dtype`, `batch_size`.
    """

    def __init__(
        self,
        reward_funcs: Union[str, RewardFunc, Sequence],
        weights: Optional[Sequence[float]] = None,
        normalize: bool = False,
        video_frames: int = 3,
        **options: Any,
    ):
        if isinstance(reward_funcs, str) or callable(reward_funcs):
            reward_funcs = [reward_funcs]
        if not reward_funcs:
            raise ValueError("At least one reward is needed: pass reward_funcs=['jpeg_compressibility'] or a callable.")
        weights = list(weights) if weights is not None else [1.0] * len(reward_funcs)
        if len(weights) != len(reward_funcs):
            raise ValueError(f"{len(reward_funcs)} rewards but {len(weights)} reward_weights; give one weight each.")
        for reward in reward_funcs:
            check_reward(reward)
        names = [reward_name(r) for r in reward_funcs]
        self.names = [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]
        self.specs = list(reward_funcs)
        self.options = options
        if video_frames < 1:
            raise ValueError(f"video_frames must be >= 1 (got {video_frames}).")
        self.video_frames = video_frames
        self._funcs: Optional[List[RewardFunc]] = None  # models load on first use, in the process that scores
        self.weights = [float(w) for w in weights]
        if not all(math.isfinite(w) for w in self.weights):
            raise ValueError(f"reward weights must be finite numbers, got {self.weights}.")
        self.normalize = normalize
        self.running = {name: RunningStd() for name in self.names}

    def __call__(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]) -> Dict[str, torch.Tensor]:
        """Score a batch.

        Returns:
            A float32 tensor of shape `(B,)` per reward name, plus `"<name>/<key>"` for extra per-image values a
            reward returns (such as GenEval's `strict`). No total: see `combine`.

        Raises:
            RewardError: A reward raised, returned the wrong number of values, or a value that is not finite.
        """
        scores = {}
        for name, func in zip(self.names, self.funcs):
            try:
                output = self._score(func, images, prompts, metadata)
            except Exception as error:
                raise RewardError(
                    f"Reward {name!r} raised {type(error).__name__}: {error} (batch of {len(prompts)} images; "
                    f"first prompt {prompts[0]!r})."
                ) from error
            extras = {}
            if isinstance(output, Mapping):
                if "scores" not in output:
                    raise RewardError(f"Reward {name!r} returned a dict without 'scores': keys {sorted(output)}.")
                extras = {k: v for k, v in output.items() if k != "scores"}
                output = output["scores"]
            scores[name] = _validate(name, output, prompts)
            for key, values in extras.items():
                scores[f"{name}/{key}"] = _validate(f"{name}/{key}", values, prompts)
        return scores

    def _score(self, func: RewardFunc, images: torch.Tensor, prompts: List[str], metadata: List[dict]):
        if images.dim() == 5 and not takes_video(func):
            return score_frames(func, images, prompts, metadata, self.video_frames)
        if images.dim() == 4 and takes_video(func):
            raise ValueError("it scores videos, and this pipeline makes images")
        return func(images, prompts, metadata)

    @property
    def funcs(self) -> List[RewardFunc]:
        if self._funcs is None:
            self._funcs = [load_reward(r, **self.options) for r in self.specs]
        return self._funcs

    def combine(self, scores: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the rewards of a whole iteration (all processes), updating the running stds."""
        total = torch.zeros_like(scores[self.names[0]])
        for name, weight in zip(self.names, self.weights):
            values = scores[name]
            if self.normalize:
                self.running[name].update(values)
                values = values / max(self.running[name].std, 1e-8)
            total = total + weight * values
        if not torch.isfinite(total).all():
            raise RewardError(
                f"The weighted sum of the rewards is not finite in float32 (weights {dict(zip(self.names, self.weights))}): "
                "lower the weights, or use normalize_rewards=True."
            )
        return total

    def state_dict(self) -> dict:
        return {name: running.state_dict() for name, running in self.running.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, running in self.running.items():
            running.load_state_dict(state[name])


def rewards_of(funcs, config, device, weighted: bool = False) -> WeightedRewards:
    """`funcs` (names or callables) as the run's `WeightedRewards` (`NFTConfig`'s reward device, dtype, batch size
    and video frames); with `weighted`, also its `reward_weights` and `normalize_rewards` (the training rewards)."""
    weights, normalize = (config.reward_weights, config.normalize_rewards) if weighted else (None, False)
    return WeightedRewards(funcs, weights, normalize, device=config.reward_device or device, dtype=config.reward_dtype,
                           batch_size=config.reward_batch_size, video_frames=config.reward_frames)


def _validate(name: str, values, prompts: List[str]) -> torch.Tensor:
    try:
        if isinstance(values, torch.Tensor) and (values.is_complex() or values.is_meta):
            raise TypeError(f"a {'complex' if values.is_complex() else 'meta-device'} tensor")
        # Checked in float32, the dtype training uses: 1e39 is finite in float64 and inf in float32.
        values = torch.as_tensor(
            values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=torch.float32
        ).flatten()
    except (TypeError, ValueError, RuntimeError) as error:
        raise RewardError(f"Reward {name!r} must return a sequence of real floats, got {error}.") from error
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
            f"({len(bad)} non-finite value(s) in float32, the dtype training uses). Rewards must be finite."
        )
    return values
