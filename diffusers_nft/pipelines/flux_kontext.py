"""FLUX.1 Kontext (`FluxKontextPipeline`): FLUX.1 whose sequence also holds the source image's packed VAE latents,
at rotary ids of their own (first axis 1); the velocity is read off the output's first tokens."""

import math
from typing import Any, Dict, List, Optional

import torch

from .base import SOURCE, Conditioning
from .flux import FluxFamily


class FluxKontextFamily(FluxFamily):
    """FLUX.1 Kontext: image editing with one source image per prompt (`--image_column`). Without one it is FLUX.1
    text-to-image, as the pipeline is."""

    pipeline_class_names = ("FluxKontextPipeline",)
    card_tags = ("flux", "flux-kontext", "image-editing")
    pipeline_tag = "image-to-image"
    conditioning = {"image": 1}

    def call_kwargs(self, resolution: int, num_steps: int, max_sequence_length: int,
                    guidance_scale: float = 1.0) -> dict:
        # The pipeline resizes the output to `max_area` (1024^2 by default) and the source to a preferred Kontext
        # size; the run's own size for both keeps the call where training was.
        return {**super().call_kwargs(resolution, num_steps, max_sequence_length, guidance_scale),
                "max_area": resolution * resolution, "_auto_resize": False}

    @torch.no_grad()
    def encode_conditioning(self, values: List[Dict[str, Any]], device: torch.device,
                            prompts: Optional[List[str]] = None) -> Conditioning:
        """The source images' VAE latents (the distribution's mode, as the pipeline takes them), packed."""
        if not values or "image" not in values[0]:
            return {}
        pipe, vae = self.pipeline, self.pipeline.vae
        pixels = pipe.image_processor.preprocess([v["image"] for v in values]).to(device, vae.dtype)
        latents = vae.encode(pixels).latent_dist.mode()
        latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        batch, channels, height, width = latents.shape
        return {"image_latents": pipe._pack_latents(latents, batch, channels, height, width).float()}

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        source = cond.get(SOURCE, {}).get("image_latents")
        if source is None:
            return super().predict_velocity(latents, sigma, cond)
        dtype, device, batch = self.transformer.dtype, latents.device, len(latents)
        side, source_side = int(math.isqrt(latents.shape[1])), int(math.isqrt(source.shape[1]))
        ids = self.pipeline._prepare_latent_image_ids(batch, side, side, device, dtype)
        source_ids = self.pipeline._prepare_latent_image_ids(batch, source_side, source_side, device, dtype)
        source_ids[..., 0] = 1
        hidden = torch.cat([latents, source.to(device)], dim=1)
        return self._transformer(hidden, torch.cat([ids, source_ids]), sigma, cond)[:, : latents.shape[1]]
