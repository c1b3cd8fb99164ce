"""FLUX.1 with a ControlNet (`FluxControlNetPipeline`): the frozen ControlNet reads the latents, the timestep, the
prompt and the control image (InstantX-style: its packed VAE latents; XLabs-style: its pixels), and its block and
single-block outputs join the transformer's. LoRA trains the transformer; the ControlNet stays as it is."""

import math
from typing import Any, Dict, List, Optional

import torch

from .base import SOURCE, Conditioning
from .flux import FluxFamily


class FluxControlNetFamily(FluxFamily):
    """FLUX.1 ControlNets: every prompt has a control image (`--control_column`). The ControlNet acts at every step
    with the pipeline's defaults (`controlnet_conditioning_scale` 1.0, from the first step to the last). Union
    ControlNets (which need a `control_mode`) and several ControlNets at once are refused."""

    pipeline_class_names = ("FluxControlNetPipeline",)
    card_tags = FluxFamily.card_tags + ("controlnet",)
    conditioning = {"control_image": 1}
    required_conditioning = ("control_image",)

    def __init__(self, pipeline, distilled_guidance_scale: float = 3.5, num_frames: Optional[int] = None):
        from diffusers import FluxControlNetModel

        controlnet = pipeline.controlnet
        if not isinstance(controlnet, FluxControlNetModel) or controlnet.config.num_mode is not None:
            raise ValueError(f"{type(controlnet).__name__}: this family trains with one FluxControlNetModel without "
                             "modes; union ControlNets (control_mode) and several at once are not supported yet.")
        super().__init__(pipeline, distilled_guidance_scale, num_frames)
        controlnet.requires_grad_(False)  # frozen: gradients reach the transformer's LoRA alone

    @property
    def controlnet(self) -> torch.nn.Module:
        return self.pipeline.controlnet

    @torch.no_grad()
    def encode_conditioning(self, values: List[Dict[str, Any]], device: torch.device,
                            prompts: Optional[List[str]] = None) -> Conditioning:
        """The control images as the pipeline gives them: pixels in [-1, 1] for XLabs ControlNets (an input hint
        block), else their VAE latents (the mode; the pipeline's sample of a trained VAE is that to its std),
        shifted, scaled and packed."""
        pipe, vae = self.pipeline, self.pipeline.vae
        images = [v["control_image"] for v in values]
        pixels = pipe.image_processor.preprocess(images, height=images[0].height, width=images[0].width)
        pixels = pixels.to(device, vae.dtype)
        if self.controlnet.input_hint_block is not None:
            return {"control": pixels.float()}
        latents = (vae.encode(pixels).latent_dist.mode() - vae.config.shift_factor) * vae.config.scaling_factor
        batch, channels, height, width = latents.shape
        return {"control": pipe._pack_latents(latents, batch, channels, height, width).float()}

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype, batch, side = self.transformer.dtype, latents.shape[0], int(math.isqrt(latents.shape[1]))
        ids = self.pipeline._prepare_latent_image_ids(batch, side, side, latents.device, dtype)
        blocks, single_blocks = self.controlnet(
            hidden_states=latents.to(dtype), controlnet_cond=cond[SOURCE]["control"].to(latents.device, dtype),
            controlnet_mode=None, conditioning_scale=1.0, timestep=sigma.float(),
            guidance=self._guidance(self.controlnet, batch, latents.device),
            pooled_projections=cond["pooled_projections"].to(dtype),
            encoder_hidden_states=cond["encoder_hidden_states"].to(dtype), txt_ids=cond["txt_ids"][0], img_ids=ids,
            return_dict=False,
        )
        return self._transformer(latents, ids, sigma, cond, controlnet_block_samples=blocks,
                                 controlnet_single_block_samples=single_blocks,
                                 controlnet_blocks_repeat=self.controlnet.input_hint_block is not None)
