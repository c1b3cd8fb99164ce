"""`edit_consistency`: how much of the source an edit keeps, for image-conditioned pipelines.

It reads each image's source from its metadata (`"source_image"`, and `"mask"` where the run has one: 1 where the
edit goes), as `diffusers_nft.conditioning.reward_metadata` provides it during training and evaluation.
"""

from typing import List, Optional

import torch

from ..visualize import to_pil
from .base import ModelReward


class EditConsistency(ModelReward):
    """The cosine similarity of a vision model's image embeddings of the edit and its source, mapped to [0, 1]
    (`feature`); with a mask, also `pixel` = 1 - the mean absolute pixel difference outside the mask, and the score
    is `(1 - pixel_weight) feature + pixel_weight pixel`. Without a source the row is refused: this reward is for
    editing runs (`--image_column`).

    It measures preservation only: pair it with a reward for following the instruction (`vlm_judge` with the edit
    template, say), or an edit that changes nothing scores best.

    Args:
        model_id: Hub id or folder of a `CLIPModel` (its vision tower and projection are used).
        pixel_weight: The pixel term's weight where a mask is given.
        **kwargs: `device`, `dtype`, `batch_size` of `ModelReward`.
    """

    def __init__(self, model_id: str = "openai/clip-vit-large-patch14", processor_id: Optional[str] = None,
                 pixel_weight: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        from transformers import CLIPImageProcessor, CLIPModel

        if not 0 <= pixel_weight <= 1:
            raise ValueError(f"pixel_weight must be in [0, 1] (got {pixel_weight}).")
        self.processor = CLIPImageProcessor.from_pretrained(processor_id or model_id)
        self.model = CLIPModel.from_pretrained(model_id).to(self.device, self.dtype).eval().requires_grad_(False)
        self.pixel_weight = pixel_weight

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.processor(images=to_pil(images), return_tensors="pt")["pixel_values"]
        features = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
        features = features if isinstance(features, torch.Tensor) else features.pooler_output
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def score(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]):
        sources = torch.stack([_source(m, i) for i, m in enumerate(metadata)]).to(images.device)
        if sources.shape[-2:] != images.shape[-2:]:
            sources = torch.nn.functional.interpolate(sources, size=images.shape[-2:], mode="bilinear")
        feature = (self._embed(images) * self._embed(sources)).sum(-1).cpu() / 2 + 0.5
        out = {"scores": feature.clone(), "feature": feature}
        if all("mask" in m for m in metadata):
            keep = 1 - torch.stack([m["mask"].float() for m in metadata]).to(images.device)
            keep = torch.nn.functional.interpolate(keep, size=images.shape[-2:], mode="nearest")
            kept = ((images.float() - sources).abs() * keep).flatten(1).sum(1) / (3 * keep.flatten(1).sum(1)).clamp(min=1)
            pixel = (1 - kept).cpu()
            out.update(pixel=pixel, scores=(1 - self.pixel_weight) * feature + self.pixel_weight * pixel)
        return out


def _source(meta: dict, row: int) -> torch.Tensor:
    source = meta.get("source_image")
    if source is None:
        raise ValueError(f"edit_consistency: image {row} has no source_image in its metadata; it scores edits of "
                         "image-conditioned runs (--image_column).")
    return source[0] if source.dim() == 4 else source  # the first of several reference images
