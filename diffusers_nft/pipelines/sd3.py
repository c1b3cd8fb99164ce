"""Stable Diffusion 3 and 3.5 (`StableDiffusion3Pipeline`)."""

from typing import List

import torch

from .base import JOINT_ATTENTION_TARGETS, Conditioning, PipelineFamily


class SD3Family(PipelineFamily):
    """SD3/SD3.5: joint-attention MMDiT on 2-D latents, CLIP-L + CLIP-G + T5 conditioning."""

    pipeline_class_names = ("StableDiffusion3Pipeline",)
    card_tags = ("sd3", "sd3.5", "stable-diffusion-3")
    # The release's 8 projections; SD3.5's dual-attention `attn2` layers get LoRA only when named explicitly.
    default_lora_targets = JOINT_ATTENTION_TARGETS
    default_max_sequence_length = 128  # the release's T5 length (SD3 attends over the padding tokens too)

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

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype = self.transformer.dtype
        return self.model(
            hidden_states=latents.to(dtype),
            timestep=sigma.float() * 1000,  # float32: bf16 would turn 0.91335 into 916 of 1000
            encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
            pooled_projections=cond["pooled_projections"].to(dtype),
            return_dict=False,
        )[0].float()
