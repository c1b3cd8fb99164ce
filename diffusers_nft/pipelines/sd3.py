"""Stable Diffusion 3 and 3.5 (`StableDiffusion3Pipeline`)."""

from typing import List

import torch

from .base import JOINT_ATTENTION_TARGETS, Conditioning, FlowPipelineAdapter


class SD3Adapter(FlowPipelineAdapter):
    """SD3/SD3.5: joint-attention MMDiT on 2-D latents, CLIP-L + CLIP-G + T5 conditioning."""

    pipeline_class_names = ("StableDiffusion3Pipeline",)
    # The release targets, plus the SD3.5 dual-attention (`attn2`) twins where a model has them.
    default_lora_targets = JOINT_ATTENTION_TARGETS + (
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

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype = self.transformer.dtype
        return self.model(
            hidden_states=latents.to(dtype),
            timestep=sigma.to(dtype) * 1000,
            encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
            pooled_projections=cond["pooled_projections"].to(dtype),
            return_dict=False,
        )[0].float()
