"""Qwen-Image (`QwenImagePipeline`): Qwen2.5-VL prompt embeddings with their mask, 2x2-packed latents of a
video-shaped VAE (one frame), the image shapes the rotary embedding needs, and the resolution-dependent shift."""

import math
from typing import List

import numpy as np
import torch

from .base import JOINT_ATTENTION_TARGETS, Conditioning, PackedLatentsFamily


class QwenImageFamily(PackedLatentsFamily):
    """Qwen-Image: an MMDiT on packed latents `(tokens, 4 * channels)`, conditioned on masked Qwen2.5-VL states."""

    pipeline_class_names = ("QwenImagePipeline",)
    default_lora_targets = JOINT_ATTENTION_TARGETS
    default_max_sequence_length = 512  # QwenImagePipeline's default

    def schedule_sigmas(self, num_steps: int) -> np.ndarray:
        return np.linspace(1.0, 1 / num_steps, num_steps)  # what QwenImagePipeline passes to its scheduler

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        embeds, mask = self.pipeline.encode_prompt(prompts, device=device, max_sequence_length=max_sequence_length)
        if mask is None:  # the pipeline drops an all-ones mask; rows are kept with theirs so they can be regrouped
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return {"encoder_hidden_states": embeds, "encoder_hidden_states_mask": mask}

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype, batch = self.transformer.dtype, latents.shape[0]
        side = int(math.isqrt(latents.shape[1]))
        return self.model(
            hidden_states=latents.to(dtype),
            timestep=sigma.float(),  # the pipeline passes timestep / 1000, that is sigma
            guidance=None,
            encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
            encoder_hidden_states_mask=cond["encoder_hidden_states_mask"],
            img_shapes=[[(1, side, side)]] * batch,
            return_dict=False,
        )[0].float()

    def cfg_free_call_kwargs(self) -> dict:
        return {"true_cfg_scale": 1.0}  # Qwen-Image's CFG switch; its guidance_scale is for distilled models

    def guidance_call_kwargs(self, guidance_scale: float) -> dict:
        # true CFG runs only with a negative prompt; the pipeline also rescales the guided prediction's norm
        return {"true_cfg_scale": guidance_scale, **({"negative_prompt": ""} if guidance_scale != 1.0 else {})}

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae, pipe = self.pipeline.vae, self.pipeline
        pixels = int(math.isqrt(latents.shape[1])) * 2 * pipe.vae_scale_factor
        latents = pipe._unpack_latents(latents, pixels, pixels, pipe.vae_scale_factor).to(vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents)
        std = torch.tensor(vae.config.latents_std).view(shape).to(latents)
        images = vae.decode(latents * std + mean, return_dict=False)[0][:, :, 0]
        return (images.float() / 2 + 0.5).clamp(0, 1)
