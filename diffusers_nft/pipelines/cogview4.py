"""CogView4 (`CogView4Pipeline`): a GLM-4 text encoder and a transformer conditioned on the *unshifted* timestep.

The pipeline spaces timesteps `t` evenly (1000 to 1), passes them to the transformer as they are, and steps the
sample at the shifted noise level `sigma = S(t / 1000)`, where `S` is the scheduler's resolution-dependent time shift
(`k / (k + 1/s - 1)`, with `k = mu` for a linear shift and `e^mu` for an exponential one). A sample at noise level
`sigma` is therefore seen with the timestep `1000 S^-1(sigma) = 1000 sigma / (sigma + k (1 - sigma))`, which is what
this family passes; a fit of the timestep against sigma (the traced family's) would be wrong everywhere but at
`k = 1`. The image is also conditioned on its size and crop, as the pipeline passes them.
"""

import math
from typing import List, Tuple

import numpy as np
import torch

from .base import Conditioning, PipelineFamily

COGVIEW4_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


class CogView4Family(PipelineFamily):
    """CogView4 text-to-image."""

    pipeline_class_names = ("CogView4Pipeline",)
    default_lora_targets = COGVIEW4_TARGETS
    default_max_sequence_length = 1024  # CogView4Pipeline's default

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        embeds, _ = self.pipeline.encode_prompt(list(prompts), do_classifier_free_guidance=False,
                                                max_sequence_length=max_sequence_length, device=device)
        return {"encoder_hidden_states": embeds}

    def image_tokens(self, latent_shape: Tuple[int, ...]) -> int:
        patch = self.transformer.config.patch_size
        return (latent_shape[-1] // patch) * (latent_shape[-2] // patch)

    def schedule_sigmas(self, num_steps: int) -> np.ndarray:
        """The pipeline's: whole-number timesteps from 1000 to 1, over 1000 (its scheduler shifts them)."""
        train = self.pipeline.scheduler.config.num_train_timesteps
        return np.linspace(train, 1.0, num_steps).astype(np.int64).astype(np.float32) / train

    def sampling_mu(self, latent_shape: Tuple[int, ...]) -> float:
        """CogView4's `calculate_shift`: `sqrt(tokens / base) * max_shift + base_shift`."""
        config = self.pipeline.scheduler.config
        ratio = self.image_tokens(latent_shape) / config.get("base_image_seq_len", 256)
        return ratio ** 0.5 * config.get("max_shift", 0.75) + config.get("base_shift", 0.25)

    def timestep(self, sigma: torch.Tensor, latent_shape: Tuple[int, ...]) -> torch.Tensor:
        """The transformer's timestep for samples at noise level `sigma`: `1000 S^-1(sigma)` (see the module)."""
        config = self.pipeline.scheduler.config
        mu = self.sampling_mu(latent_shape)
        k = mu if config.get("time_shift_type", "exponential") == "linear" else math.exp(mu)
        if not config.get("use_dynamic_shifting", False):
            k = config.get("shift", 1.0)  # a static shift: `shift s / (1 + (shift - 1) s)`
        sigma = sigma.double()
        return config.num_train_timesteps * sigma / (sigma + k * (1 - sigma))

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype, batch = self.transformer.dtype, len(latents)
        height, width = (side * self.pipeline.vae_scale_factor for side in latents.shape[-2:])
        sizes = torch.tensor([[height, width]], dtype=dtype, device=latents.device).repeat(batch, 1)
        out = self.model(hidden_states=latents.to(dtype), encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
                         timestep=self.timestep(sigma, latents.shape[1:]).to(dtype), original_size=sizes,
                         target_size=sizes, crop_coords=torch.zeros_like(sizes), return_dict=False)[0]
        return out.float()
