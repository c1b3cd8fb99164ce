"""What one process collected in an iteration: clean samples, their prompts' conditioning, groups and rewards, and for
objectives that train on the sampler's transitions (Flow-GRPO) the recorded trajectory."""

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from .guidance import empty_prompt_rows
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
        states: `(N, T + 1, *latent_shape)` latents at every grid level (Flow-GRPO), else None.
        log_probs: `(N, T)` log-probabilities of each recorded transition under the sampling policy, else None.
        uncond: The empty prompt's conditioning (one row) when the rollouts used CFG, else None.
    """

    latents: torch.Tensor
    cond: Conditioning
    row_of_image: torch.Tensor
    group_ids: torch.Tensor
    rewards: Dict[str, torch.Tensor]
    thumbnails: Optional[torch.Tensor] = None
    states: Optional[torch.Tensor] = None
    log_probs: Optional[torch.Tensor] = None
    uncond: Optional[Conditioning] = None

    def __len__(self) -> int:
        return len(self.latents)

    def select(self, index: torch.Tensor):
        """The clean latents and the conditioning of the samples `index`."""
        return self.latents[index.to(self.latents.device)], select_conditioning(self.cond, self.row_of_image[index])

    def select_uncond(self, n: int):
        """The empty prompt's conditioning for `n` samples (None without CFG)."""
        if self.uncond is None:
            return None
        return empty_prompt_rows(self.uncond, n)
