"""Z-Image (`ZImagePipeline`): Qwen3 prompt states without padding (one tensor per prompt), a single-stream DiT
that takes lists of per-image latents with a frame axis, runs on reversed time (`t = 1 - sigma`) and predicts
`x0 - eps`, the negated velocity."""

from typing import List

import numpy as np
import torch

from .base import Conditioning, PipelineFamily


class ZImageFamily(PipelineFamily):
    """Z-Image (Turbo and base): 2-D `AutoencoderKL` latents, attention and feed-forward LoRA."""

    pipeline_class_names = ("ZImagePipeline",)
    default_lora_targets = ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0")
    default_max_sequence_length = 512  # ZImagePipeline's default

    def schedule_sigmas(self, num_steps: int) -> np.ndarray:
        # the pipeline's own default grid, linspace in float32
        return np.array(torch.linspace(1.0, 1 / num_steps, num_steps).tolist())

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        # a copy: ZImagePipeline writes the chat-formatted prompts into the list it is given
        embeds, _ = self.pipeline.encode_prompt(
            list(prompts), do_classifier_free_guidance=False, device=device, max_sequence_length=max_sequence_length
        )
        return {"cap_feats": list(embeds)}

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype = self.transformer.dtype
        frames = list(latents.to(dtype).unsqueeze(2).unbind(dim=0))
        prediction = self.model(
            frames, 1 - sigma.float(), [c.to(dtype) for c in cond["cap_feats"]], return_dict=False
        )[0]
        return -torch.stack([p.float() for p in prediction]).squeeze(2)

    def cfg_free_call_kwargs(self) -> dict:
        # ZImagePipeline guides with `pos + scale * (pos - neg)`: 0, not 1, turns it off
        return {"guidance_scale": 0.0}

    def guidance_call_kwargs(self, guidance_scale: float) -> dict:
        return {"guidance_scale": guidance_scale - 1.0}  # its scale s is our g - 1: pos + s (pos - neg)
