"""Drift monitors, computed every iteration: the signs of reward hacking that a rising reward hides.

Brightness and saturation drift, collapse of within-group diversity, and inflation of the velocity norm of theta
against the reference model at the same inputs (with the squared velocity distance, the KL estimate of a flow).
Only torch: images are `(N, 3, H, W)` in [0, 1] (videos are passed as their middle frames).
"""

from typing import Dict

import torch

THUMBNAIL = 32  # side of the thumbnails the image monitors read: their cost does not grow with the resolution


def thumbnails(images: torch.Tensor) -> torch.Tensor:
    """`(N, 3, 32, 32)` float32 thumbnails of images `(N, 3, H, W)` or of the middle frames of videos."""
    if images.dim() == 5:
        images = images[:, images.shape[1] // 2]
    return torch.nn.functional.interpolate(images.float(), size=(THUMBNAIL, THUMBNAIL), mode="area")


def image_stats(images: torch.Tensor) -> Dict[str, float]:
    """Mean brightness (the mean of R, G, B) and mean saturation (HSV: `(max - min) / max` per pixel)."""
    high, low = images.max(dim=1).values, images.min(dim=1).values
    saturation = (high - low) / high.clamp_min(1e-6)
    return {"brightness": images.mean().item(), "saturation": saturation.mean().item()}


def group_diversity(images: torch.Tensor, group_ids: torch.Tensor) -> float:
    """The mean pairwise RMS pixel distance between images of one prompt group, averaged over groups."""
    distances = []
    flat = images.flatten(1)
    for group in group_ids.unique():
        members = flat[group_ids == group]
        if len(members) < 2:
            continue
        pairwise = torch.cdist(members, members) / flat.shape[1] ** 0.5
        n = len(members)
        distances.append(pairwise.sum() / (n * (n - 1)))
    return torch.stack(distances).mean().item() if distances else float("nan")


def velocity_stats(v_theta: torch.Tensor, v_ref: torch.Tensor) -> Dict[str, float]:
    """`velocity_norm_ratio`: mean of `|v_theta| / |v_ref|` per sample; `kl`: mean squared `v_theta - v_ref`."""
    theta, ref = v_theta.detach().float().flatten(1), v_ref.detach().float().flatten(1)
    ratio = theta.norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)
    return {"velocity_norm_ratio": ratio.mean().item(), "kl": (theta - ref).pow(2).mean().item()}
