"""LongCat-Image (`LongCatImagePipeline`): a Qwen2.5-VL text encoder, a FLUX-style transformer on 2x2-packed
latents with 3-axis position ids (text first, the image after the text's maximum length), timesteps `sigma`, and the
FLUX resolution shift.

The pipeline has no `callback_on_step_end` (so it cannot be traced) and no `load_lora_weights`: the LoRA loads
with `pipe.transformer.load_lora_adapter(folder, weight_name=..., prefix="transformer")`. Its call rewrites prompts
with its text model by default (`enable_prompt_rewrite`); NFT trains on the prompts as given, so the run's
generation and the card's snippet switch the rewrite off.
"""

from typing import List, Tuple

import numpy as np
import torch

from .base import Conditioning, PackedLatentsFamily, Shared

LONGCAT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


class LongCatImageFamily(PackedLatentsFamily):
    """LongCat-Image text-to-image."""

    pipeline_class_names = ("LongCatImagePipeline",)
    default_lora_targets = LONGCAT_TARGETS

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        """The Qwen2.5-VL states (the pipeline's own template and length) and their position ids, shared by the
        rows; `max_sequence_length` is not used."""
        embeds, text_ids = self.pipeline.encode_prompt(prompt=list(prompts))
        return {"encoder_hidden_states": embeds.to(device), "txt_ids": Shared(text_ids.to(device))}

    def schedule_sigmas(self, num_steps: int) -> np.ndarray:
        return np.linspace(1.0, 1.0 / num_steps, num_steps)

    def _image_ids(self, latent_shape: Tuple[int, ...], device: torch.device) -> torch.Tensor:
        from diffusers.pipelines.longcat_image.pipeline_longcat_image import prepare_pos_ids

        side = int(round(latent_shape[0] ** 0.5))
        start = self.pipeline.tokenizer_max_length
        return prepare_pos_ids(modality_id=1, type="image", start=(start, start), height=side, width=side).to(device)

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype = self.transformer.dtype
        text_ids = cond["txt_ids"].value if isinstance(cond["txt_ids"], Shared) else cond["txt_ids"]
        out = self.model(hidden_states=latents.to(dtype), timestep=sigma.to(dtype), guidance=None,
                         encoder_hidden_states=cond["encoder_hidden_states"].to(dtype), txt_ids=text_ids,
                         img_ids=self._image_ids(latents.shape[1:], latents.device), return_dict=False)[0]
        return out.float()

    def cfg_free_call_kwargs(self) -> dict:
        return {"guidance_scale": 1.0, "enable_prompt_rewrite": False}

    def guidance_call_kwargs(self, guidance_scale: float) -> dict:
        return {**self.cfg_free_call_kwargs(), "guidance_scale": guidance_scale}

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        side = int(round(latents.shape[1] ** 0.5)) * 2 * self.pipeline.vae_scale_factor
        return super().decode(self.pipeline._unpack_latents(latents, side, side, self.pipeline.vae_scale_factor))
