"""HunyuanVideo 1.5 text-to-video (`HunyuanVideo15Pipeline`): 5-D video latents, a Qwen2.5-VL text encoder beside
a ByT5 glyph encoder, and a transformer that takes the latents with a conditioning image's latents and mask
appended along the channels (zeros for text-to-video) and 729 image-embedding tokens (zeros, masked out for
text-to-video). Timesteps are `1000 sigma` on a shifted uniform grid; guidance comes from a guider component.

The pipeline has no `callback_on_step_end` (so it cannot be traced) and no `load_lora_weights`: the LoRA file is the
one `save_lora_weights` would write, loaded with `pipe.transformer.load_lora_adapter(folder, weight_name=...,
prefix="transformer")`.
"""

from typing import List, Tuple

import numpy as np
import torch

from .base import Conditioning, VideoFamily, switch_off_guiders

HUNYUAN_VIDEO15_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


class HunyuanVideo15Family(VideoFamily):
    """HunyuanVideo 1.5 text-to-video. Videos have `num_frames = 4 k + 1` frames (121 by default)."""

    pipeline_class_names = ("HunyuanVideo15Pipeline",)
    default_lora_targets = HUNYUAN_VIDEO15_TARGETS
    default_num_frames = 121  # HunyuanVideo15Pipeline's default
    image_tokens_count = 729  # the pipeline's `vision_num_semantic_tokens`
    max_prompts_per_call = 1  # its VAE decodes one video at a time (a batch fails in the causal attention mask)

    def __init__(self, pipeline, distilled_guidance_scale: float = 3.5, num_frames=None):
        super().__init__(pipeline, distilled_guidance_scale, num_frames)
        switch_off_guiders(pipeline)  # its call has no guidance switch: the guider guides whatever it is told

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        """Both encoders' states and masks; the pipeline's text lengths are fixed (1000 and 256 tokens, trimmed to
        the longest prompt), so `max_sequence_length` is not used."""
        embeds, mask, embeds_2, mask_2 = self.pipeline.encode_prompt(
            prompt=list(prompts), device=device, dtype=self.transformer.dtype, batch_size=len(prompts))
        return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask,
                "encoder_hidden_states_2": embeds_2, "encoder_attention_mask_2": mask_2}

    def resolution_multiple(self) -> int:
        return self.pipeline.vae_scale_factor_spatial * self.transformer.config.patch_size

    def latent_shape(self, resolution: int) -> Tuple[int, ...]:
        side = resolution // self.pipeline.vae_scale_factor_spatial
        return (self.pipeline.num_channels_latents, self.latent_frames(), side, side)

    def image_tokens(self, latent_shape: Tuple[int, ...]) -> int:
        return int(np.prod(latent_shape[1:]))

    def schedule_sigmas(self, num_steps: int) -> np.ndarray:
        return np.linspace(1.0, 0.0, num_steps + 1)[:-1]  # the pipeline's; its scheduler shifts them

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype = self.transformer.dtype
        x = latents.to(dtype)
        b, _, f, h, w = x.shape
        # text-to-video: the conditioning image's latents and mask are zeros, as the pipeline appends them
        hidden = torch.cat([x, torch.zeros_like(x), x.new_zeros(b, 1, f, h, w)], dim=1)
        image_embeds = x.new_zeros(b, self.image_tokens_count, self.transformer.config.image_embed_dim)
        out = self.model(hidden_states=hidden, image_embeds=image_embeds, timestep=(1000 * sigma.float()).to(dtype),
                         return_dict=False, **{k: v for k, v in cond.items()})[0]
        return out.float()

    def cfg_free_call_kwargs(self) -> dict:
        return {}  # the guider is disabled (`switch_off_guiders`)

    def guidance_call_kwargs(self, guidance_scale: float) -> dict:
        if guidance_scale != 1.0:
            raise ValueError("HunyuanVideo15Pipeline guides through its guider component, not a call argument: "
                             "evaluate it without CFG (guidance 1.0), or set pipe.guider yourself.")
        return {}

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Videos `(B, frames, 3, H, W)` in [0, 1]."""
        vae = self.pipeline.vae
        # one video at a time: the VAE's causal attention mask has one row (the pipeline decodes batches of one)
        videos = torch.cat([vae.decode(x[None].to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
                            for x in latents])
        return (videos.float().permute(0, 2, 1, 3, 4) / 2 + 0.5).clamp(0, 1)
