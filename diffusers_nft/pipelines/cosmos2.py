"""Cosmos 2 text-to-image (`Cosmos2TextToImagePipeline`), read as the rectified flow it is.

The pipeline keeps variance-exploding latents `y = x0 + s eps` on Karras sigmas `s` from 80 down to 0.002, and
feeds its transformer `y / (1 + s)` at the time `t = s / (1 + s)`, then takes `y - t * out` for the clean image.
With `x = y / (1 + s) = (1 - t) x0 + t eps`, that is the rectified-flow state at time `t`, and the transformer's
output is its velocity `eps - x0`; the pipeline's Euler step in `y` is the Euler step in `x` on the grid
`t_i = s_i / (1 + s_i)`. So this family samples and trains in `x` on that grid, and starts from `t_0 eps` where the
pipeline starts from `80 eps` (`start_latents`). The pipeline's last step is a no-op at `s = 0.002`; this family's
goes on to `t = 0`. Cosmos 2 has no `save_lora_weights`: its LoRA loads with
`pipe.transformer.load_lora_adapter(folder, weight_name=..., prefix="transformer")`.
"""

import copy
from typing import List, Tuple

import numpy as np
import torch

from .base import Conditioning, PipelineFamily

COSMOS2_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


class Cosmos2Family(PipelineFamily):
    """Cosmos 2 text-to-image (Cosmos-Predict2)."""

    pipeline_class_names = ("Cosmos2TextToImagePipeline",)
    default_lora_targets = COSMOS2_TARGETS
    default_max_sequence_length = 512  # the pipeline's default

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        embeds, _ = self.pipeline.encode_prompt(list(prompts), do_classifier_free_guidance=False,
                                                max_sequence_length=max_sequence_length, device=device)
        return {"encoder_hidden_states": embeds}

    def latent_shape(self, resolution: int) -> Tuple[int, ...]:
        side = resolution // self.pipeline.vae_scale_factor_spatial
        return (self.transformer.config.in_channels, 1, side, side)  # one latent frame

    def resolution_multiple(self) -> int:
        return self.pipeline.vae_scale_factor_spatial * self.transformer.config.patch_size[-1]

    def sampling_sigmas(self, num_steps: int, latent_shape: Tuple[int, ...]) -> torch.Tensor:
        """`t = s / (1 + s)` of the pipeline's Karras sigmas (`set_timesteps(sigmas=linspace(0, 1, N))`), then 0."""
        scheduler = copy.deepcopy(self.pipeline.scheduler)
        scheduler.set_timesteps(sigmas=np.linspace(0, 1, num_steps), device="cpu")
        s = scheduler.sigmas[:num_steps].double()
        return torch.cat([s / (1 + s), s.new_zeros(1)])

    def start_latents(self, noise: torch.Tensor) -> torch.Tensor:
        """The pipeline's start `sigma_max eps`, as a rectified-flow state: `sigma_max / (1 + sigma_max) eps`."""
        sigma_max = self.pipeline.scheduler.config.sigma_max
        return noise * (sigma_max / (1 + sigma_max))

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype = self.transformer.dtype
        height, width = (side * self.pipeline.vae_scale_factor_spatial for side in latents.shape[-2:])
        padding_mask = latents.new_zeros(1, 1, height, width, dtype=dtype)
        out = self.model(hidden_states=latents.to(dtype), timestep=sigma.to(dtype),
                         encoder_hidden_states=cond["encoder_hidden_states"].to(dtype), padding_mask=padding_mask,
                         return_dict=False)[0]
        return out.float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipeline.vae
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
        inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents.device, latents.dtype)
        sigma_data = self.pipeline.scheduler.config.sigma_data
        images = vae.decode((latents / inverse_std / sigma_data + mean).to(vae.dtype), return_dict=False)[0]
        return (images[:, :, 0].float() / 2 + 0.5).clamp(0, 1)
