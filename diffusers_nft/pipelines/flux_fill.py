"""FLUX.1 Fill (`FluxFillPipeline`, inpainting): FLUX.1 whose input channels also hold the masked source image's
packed VAE latents and the mask folded into latent patches; the output is the velocity of the latents alone."""

from typing import Any, Dict, List, Optional, Tuple

import torch

from .base import SOURCE, Conditioning
from .flux import FluxFamily


class FluxFillFamily(FluxFamily):
    """FLUX.1 Fill: every prompt has a source image (`--image_column`) and a mask of where to paint
    (`--mask_column`, white = repaint)."""

    pipeline_class_names = ("FluxFillPipeline",)
    card_tags = ("flux", "flux-fill", "inpainting")
    pipeline_tag = "image-to-image"
    conditioning = {"image": 1, "mask_image": 1}
    required_conditioning = ("image", "mask_image")

    def latent_shape(self, resolution: int) -> Tuple[int, ...]:
        side = resolution // self.resolution_multiple()
        return (side * side, self.pipeline.vae.config.latent_channels * 4)  # the transformer's input adds the rest

    @torch.no_grad()
    def encode_conditioning(self, values: List[Dict[str, Any]], device: torch.device,
                            prompts: Optional[List[str]] = None) -> Conditioning:
        """The masked source's VAE latents (the distribution's mode; the pipeline draws a sample, which for a
        trained VAE is the mode to its tiny std) and the mask, packed and stacked on the channels, as the pipeline
        does."""
        pipe, vae = self.pipeline, self.pipeline.vae
        image = pipe.image_processor.preprocess([v["image"] for v in values]).float()
        mask = pipe.mask_processor.preprocess([v["mask_image"] for v in values])
        masked = (image * (1 - mask)).to(device, vae.dtype)
        latents = (vae.encode(masked).latent_dist.mode() - vae.config.shift_factor) * vae.config.scaling_factor
        batch, channels, height, width = latents.shape
        packed = pipe._pack_latents(latents, batch, channels, height, width)
        scale = pipe.vae_scale_factor
        folded = mask[:, 0].view(batch, height, scale, width, scale).permute(0, 2, 4, 1, 3)
        folded = folded.reshape(batch, scale * scale, height, width).to(device, packed.dtype)
        folded = pipe._pack_latents(folded, batch, scale * scale, height, width)
        return {"masked_latents": torch.cat([packed, folded], dim=-1).float()}

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        masked = cond[SOURCE]["masked_latents"].to(latents.device)
        side = int(latents.shape[1] ** 0.5)
        ids = self.pipeline._prepare_latent_image_ids(len(latents), side, side, latents.device, self.transformer.dtype)
        return self._transformer(torch.cat([latents, masked], dim=2), ids, sigma, cond)
