"""The LAION aesthetic predictor v2: an MLP on L2-normalised CLIP ViT-L/14 image embeddings."""

import os
from typing import List, Optional

import torch
from torch import nn

from ..visualize import to_pil
from .base import ModelReward

AESTHETIC_V2_URL = (
    "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac%2Blogos%2Bava1-l14-linearMSE.pth"
)


class AestheticMLP(nn.Module):
    """The predictor head (`sac+logos+ava1-l14-linearMSE`): 768 -> 1024 -> 128 -> 64 -> 16 -> 1."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.layers(embeds).squeeze(-1)


class Aesthetic(ModelReward):
    """LAION aesthetic score v2 on its raw scale, roughly 1-10 (5-6 for typical photos).

    Args:
        clip_model_id: Hub id or folder of the CLIP ViT-L/14 `CLIPModel` (its image tower is used).
        weights: The MLP weights: a local `.pth`, `"repo_id/filename"` on the Hub, or a URL (the default, the
            predictor's public release).
        **kwargs: `device`, `dtype`, `batch_size`.
    """

    def __init__(self, clip_model_id: str = "openai/clip-vit-large-patch14", weights: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        self.processor = CLIPImageProcessor.from_pretrained(clip_model_id)
        self.clip = CLIPVisionModelWithProjection.from_pretrained(clip_model_id)
        self.mlp = AestheticMLP(self.clip.config.projection_dim)
        self.mlp.load_state_dict(_load_weights(weights or AESTHETIC_V2_URL))
        for module in (self.clip, self.mlp):
            module.to(self.device, self.dtype).eval().requires_grad_(False)

    def score(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]) -> torch.Tensor:
        pixels = self.processor(images=to_pil(images), return_tensors="pt")["pixel_values"]
        embeds = self.clip(pixel_values=pixels.to(self.device, self.dtype)).image_embeds
        embeds = torch.nn.functional.normalize(embeds.float(), dim=-1).to(self.dtype)
        return self.mlp(embeds)


def _load_weights(weights: str) -> dict:
    if weights.startswith(("http://", "https://")):
        return torch.hub.load_state_dict_from_url(weights, map_location="cpu", weights_only=True)
    if not os.path.isfile(weights):
        from huggingface_hub import hf_hub_download

        repo_id, filename = weights.rsplit("/", 1)
        weights = hf_hub_download(repo_id, filename)
    return torch.load(weights, map_location="cpu", weights_only=True)  # tensors only: a pickle never runs
