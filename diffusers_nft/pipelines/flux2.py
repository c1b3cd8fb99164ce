"""FLUX.2 (`Flux2Pipeline`, `Flux2KleinPipeline`): 2x2-patchified latents that the transformer sees as token
sequences with 4-axis rotary ids, a batch-normalised VAE latent space, and a shift that depends on the resolution
and the number of steps. Reference images (`--image_column`, one or several per prompt) join the sequence as their
own latents, each at rotary time 10, 20, ...; the velocity is read off the output's first tokens."""

import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..conditioning import image_list
from ..sampling import pipeline_sigmas
from .base import JOINT_ATTENTION_TARGETS, SOURCE, Conditioning, PackedLatentsFamily

# The single-stream blocks fuse q, k, v and the MLP input into one projection.
FLUX2_TARGETS = JOINT_ATTENTION_TARGETS + ("attn.to_qkv_mlp_proj", "attn.to_out")


def empirical_mu(image_tokens: int, num_steps: int) -> float:
    """FLUX.2's shift: linear in the number of image tokens, interpolated between fits at 10 and 200 steps."""
    at_200 = 0.00016927 * image_tokens + 0.45666666
    if image_tokens > 4300:
        return float(at_200)
    at_10 = 8.73809524e-05 * image_tokens + 1.89833333
    slope = (at_200 - at_10) / 190.0
    return float(slope * num_steps + at_200 - 200.0 * slope)


class Flux2Family(PackedLatentsFamily):
    """FLUX.2 [dev] (Mistral-3 text encoder, guidance embedding) and FLUX.2 [klein] (Qwen3, no embedding).

    Latents are the token sequences the scheduler steps, `(h / 2 * w / 2, 4 * channels)`; the pipelines' `latents=`
    argument takes them unpacked (`pipeline_latents`). With reference images it edits or composes them; without,
    it is text-to-image, as the pipelines are.
    """

    pipeline_class_names = ("Flux2Pipeline", "Flux2KleinPipeline")
    default_lora_targets = FLUX2_TARGETS
    conditioning = {"image": 10}  # FLUX.2's multi-reference limit, as Black Forest Labs documents it
    conditioning_shared_by_call = True  # the pipelines' `image` list is every prompt's of the call
    default_max_sequence_length = 512  # the pipelines' default

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        embeds, text_ids = self.pipeline.encode_prompt(prompts, device=device, max_sequence_length=max_sequence_length)
        return {"encoder_hidden_states": embeds, "txt_ids": text_ids}

    def pipeline_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """`(B, tokens, C)` -> `(B, C, h, w)`, the layout of the pipelines' `latents=` argument."""
        side = math.isqrt(latents.shape[1])
        return latents.transpose(1, 2).reshape(latents.shape[0], latents.shape[2], side, side)

    def sampling_sigmas(self, num_steps: int, latent_shape: Tuple[int, ...]) -> torch.Tensor:
        mu = empirical_mu(self.image_tokens(latent_shape), num_steps)
        sigmas = np.linspace(1.0, 1 / num_steps, num_steps)  # what the pipelines pass to their scheduler
        if self.pipeline.scheduler.config.get("use_flow_sigmas", False):
            sigmas = None
        return pipeline_sigmas(self.pipeline.scheduler, num_steps, sigmas, mu)

    @torch.no_grad()
    def encode_conditioning(self, values: List[Dict[str, Any]], device: torch.device,
                            prompts: Optional[List[str]] = None) -> Conditioning:
        """Each row's reference images as the pipelines encode them (the VAE's mode, patchified, batch-normalised,
        packed; every row gives as many, `conditioning.check_conditioning`), concatenated, and their rotary ids."""
        if not values or "image" not in values[0]:
            return {}
        pipe, vae = self.pipeline, self.pipeline.vae
        references = [image_list(v["image"]) for v in values]
        pixels = pipe.image_processor.preprocess([image for row in references for image in row])
        latents = pipe._patchify_latents(vae.encode(pixels.to(device, vae.dtype)).latent_dist.mode())
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(latents)
        packed = pipe._pack_latents((latents - mean) / std)  # (rows x references, tokens, C)
        rows, per_row = len(references), len(references[0])
        ids = pipe._prepare_image_ids([latents[:1]] * per_row).expand(rows, -1, -1)
        return {"reference_latents": packed.reshape(rows, -1, packed.shape[-1]).float(), "reference_ids": ids.to(device)}

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        ids = self.pipeline._prepare_latent_ids(self.pipeline_latents(latents)).to(latents.device)
        references = cond.get(SOURCE, {})
        if "reference_latents" not in references:
            return self._transformer(latents, ids, sigma, cond)
        hidden = torch.cat([latents, references["reference_latents"].to(latents)], dim=1)
        ids = torch.cat([ids, references["reference_ids"].to(ids)], dim=1)
        return self._transformer(hidden, ids, sigma, cond)[:, : latents.shape[1]]

    def _transformer(self, hidden_states: torch.Tensor, img_ids: torch.Tensor, sigma: torch.Tensor,
                     cond: Conditioning) -> torch.Tensor:
        """The transformer's output on a token sequence with its rotary ids, in float32."""
        dtype = self.transformer.dtype
        prediction = self.model(
            hidden_states=hidden_states.to(dtype),
            timestep=sigma.float(),  # the pipelines pass timestep / 1000, that is sigma
            guidance=self._guidance(self.transformer, hidden_states.shape[0], hidden_states.device),
            encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
            txt_ids=cond["txt_ids"],
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return prediction.float()

    def cfg_free_call_kwargs(self) -> dict:
        if self.transformer.config.guidance_embeds:  # FLUX.2 [dev]: embedded guidance, which the LoRA trained with
            return {"guidance_scale": self.distilled_guidance_scale}
        return {"guidance_scale": 1.0}

    def guidance_call_kwargs(self, guidance_scale: float) -> dict:
        if guidance_scale != 1.0 and self.transformer.config.guidance_embeds:
            raise ValueError("FLUX.2 [dev] is guidance-distilled: its pipeline has no classifier-free guidance to "
                             "turn on (guidance_scale feeds its guidance embedding). Generate with guidance 1.0.")
        return super().guidance_call_kwargs(guidance_scale)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae, pipe = self.pipeline.vae, self.pipeline
        latents = self.pipeline_latents(latents).to(vae.dtype)
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(latents)
        images = vae.decode(pipe._unpatchify_latents(latents * std + mean), return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0, 1)
