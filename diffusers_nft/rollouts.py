"""What one process collected in an iteration: clean samples, their prompts' conditioning, groups and rewards."""

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from .pipelines import Conditioning, select_conditioning


@dataclass
class Rollouts:
    """One process's share of an iteration's samples (DiffusionNFT keeps only the final latents).

    Attributes:
        latents: Clean samples x0, `(N, *latent_shape)`.
        cond: Prompt conditioning, one row per prompt of this process.
        row_of_image: `(N,)`: the row of `cond` each sample was drawn for.
        group_ids: `(N,)`: the prompt group of each sample, over the whole iteration (groups may straddle processes).
        rewards: Reward name -> `(N,)` scores of this process's samples.
        thumbnails: `(N, 3, 32, 32)` images for the drift monitors, or None with `monitors=False`.
    """

    latents: torch.Tensor
    cond: Conditioning
    row_of_image: torch.Tensor
    group_ids: torch.Tensor
    rewards: Dict[str, torch.Tensor]
    thumbnails: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.latents)

    def select(self, index: torch.Tensor):
        """The clean latents and the conditioning of the samples `index`."""
        return self.latents[index.to(self.latents.device)], select_conditioning(self.cond, self.row_of_image[index])
