"""The interface between the loop and a training objective, and the facts an objective states about itself.

The loop asks its objective how to sample (policy, CFG scale, sampler), how to weight the scored samples, which
micro-batches to train on, and for each a loss. The model card, the start-up block and the progress bar read the
objective's class attributes (its title, paper, card settings, what a micro-step trains on), so that adding an
objective is one file plus its entry in `diffusers_nft.objectives.OBJECTIVES`.
"""

from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import torch

from ..config import NFTConfig
from ..policy import OLD
from ..schedules import ema_decay


@dataclass
class Sample:
    """A batch of rollouts: the clean latents, and the trajectory for objectives that train on it."""

    latents: torch.Tensor
    states: Optional[torch.Tensor] = None
    log_probs: Optional[torch.Tensor] = None


class Objective:
    """The interface. `needs` lists the `Rollouts` fields it reads; `sampling_policy` and `guidance_scale` say how
    collection samples; calling it on a micro-batch of `micro_batches` returns an output with `.loss`.

    With `monitor=True` it also fills `monitors` (name -> value, see `diffusers_nft.monitors`) for that call.

    Class attributes (the method's facts):
        name: The `NFTConfig.objective` value.
        config_class: Its configuration dataclass (`NFTConfig` or a subclass with the method's own settings).
        title, short: The method's name, and the short one for bars and image labels.
        paper, url, bibtex: Where it was published, and how to cite it.
        about: What it does, for the model card.
        cfg_limit: How its LoRA relates to classifier-free guidance, for the card's limitations.
        card_settings: The config fields the card lists beside the shared ones.
        trained_on: What one training micro-step trains on, per image, in the singular (the start-up block counts
            them: "9 noise levels", "1 noise level").
    """

    name: str = ""
    config_class = NFTConfig
    title: str = ""
    short: str = ""
    paper: str = ""
    url: str = ""
    bibtex: str = ""
    about: str = ""
    cfg_limit: str = ""
    card_settings: Tuple[str, ...] = ()
    trained_on: str = ""
    needs: tuple = ()
    sampling_policy: str = OLD
    guidance_scale: float = 1.0

    def __init__(self):
        self.monitors = {}

    @classmethod
    def from_config(cls, config: NFTConfig, *, family, policy, sampling_sigmas: torch.Tensor) -> "Objective":
        """The objective with the run's settings."""
        raise NotImplementedError

    @classmethod
    def evaluation_guidance(cls, config: NFTConfig) -> float:
        """The CFG scale of the run's evaluation images, grids, card images and card snippet: none by default (the
        DiffusionNFT release evaluates CFG-free)."""
        return 1.0

    @classmethod
    def sampling_words(cls, config: NFTConfig) -> str:
        """How rollouts sample, in words, for the start-up block: `"10 dpm_solver steps, no CFG"`."""
        raise NotImplementedError

    def sample(self, velocity, noise: torch.Tensor, step_noise) -> Sample:
        raise NotImplementedError

    def credit(self, rewards: torch.Tensor, group_ids: torch.Tensor):
        """Each sample's credit from the iteration's total rewards (all processes): NFT's optimality probability r,
        Flow-GRPO's advantage. Returns `(credit, metrics)`."""
        raise NotImplementedError

    def micro_batches(self, rollouts, credit: torch.Tensor, *, batch_size: int, levels: int,
                      generator: torch.Generator) -> Iterator[dict]:
        raise NotImplementedError

    def ema_decay_after(self, micro_step: int, optimizer_step: int, stepped: bool, max_decay: float):
        """The decay of the EMA update after micro-step `micro_step` (0-based, within the iteration), or None for
        none. `optimizer_step` counts the steps taken so far, `stepped` says whether this micro-step ended one. By
        default after every optimizer step (the DiffusionNFT release): `schedules.ema_decay(optimizer_step)`."""
        return ema_decay(optimizer_step, max_decay) if stepped else None

    def metrics(self, out) -> Dict[str, float]:
        """The logged values of one micro-step's output (averaged over the iteration by the loop)."""
        raise NotImplementedError

    def __call__(self, *, monitor: bool = False, **batch):
        raise NotImplementedError


def cfg_words(guidance_scale: float) -> str:
    return f"CFG {guidance_scale:g}" if guidance_scale > 1 else "no CFG"
