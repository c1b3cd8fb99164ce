"""Lumina-Image 2.0 (`Lumina2Pipeline`): a Gemma-2 text encoder, and a transformer that runs on reversed time
(`t = 1 - sigma`) and predicts `x0 - eps`, the negated velocity."""

from typing import List

import numpy as np
import torch

from .base import Conditioning, PipelineFamily


class Lumina2Family(PipelineFamily):
    """Lumina-Image 2.0: 2-D latents, Gemma-2 prompt embeddings with their attention mask."""

    pipeline_class_names = ("Lumina2Pipeline", "Lumina2Text2ImgPipeline")
    card_tags = ("lumina2", "lumina-image-2.0")
    default_lora_targets = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0")
    default_max_sequence_length = 256  # Lumina2Pipeline's default

    def schedule_sigmas(self, num_steps: int) -> np.ndarray:
        return np.linspace(1.0, 1 / num_steps, num_steps)  # what Lumina2Pipeline passes to its scheduler

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        prompt_embeds, attention_mask, _, _ = self.pipeline.encode_prompt(
            prompts, do_classifier_free_guidance=False, device=device, max_sequence_length=max_sequence_length
        )
        return {"encoder_hidden_states": prompt_embeds, "encoder_attention_mask": attention_mask}

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype = self.transformer.dtype
        prediction = self.model(
            hidden_states=latents.to(dtype),
            timestep=1 - sigma.float(),
            encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
            encoder_attention_mask=cond["encoder_attention_mask"],
            return_dict=False,
        )[0]
        return -prediction.float()
