"""Stable Diffusion 3 / 3.5 with a ControlNet (`StableDiffusion3ControlNetPipeline`): the frozen ControlNet reads the
latents, the timestep and the control image's VAE latents, and its block outputs join the transformer's blocks.
LoRA trains the transformer; the ControlNet stays as it is."""

from typing import Any, Dict, List, Optional

import torch

from .base import SOURCE, Conditioning
from .sd3 import SD3Family


class SD3ControlNetFamily(SD3Family):
    """SD3 / 3.5 ControlNets (canny, depth, blur, ...): every prompt has a control image (`--control_column`). The
    ControlNet acts at every step with the pipeline's defaults (`controlnet_conditioning_scale` 1.0, from the first
    step to the last); several ControlNets at once (`SD3MultiControlNetModel`) are refused."""

    pipeline_class_names = ("StableDiffusion3ControlNetPipeline",)
    card_tags = SD3Family.card_tags + ("controlnet",)
    conditioning = {"control_image": 1}
    required_conditioning = ("control_image",)

    def __init__(self, pipeline, distilled_guidance_scale: float = 3.5, num_frames: Optional[int] = None):
        from diffusers import SD3ControlNetModel

        if not isinstance(pipeline.controlnet, SD3ControlNetModel):
            raise ValueError(f"{type(pipeline.controlnet).__name__}: this family trains with one SD3ControlNetModel; "
                             "several ControlNets at once are not supported yet. Load the pipeline with one.")
        super().__init__(pipeline, distilled_guidance_scale, num_frames)
        pipeline.controlnet.requires_grad_(False)  # frozen: gradients reach the transformer's LoRA alone

    @property
    def controlnet(self) -> torch.nn.Module:
        return self.pipeline.controlnet

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        """SD3's conditioning; the ControlNet's pooled input is zeros where its config says so (InstantX's)."""
        cond = super().encode_prompts(prompts, device, max_sequence_length)
        pooled = cond["pooled_projections"]
        cond["controlnet_pooled_projections"] = torch.zeros_like(pooled) \
            if self.controlnet.config.force_zeros_for_pooled_projection else pooled
        return cond

    @torch.no_grad()
    def encode_conditioning(self, values: List[Dict[str, Any]], device: torch.device,
                            prompts: Optional[List[str]] = None) -> Conditioning:
        """The control images' VAE latents as the pipeline makes them (its sample; here the mode, which for a
        trained VAE is the sample to its tiny std), shifted unless the ControlNet is InstantX's."""
        pipe, vae = self.pipeline, self.pipeline.vae
        images = [v["control_image"] for v in values]
        pixels = pipe.image_processor.preprocess(images, height=images[0].height, width=images[0].width)
        latents = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mode()
        shift = 0.0 if self.controlnet.config.force_zeros_for_pooled_projection else vae.config.shift_factor
        return {"control_latents": ((latents - shift) * vae.config.scaling_factor).float()}

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype, timestep = self.transformer.dtype, sigma.float() * 1000
        text = cond["encoder_hidden_states"].to(dtype)
        control = self.controlnet(
            hidden_states=latents.to(dtype), timestep=timestep,
            encoder_hidden_states=text if self.controlnet.config.joint_attention_dim is not None else None,
            pooled_projections=cond["controlnet_pooled_projections"].to(dtype),
            controlnet_cond=cond[SOURCE]["control_latents"].to(latents.device, dtype), conditioning_scale=1.0,
            return_dict=False,
        )[0]
        return self.model(
            hidden_states=latents.to(dtype), timestep=timestep, encoder_hidden_states=text,
            pooled_projections=cond["pooled_projections"].to(dtype), block_controlnet_hidden_states=control,
            return_dict=False,
        )[0].float()
