"""FLUX.1 (`FluxPipeline`): packed 2x2 latent patches, rotary image/text ids, resolution-dependent shift, and an
optional guidance embedding (FLUX.1-dev)."""

import math
from typing import List

import numpy as np
import torch

from .base import JOINT_ATTENTION_TARGETS, Conditioning, PackedLatentsFamily


class FluxFamily(PackedLatentsFamily):
    """FLUX.1-dev/schnell style: latents are packed into `(tokens, 4 * channels)` sequences."""

    pipeline_class_names = ("FluxPipeline",)
    card_tags = ("flux", "flux-diffusers")
    default_lora_targets = JOINT_ATTENTION_TARGETS
    default_max_sequence_length = 512  # FluxPipeline's default

    def schedule_sigmas(self, num_steps: int) -> np.ndarray:
        return np.linspace(1.0, 1 / num_steps, num_steps)  # what FluxPipeline passes to its scheduler

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        prompt_embeds, pooled, text_ids = self.pipeline.encode_prompt(
            prompt=prompts, prompt_2=None, device=device, max_sequence_length=max_sequence_length
        )
        # text ids are the same for every prompt; kept per row so that conditioning can be indexed by row
        return {
            "encoder_hidden_states": prompt_embeds,
            "pooled_projections": pooled,
            "txt_ids": text_ids.unsqueeze(0).expand(len(prompts), *text_ids.shape),
        }

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        side = int(math.isqrt(latents.shape[1]))
        img_ids = self.pipeline._prepare_latent_image_ids(len(latents), side, side, latents.device, self.transformer.dtype)
        return self._transformer(latents, img_ids, sigma, cond)

    def _transformer(self, hidden_states: torch.Tensor, img_ids: torch.Tensor, sigma: torch.Tensor,
                     cond: Conditioning, **extra) -> torch.Tensor:
        """The transformer's output on a token sequence with its rotary ids, in float32; `extra`: further inputs
        (a ControlNet's block samples)."""
        dtype, batch = self.transformer.dtype, hidden_states.shape[0]
        guidance = self._guidance(self.transformer, batch, hidden_states.device)
        return self.model(
            hidden_states=hidden_states.to(dtype),
            timestep=sigma.float(),  # FluxTransformer2DModel casts it to its own dtype
            guidance=guidance,
            pooled_projections=cond["pooled_projections"].to(dtype),
            encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
            txt_ids=cond["txt_ids"][0],
            img_ids=img_ids,
            return_dict=False,
            **extra,
        )[0].float()

    def cfg_free_call_kwargs(self) -> dict:
        # FluxPipeline has no CFG unless true_cfg_scale > 1; its guidance_scale is FLUX.1-dev's embedded guidance,
        # which the LoRA was trained with.
        return {"guidance_scale": self.distilled_guidance_scale}

    def guidance_call_kwargs(self, guidance_scale: float) -> dict:
        if guidance_scale == 1.0:
            return self.cfg_free_call_kwargs()
        return {**self.cfg_free_call_kwargs(), "true_cfg_scale": guidance_scale, "negative_prompt": ""}

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae, pipe = self.pipeline.vae, self.pipeline
        pixels = 2 * int(math.isqrt(latents.shape[1])) * pipe.vae_scale_factor
        latents = pipe._unpack_latents(latents, pixels, pixels, pipe.vae_scale_factor)
        latents = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
        images = vae.decode(latents, return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0, 1)
