"""Wan 2.1 / 2.2 text-to-video (`WanPipeline`): 5-D video latents `(C, frames, h, w)`, a UMT5 text encoder, the
UniPC flow scheduler's grid, timesteps `1000 sigma` (per token with Wan 2.2 TI2V's `expand_timesteps`), and a
video VAE whose latents are normalised by per-channel mean and std."""

from typing import List, Optional, Tuple

import torch

from .base import Conditioning, FlowPipelineAdapter

WAN_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # self- and cross-attention of every block


class WanAdapter(FlowPipelineAdapter):
    """Wan text-to-video with one expert. Videos have `num_frames = 4 k + 1` frames (81 by default).

    Raises:
        ValueError: For a Wan 2.2 pipeline with two experts (`transformer_2`), which is not supported yet.
    """

    pipeline_class_names = ("WanPipeline",)
    default_lora_targets = WAN_TARGETS
    default_max_sequence_length = 512  # WanPipeline's default
    default_num_frames = 81

    def __init__(self, pipeline, distilled_guidance_scale: float = 3.5, num_frames: Optional[int] = None):
        super().__init__(pipeline, distilled_guidance_scale, num_frames)
        if getattr(pipeline, "transformer_2", None) is not None:
            raise ValueError(
                "This WanPipeline has two experts (Wan 2.2: `transformer_2` for the low-noise steps). Training both "
                "is not supported yet: load it with transformer_2=None and boundary_ratio=None to train the "
                "high-noise expert on every step, or train a Wan 2.1 / Wan 2.2 TI2V-5B checkpoint."
            )
        frames = self.num_frames or self.default_num_frames
        if (frames - 1) % pipeline.vae_scale_factor_temporal:
            raise ValueError(f"num_frames {frames} must be 4 k + 1 for Wan's VAE (e.g. 5, 9, 33, 81).")

    @property
    def frames(self) -> int:
        return self.num_frames or self.default_num_frames

    def video_frames(self) -> int:
        return self.frames

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        embeds, _ = self.pipeline.encode_prompt(list(prompts), do_classifier_free_guidance=False,
                                                max_sequence_length=max_sequence_length, device=device)
        return {"encoder_hidden_states": embeds}

    def resolution_multiple(self) -> int:
        return self.pipeline.vae_scale_factor_spatial * self.transformer.config.patch_size[1]

    def latent_shape(self, resolution: int) -> Tuple[int, ...]:
        side = resolution // self.pipeline.vae_scale_factor_spatial
        latent_frames = (self.frames - 1) // self.pipeline.vae_scale_factor_temporal + 1
        return (self.transformer.config.in_channels, latent_frames, side, side)

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype = self.transformer.dtype
        timestep = 1000 * sigma.float()
        if self.pipeline.config.get("expand_timesteps", False):  # Wan 2.2 TI2V: one timestep per 2x2 token
            tokens = latents.shape[2] * (latents.shape[3] // 2) * (latents.shape[4] // 2)
            timestep = timestep[:, None].expand(len(latents), tokens)
        return self.model(
            hidden_states=latents.to(dtype),
            timestep=timestep,
            encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
            return_dict=False,
        )[0].float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Videos `(B, frames, 3, H, W)` in [0, 1]."""
        vae = self.pipeline.vae
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, vae.dtype)
        std = torch.tensor(vae.config.latents_std).view(shape).to(latents.device, vae.dtype)
        videos = vae.decode(latents.to(vae.dtype) * std + mean, return_dict=False)[0]  # (B, 3, F, H, W)
        return (videos.float().permute(0, 2, 1, 3, 4) / 2 + 0.5).clamp(0, 1)
