"""DreamLite (`DreamLitePipeline`, `DreamLiteMobilePipeline`): a flow-matching UNet, the one denoiser here that is
not a transformer.

The UNet takes the latents side by side with an image's latents (zeros for text-to-image) along the width, the
timestep `1000 sigma`, the Qwen3-VL states of `"[Generate]: <prompt>"` with their mask, and the image size as time
ids; the velocity is the left half of its output. `DreamLitePipeline` always runs its unconditional branch too, and
at `guidance_scale=1` steps the conditional velocity alone, which is what this family trains; the Mobile pipeline
has CFG distilled away. Both classes take one prompt per call and no `latents`, and have no `load_lora_weights`:
the LoRA lives on the UNet and loads with `pipe.unet.load_lora_adapter(folder, weight_name=..., prefix="unet")`.
"""

import inspect
from typing import List, Tuple

import numpy as np
import torch

from .base import Conditioning, PipelineFamily

# The UNet's attention projections (self- and cross-attention of its transformer blocks).
DREAMLITE_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
PROMPT_PREFIX = "[Generate]: "  # how the pipeline asks its text encoder for text-to-image


class DreamLiteFamily(PipelineFamily):
    """DreamLite text-to-image, with its UNet (`unet`)."""

    pipeline_class_names = ("DreamLitePipeline", "DreamLiteMobilePipeline")
    default_lora_targets = DREAMLITE_TARGETS
    default_max_sequence_length = 200  # the pipelines' default
    max_prompts_per_call = 1  # the pipelines take one prompt per call

    @property
    def unet(self) -> torch.nn.Module:
        return self.pipeline.unet

    @property
    def guided(self) -> bool:
        """Whether the class has CFG (DreamLitePipeline); the Mobile one ignores `guidance_scale` (default None)."""
        return inspect.signature(type(self.pipeline).__call__).parameters["guidance_scale"].default is not None

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        """The states and mask of each prompt as the pipeline encodes it (padded to the longest: the UNet's
        cross-attention reads the mask)."""
        embeds, mask = self.pipeline.encode_prompt(
            mode="generate", prompts=[PROMPT_PREFIX + p for p in prompts], device=device,
            dtype=self.pipeline.text_encoder.dtype, max_sequence_length=max_sequence_length)
        return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}

    def latent_shape(self, resolution: int) -> Tuple[int, ...]:
        side = resolution // self.pipeline.vae_scale_factor
        return (self.pipeline.vae.config.latent_channels, side, side)

    def resolution_multiple(self) -> int:
        """The VAE's downscaling times the UNet's (one halving per block after the first)."""
        return self.pipeline.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def schedule_sigmas(self, num_steps: int) -> np.ndarray:
        return np.linspace(1.0, 1.0 / num_steps, num_steps)

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The left half of the UNet's output on `[latents | zeros]` (no image: text-to-image)."""
        dtype, width = self.unet.dtype, latents.shape[-1]
        pixels = [side * self.pipeline.vae_scale_factor for side in (width, latents.shape[-2])]  # (W, H)
        time_ids = torch.tensor([pixels], device=latents.device, dtype=dtype).expand(latents.shape[0], 2)
        model_input = torch.cat([latents, torch.zeros_like(latents)], dim=3).to(dtype)
        out = self.model(model_input, timestep=(sigma * 1000).to(dtype),
                         encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
                         encoder_attention_mask=cond["encoder_attention_mask"],
                         added_cond_kwargs={"time_ids": time_ids}, return_dict=False)[0]
        return out[..., :width].float()

    def cfg_free_call_kwargs(self) -> dict:
        return {"guidance_scale": 1.0} if self.guided else {}

    def guidance_call_kwargs(self, guidance_scale: float) -> dict:
        if guidance_scale != 1.0 and not self.guided:
            raise ValueError(f"{type(self.pipeline).__name__} has CFG distilled away (it ignores guidance_scale): "
                             "use guidance 1.0.")
        return {"guidance_scale": guidance_scale} if self.guided else {}

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The tiny autoencoder's images (the pipeline's scaling, and its shift where the VAE has one)."""
        vae = self.pipeline.vae
        shift = getattr(vae.config, "shift_factor", 0.0) or 0.0
        images = vae.decode((latents / vae.config.scaling_factor + shift).to(vae.dtype), return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0, 1)
