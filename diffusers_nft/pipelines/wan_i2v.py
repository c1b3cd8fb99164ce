"""Wan 2.1 / 2.2 image-to-video (`WanImageToVideoPipeline`): the text-to-video family whose transformer also takes,
on its channels, the first frame's VAE latents (the rest of the video zeros) behind a mask of the frames given,
and, for Wan 2.1, the image's CLIP features."""

from typing import Any, Dict, List, Optional, Tuple

import torch

from .base import SOURCE, Conditioning
from .wan import WanFamily


class WanImageToVideoFamily(WanFamily):
    """Wan image-to-video: every prompt has a first frame (`--image_column`). Wan 2.2 A14B's two experts train as
    in text-to-video. Wan 2.2 TI2V-5B's image mode (`expand_timesteps`) is refused: there the first latent frame is
    the image itself at every step, not something the model predicts."""

    pipeline_class_names = ("WanImageToVideoPipeline",)
    pipeline_tag = "image-to-video"
    conditioning = {"image": 1}
    required_conditioning = ("image",)
    conditioning_shared_by_call = True  # the pipeline's `image` is every prompt's of the call

    def __init__(self, pipeline, distilled_guidance_scale: float = 3.5, num_frames: Optional[int] = None):
        if pipeline.config.get("expand_timesteps", False):
            raise ValueError("WanImageToVideoPipeline with expand_timesteps (Wan 2.2 TI2V-5B) keeps the first latent "
                             "frame fixed to the image rather than predicting it, which this family does not train. "
                             "Train a Wan 2.1 or Wan 2.2 A14B image-to-video checkpoint, or TI2V-5B as text-to-video "
                             "with WanPipeline.")
        super().__init__(pipeline, distilled_guidance_scale, num_frames)

    def latent_shape(self, resolution: int) -> Tuple[int, ...]:
        _, frames, side, _ = super().latent_shape(resolution)
        return (self.pipeline.vae.config.z_dim, frames, side, side)  # the transformer's input adds the condition

    @torch.no_grad()
    def encode_conditioning(self, values: List[Dict[str, Any]], device: torch.device,
                            prompts: Optional[List[str]] = None) -> Conditioning:
        """The first frames as the pipeline takes them: the VAE's mode of `[image, zeros...]`, normalised, behind a
        mask of the frames given (4 channels: one per frame of a latent frame), and Wan 2.1's CLIP features."""
        pipe, vae = self.pipeline, self.pipeline.vae
        images = [v["image"] for v in values]
        pixels = pipe.video_processor.preprocess(images, height=images[0].height, width=images[0].width)
        pixels = pixels.to(device, torch.float32).unsqueeze(2)
        video = torch.cat([pixels, pixels.new_zeros(pixels.shape[0], 3, self.frames - 1, *pixels.shape[3:])], dim=2)
        latents = vae.encode(video.to(vae.dtype)).latent_dist.mode().float()
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents)
        latents = (latents - mean) * (1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents))
        cond = {"video_condition": torch.cat([self._first_frame_mask(latents), latents], dim=1)}
        if self.transformer.config.get("image_dim") is not None:  # Wan 2.1: CLIP's penultimate hidden states
            cond["image_embeds"] = pipe.encode_image(images, device).float()
        return cond

    def _first_frame_mask(self, latents: torch.Tensor) -> torch.Tensor:
        """1 on the given (first) frame, 0 on the others, folded 4 video frames to a latent frame, as the pipeline."""
        batch, _, latent_frames, height, width = latents.shape
        per_latent = self.pipeline.vae_scale_factor_temporal
        mask = latents.new_zeros(batch, 1, self.frames, height, width)
        mask[:, :, 0] = 1
        mask = torch.cat([mask[:, :, :1].repeat_interleave(per_latent, dim=2), mask[:, :, 1:]], dim=2)
        return mask.view(batch, latent_frames, per_latent, height, width).transpose(1, 2)

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        source = cond[SOURCE]
        hidden = torch.cat([latents, source["video_condition"].to(latents)], dim=1)
        extra = {"encoder_hidden_states_image": source["image_embeds"].to(latents.device)} \
            if "image_embeds" in source else {}
        return self._transformer(hidden, sigma, cond, **extra)
