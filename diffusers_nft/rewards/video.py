"""Rewards on videos `(B, F, 3, H, W)`.

An image reward scores a few frames of each video (evenly spaced, first and last included) and the video gets
their mean. A reward marked with `video_reward` receives the whole videos instead.
"""

from typing import Callable, List

import torch


def video_reward(func: Callable) -> Callable:
    """Mark a reward function as one that takes videos `(B, F, 3, H, W)` rather than images."""
    func.takes_video = True
    return func


def takes_video(func: Callable) -> bool:
    """Whether a reward scores whole videos (see `video_reward`)."""
    return bool(getattr(func, "takes_video", False))


def frame_indices(num_frames: int, count: int) -> List[int]:
    """`count` evenly spaced frames out of `num_frames`, the first and the last included."""
    if count >= num_frames:
        return list(range(num_frames))
    if count == 1:
        return [num_frames // 2]
    return sorted({round(i * (num_frames - 1) / (count - 1)) for i in range(count)})


def score_frames(func: Callable, videos: torch.Tensor, prompts: List[str], metadata: List[dict], count: int):
    """An image reward on `count` frames of each video, averaged per video: `(B,)` (dict outputs per key)."""
    frames = frame_indices(videos.shape[1], count)
    images = videos[:, frames].flatten(0, 1)
    k = len(frames)
    output = func(images, [p for p in prompts for _ in range(k)], [m for m in metadata for _ in range(k)])

    def mean(values):
        return torch.as_tensor(values, dtype=torch.float32).view(len(videos), k).mean(dim=1)

    if isinstance(output, dict):
        return {key: mean(values) for key, values in output.items()}
    return mean(output)


@video_reward
def temporal_consistency(videos: torch.Tensor, prompts, metadata) -> torch.Tensor:
    """1 minus the mean absolute change between consecutive frames (at 32 px), in [0, 1]: higher is steadier.

    A static video scores 1: use it beside a reward for the content, not alone.
    """
    small = torch.nn.functional.interpolate(videos.flatten(0, 1).float(), size=(32, 32), mode="area")
    small = small.view(*videos.shape[:2], 3, 32, 32)
    if small.shape[1] < 2:
        return torch.ones(len(videos))
    return 1 - (small[:, 1:] - small[:, :-1]).abs().mean(dim=(1, 2, 3, 4))
