"""PRXPixel (`PRXPixelPipeline`), read as a rectified flow with unit noise.

PRXPixel denoises RGB pixels (no VAE). Its forward process is `x_t = (1 - t) x0 + t (s eps)` with a noise scale
`s = noise_scale` (2.0): the pipeline starts from `s eps`. Its transformer predicts the clean image, and the pipeline
steps the velocity `v = (x_t - out) / max(t, 0.05)`.

Dividing by `s` gives the rectified flow NFT's loss assumes: `u = x / s` is `(1 - t) (x0 / s) + t eps`, with
velocity `v / s`. So this family samples and trains in `u`, on the pipeline's own sigmas: a rollout starts from
standard noise, which is the pipeline's start divided by `s`, and `decode` multiplies by `s` again. Its Euler rollout
is the pipeline's image. The class has no `load_lora_weights`: its LoRA loads with
`pipe.transformer.load_lora_adapter(folder, weight_name=..., prefix="transformer")`.
"""

from typing import List, Optional, Tuple

import torch

from .base import Conditioning, PipelineFamily

# PRX's attention: a fused image QKV, a fused text KV and the output projection.
PRX_TARGETS = ("img_qkv_proj", "txt_kv_proj", "to_out.0")
MIN_TIME = 0.05  # the pipeline's floor on `t` when it turns the predicted image into a velocity


class PRXPixelFamily(PipelineFamily):
    """PRXPixel text-to-image, in pixel space."""

    pipeline_class_names = ("PRXPixelPipeline",)
    default_lora_targets = PRX_TARGETS

    @property
    def noise_scale(self) -> float:
        return float(self.pipeline.config.noise_scale)

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        """The text encoder's states and attention mask at the pipeline's own token budget (`prompt_max_tokens`);
        `max_sequence_length` is not used."""
        embeds, mask, _, _ = self.pipeline.encode_prompt(list(prompts), device=device,
                                                         do_classifier_free_guidance=False)
        return {"encoder_hidden_states": embeds, "attention_mask": mask}

    def sampling_mu(self, latent_shape: Tuple[int, ...]) -> Optional[float]:
        return None  # the pipeline sets its timesteps without a resolution shift

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The velocity of `u = x / s`: the pipeline's velocity of `x = s u`, divided by `s`."""
        dtype = self.transformer.dtype
        pixels = latents.float() * self.noise_scale
        clean = self.model(hidden_states=pixels.to(dtype), timestep=sigma.to(dtype),
                           encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
                           attention_mask=cond["attention_mask"], return_dict=False)[0]
        time = sigma.float().clamp(min=MIN_TIME).view(-1, *[1] * (latents.dim() - 1))
        return (pixels - clean.float()) / time / self.noise_scale

    def cfg_free_call_kwargs(self) -> dict:
        """CFG off, and no aspect-ratio binning: the pipeline would otherwise sample at its nearest 1024-px bin."""
        return {"guidance_scale": 1.0, "use_resolution_binning": False}

    def guidance_call_kwargs(self, guidance_scale: float) -> dict:
        return {**self.cfg_free_call_kwargs(), "guidance_scale": guidance_scale}

    def call_images(self, images: torch.Tensor) -> torch.Tensor:
        """The pipeline hands back its raw pixels for `output_type="pt"` (it post-processes only the other types)."""
        return (images.float() / 2 + 0.5).clamp(0, 1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The pixels `s u` in [-1, 1], as images in [0, 1]."""
        return (latents.float() * self.noise_scale / 2 + 0.5).clamp(0, 1)
