"""Stable Diffusion 3 and 3.5 (`StableDiffusion3Pipeline`)."""

from typing import List, Tuple

import torch

from .base import Conditioning, FlowPipelineAdapter


class SD3Adapter(FlowPipelineAdapter):
    """SD3/SD3.5: joint-attention MMDiT on 2-D latents, CLIP-L + CLIP-G + T5 conditioning."""

    pipeline_class_names = ("StableDiffusion3Pipeline",)
    # The release targets, plus the SD3.5 dual-attention (`attn2`) twins where a model has them.
    default_lora_targets = (
        "attn.to_q",
        "attn.to_k",
        "attn.to_v",
        "attn.to_out.0",
        "attn.add_q_proj",
        "attn.add_k_proj",
        "attn.add_v_proj",
        "attn.to_add_out",
        "attn2.to_q",
        "attn2.to_k",
        "attn2.to_v",
        "attn2.to_out.0",
    )

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        prompt_embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=device,
            do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
        )
        return {"encoder_hidden_states": prompt_embeds, "pooled_projections": pooled}

    def latent_shape(self, resolution: int) -> Tuple[int, ...]:
        side = resolution // self.pipeline.vae_scale_factor
        return (self.transformer.config.in_channels, side, side)

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype = self.transformer.dtype
        return self.model(
            hidden_states=latents.to(dtype),
            timestep=sigma.to(dtype) * 1000,
            encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
            pooled_projections=cond["pooled_projections"].to(dtype),
            return_dict=False,
        )[0].float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipeline.vae
        latents = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
        images = vae.decode(latents, return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0, 1)
