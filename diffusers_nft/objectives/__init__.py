"""Training objectives: what an iteration samples and what its micro-steps optimise (`base.Objective`).

- `NFTObjective` (`nft.py`), DiffusionNFT's: CFG-free ODE samples from the old policy; the contrastive loss.
- `FlowGRPOObjective` (`flow_grpo.py`), Flow-GRPO's: SDE samples with CFG; PPO on the recorded transitions.

An objective is one file and its entry in `OBJECTIVES`; the loop, the card and the start-up block read its class.
"""

from typing import Optional

import torch

from .base import Objective, Sample
from .flow_grpo import FlowGRPOObjective, FlowGRPOOutput
from .nft import NFTObjective

OBJECTIVES = {cls.name: cls for cls in (NFTObjective, FlowGRPOObjective)}


def objective_class(name: str) -> type:
    """The objective class of `NFTConfig.objective`.

    Raises:
        ValueError: For an unknown name, listing the known ones.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {tuple(OBJECTIVES)} (got {name!r}).")
    return OBJECTIVES[name]


def config_from_values(values: dict):
    """A config from field values, as the class of the objective they name (`FlowGRPOConfig` for
    `objective="flow_grpo"`, else `NFTConfig`), so that the objective's own fields may be among them."""
    return objective_class(values.get("objective", "nft")).config_class(**values)


def resolve_config(config, objective: Optional[str] = None):
    """The config (the default `NFTConfig` when None) for `objective` (else its own), as that objective's config
    class (`FlowGRPOConfig` for Flow-GRPO: its own settings at their defaults), validated."""
    from ..config import NFTConfig, config_for

    config = config if config is not None else NFTConfig()
    name = objective or config.objective
    config = config_for(config, objective_class(name).config_class, name)
    config.validate()
    return config


def build_objective(config, *, family, policy, sampling_sigmas: torch.Tensor) -> Objective:
    """The objective `config.objective` names, with the run's settings."""
    return objective_class(config.objective).from_config(config, family=family, policy=policy,
                                                         sampling_sigmas=sampling_sigmas)


__all__ = ["FlowGRPOObjective", "FlowGRPOOutput", "NFTObjective", "OBJECTIVES", "Objective", "Sample",
           "build_objective", "objective_class", "resolve_config"]
