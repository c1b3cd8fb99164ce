"""CLIP-family preference rewards: CLIPScore, PickScore and HPS v2.1, on `transformers.CLIPModel`."""

from typing import Dict, List, Optional

import torch

from ..visualize import to_pil
from .base import ModelReward


def clip_similarity(image_embeds: torch.Tensor, text_embeds: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """`scale * cos(image_i, text_i)` for each pair i."""
    image_embeds = torch.nn.functional.normalize(image_embeds.float(), dim=-1)
    text_embeds = torch.nn.functional.normalize(text_embeds.float(), dim=-1)
    return scale * (image_embeds * text_embeds).sum(dim=-1)


class ClipSimilarityReward(ModelReward):
    """Image-text cosine similarity of a CLIP model, optionally times its logit scale and divided by a constant.

    Args:
        model_id: Hub id or folder of a `CLIPModel`.
        processor_id: Hub id or folder of its `CLIPProcessor` (default: `model_id`).
        use_logit_scale: Multiply by `exp(logit_scale)` of the model.
        divisor: Divide the result by this.
        state_dict: Weights to load over the model's own (HPS ships an open_clip checkpoint, converted).
        **kwargs: `device`, `dtype`, `batch_size` of `ModelReward`.
    """

    def __init__(
        self,
        model_id: str,
        processor_id: Optional[str] = None,
        use_logit_scale: bool = False,
        divisor: float = 1.0,
        state_dict: Optional[Dict[str, torch.Tensor]] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        from transformers import CLIPModel, CLIPProcessor

        self.processor = CLIPProcessor.from_pretrained(processor_id or model_id)
        self.model = CLIPModel.from_pretrained(model_id)
        if state_dict is not None:
            self.model.load_state_dict(state_dict)
        self.model.to(self.device, self.dtype).eval().requires_grad_(False)
        self.use_logit_scale = use_logit_scale
        self.divisor = divisor

    def score(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]) -> torch.Tensor:
        inputs = self.processor(
            text=prompts, images=to_pil(images), padding=True, truncation=True, max_length=77, return_tensors="pt"
        ).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        out = self.model(**inputs)
        scale = self.model.logit_scale.exp().item() if self.use_logit_scale else 1.0
        return clip_similarity(out.image_embeds, out.text_embeds, scale / self.divisor)


class ClipScore(ClipSimilarityReward):
    """CLIPScore: cosine similarity of CLIP ViT-L/14 image and text embeddings, in [-1, 1] (~0.2-0.4 for a match)."""

    def __init__(self, model_id: str = "openai/clip-vit-large-patch14", processor_id: Optional[str] = None, **kwargs):
        super().__init__(model_id, processor_id, **kwargs)


class PickScore(ClipSimilarityReward):
    """PickScore v1: `exp(logit_scale) * cos / 26` with the CLIP-H processor, ~0.8-0.9 for good images."""

    def __init__(
        self,
        model_id: str = "yuvalkirstain/PickScore_v1",
        processor_id: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        **kwargs,
    ):
        super().__init__(model_id, processor_id, use_logit_scale=True, divisor=26.0, **kwargs)


class HPSv2(ClipSimilarityReward):
    """HPS v2.1: dot product of the normalised image and text features of the HPS-tuned OpenCLIP ViT-H-14,
    ~0.25-0.35 for good images.

    The HPS checkpoint is an open_clip state dict; it is converted to `transformers.CLIPModel` names (see
    `open_clip_to_transformers`) and loaded over the ViT-H-14 architecture, so neither open_clip nor torchvision
    is needed.

    Args:
        checkpoint: A local `.pt` file, or `"repo_id/filename"` on the Hub.
        base_model_id: The transformers port of the ViT-H-14 that HPS fine-tuned (architecture and processor).
    """

    def __init__(
        self,
        checkpoint: str = "xswu/HPSv2/HPS_v2.1_compressed.pt",
        base_model_id: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        **kwargs,
    ):
        state = _load_torch_checkpoint(checkpoint)
        state = state.get("state_dict", state)
        super().__init__(base_model_id, state_dict=open_clip_to_transformers(state), **kwargs)


def _load_torch_checkpoint(checkpoint: str) -> dict:
    import os

    if not os.path.isfile(checkpoint):
        from huggingface_hub import hf_hub_download

        repo_id, filename = checkpoint.rsplit("/", 1)
        checkpoint = hf_hub_download(repo_id, filename)
    return torch.load(checkpoint, map_location="cpu", weights_only=True)  # tensors only: a pickle never runs


_LAYER_NAMES = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}


def open_clip_to_transformers(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename an OpenCLIP ViT state dict to `transformers.CLIPModel` names (fused qkv split, projections
    transposed)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    out = {
        "logit_scale": state["logit_scale"],
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_model.final_layer_norm.weight": state["ln_final.weight"],
        "text_model.final_layer_norm.bias": state["ln_final.bias"],
        "text_projection.weight": state["text_projection"].t().contiguous(),
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
        "visual_projection.weight": state["visual.proj"].t().contiguous(),
    }
    for source, target in (("transformer.resblocks.", "text_model.encoder.layers."),
                           ("visual.transformer.resblocks.", "vision_model.encoder.layers.")):
        for key, value in state.items():
            if not key.startswith(source):
                continue
            index, rest = key[len(source):].split(".", 1)
            prefix = f"{target}{index}."
            if rest.startswith("attn.in_proj_"):
                kind = rest.rsplit("_", 1)[-1]  # weight or bias
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{prefix}self_attn.{name}.{kind}"] = part.contiguous()
                continue
            module, kind = rest.rsplit(".", 1)
            out[f"{prefix}{_LAYER_NAMES[module]}.{kind}"] = value
    return out
