"""Qwen-Image-Edit (`QwenImageEditPipeline`) and Qwen-Image-Edit-2509 and later (`QwenImageEditPlusPipeline`):
Qwen-Image whose text encoder reads the prompt together with its reference images (each resized to the pipeline's
condition area), and whose sequence also holds each reference's packed VAE latents (each at the pipeline's VAE
area), described to the rotary embedding by `img_shapes`; the velocity is read off the output's first tokens."""

from typing import Any, Dict, List, Optional, Tuple

import torch

from ..conditioning import image_list
from .base import SOURCE, UNCONDITIONAL, Conditioning
from .qwenimage import QwenImageFamily


def _plus_module():
    """The pipeline's module: its `CONDITION_IMAGE_SIZE`, `VAE_IMAGE_SIZE` and `calculate_dimensions`, read at call
    time so the family follows whatever the installed pipeline uses."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus

    return pipeline_qwenimage_edit_plus


def _edit_module():
    """`QwenImageEditPipeline`'s module: its `calculate_dimensions`, read at call time."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit

    return pipeline_qwenimage_edit


class QwenImageEditPlusFamily(QwenImageFamily):
    """Qwen-Image-Edit-2509 / 2511: one to several reference images per prompt (`--image_column`; every row as
    many). The pipeline takes one prompt per call, so generation calls it once per image."""

    pipeline_class_names = ("QwenImageEditPlusPipeline",)
    card_tags = ("qwen-image", "qwen-image-edit", "image-editing")
    pipeline_tag = "image-to-image"
    conditioning = {"image": 4}  # several references; more rarely help and each costs a full image of tokens
    required_conditioning = ("image",)
    conditioning_shared_by_call = True
    max_prompts_per_call = 1  # QwenImageEditPlusPipeline refuses batches

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        """Nothing yet: the text encoder reads each prompt with its images (`encode_conditioning`)."""
        return {}

    @torch.no_grad()
    def encode_conditioning(self, values: List[Dict[str, Any]], device: torch.device,
                            prompts: Optional[List[str]] = None) -> Conditioning:
        """Per row, as the pipeline encodes one prompt: the text states of the prompt read with its references
        (and of the empty prompt with them, for guidance's unconditional branch), the references' packed VAE
        latents, and the `img_shapes` of the output and each reference."""
        if prompts is None or len(prompts) != len(values):
            raise ValueError("QwenImageEditPlusPipeline's text encoder reads each prompt with its images: give "
                             "encode_conditioning the rows' prompts.")
        references = [image_list(v["image"]) for v in values]
        texts = [self._text_states(prompt, images, device) for prompt, images in zip(prompts, references)]
        empty = [self._text_states("", images, device) for images in references]
        latents, shapes = zip(*(self._reference_latents(images, device) for images in references))
        return {**_stacked(texts), "image_latents": torch.cat(latents).float(), "reference_shapes": list(shapes),
                UNCONDITIONAL: _stacked(empty)}

    def condition_size(self, image) -> Tuple[int, int]:
        """`(width, height)` of a reference as the text encoder reads it."""
        plus = _plus_module()
        return plus.calculate_dimensions(plus.CONDITION_IMAGE_SIZE, image.width / image.height)

    def vae_size(self, image) -> Tuple[int, int]:
        """`(width, height)` of a reference as the VAE encodes it."""
        plus = _plus_module()
        return plus.calculate_dimensions(plus.VAE_IMAGE_SIZE, image.width / image.height)

    def _text_states(self, prompt: str, images: list, device: torch.device):
        """The pipeline's text states of one prompt read with its references, resized as the pipeline does."""
        pipe = self.pipeline
        resized = [pipe.image_processor.resize(image, *reversed(self.condition_size(image))) for image in images]
        embeds, mask = pipe._get_qwen_prompt_embeds([prompt], self.text_encoder_images(resized), device)
        return embeds[0].float(), mask[0]

    def text_encoder_images(self, resized: list):
        """The references as the pipeline hands them to its text encoder: a list (one or several)."""
        return resized

    def _reference_latents(self, images: list, device: torch.device):
        """One row's references at the pipeline's VAE area: packed latents `(1, tokens, C)` and their shapes."""
        pipe, vae = self.pipeline, self.pipeline.vae
        packed, shapes = [], []
        for image in images:
            width, height = self.vae_size(image)
            pixels = pipe.image_processor.preprocess(image, height, width).unsqueeze(2).to(device, vae.dtype)
            latents = vae.encode(pixels).latent_dist.mode()
            view = (1, vae.config.z_dim, 1, 1, 1)
            mean = torch.tensor(vae.config.latents_mean).view(view).to(latents)
            latents = (latents - mean) / torch.tensor(vae.config.latents_std).view(view).to(latents)
            h, w = latents.shape[3:]
            packed.append(pipe._pack_latents(latents, 1, vae.config.z_dim, h, w))
            shapes.append((1, h // 2, w // 2))
        return torch.cat(packed, dim=1), shapes

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        source, dtype, batch = cond[SOURCE], self.transformer.dtype, latents.shape[0]
        side = int(latents.shape[1] ** 0.5)
        hidden = torch.cat([latents, source["image_latents"].to(latents)], dim=1)
        return self.model(
            hidden_states=hidden.to(dtype),
            timestep=sigma.float(),
            guidance=None,
            encoder_hidden_states=source["encoder_hidden_states"].to(latents.device, dtype),
            encoder_hidden_states_mask=source["encoder_hidden_states_mask"].to(latents.device),
            img_shapes=[[(1, side, side), *source["reference_shapes"][row]] for row in range(batch)],
            return_dict=False,
        )[0][:, : latents.shape[1]].float()


class QwenImageEditFamily(QwenImageEditPlusFamily):
    """Qwen-Image-Edit (the first): one source image per prompt (`--image_column`), which the text encoder and the
    VAE both read at the pipeline's 1-megapixel size, whatever the run's resolution (the pipeline fixes it)."""

    pipeline_class_names = ("QwenImageEditPipeline",)
    conditioning = {"image": 1}

    def condition_size(self, image) -> Tuple[int, int]:
        width, height, _ = _edit_module().calculate_dimensions(1024 * 1024, image.width / image.height)
        return width, height

    def vae_size(self, image) -> Tuple[int, int]:
        return self.condition_size(image)

    def text_encoder_images(self, resized: list):
        return resized[0]  # the pipeline passes its one image, not a list


def _stacked(states) -> Conditioning:
    """Per-row text states of different lengths, right-padded into one batch with their mask."""
    longest = max(embeds.shape[0] for embeds, _ in states)
    embeds = torch.stack([torch.cat([e, e.new_zeros(longest - len(e), e.shape[1])]) for e, _ in states])
    mask = torch.stack([torch.cat([m, m.new_zeros(longest - len(m))]) for _, m in states])
    return {"encoder_hidden_states": embeds, "encoder_hidden_states_mask": mask.long()}
