"""Tiny random models of the reward architectures, saved to folders and loaded through the real loading code."""

import os
import tempfile

import torch


def save_tiny_clip(folder: str, seed: int = 0, hidden_act: str = "quick_gelu") -> str:
    """A tiny `CLIPModel` with its `CLIPProcessor` (BPE tokenizer trained offline, 32 px images)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from tiny_pipelines import train_clip_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_clip_tokenizer(tmp)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, hidden_act=hidden_act, projection_dim=16,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, hidden_act=hidden_act, projection_dim=16,
        ),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def save_tiny_mask2former(folder: str, labels=("cat", "dog", "person")) -> str:
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor, SwinConfig

    torch.manual_seed(0)
    backbone = SwinConfig(
        image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64,
        dim_feedforward=64, encoder_layers=1, decoder_layers=2, num_attention_heads=2, num_queries=10,
        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)},
        common_stride=4, use_timm_backbone=False,
    )
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    Mask2FormerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def transformers_to_open_clip(state):
    """The inverse renaming of `open_clip_to_transformers`, to write an OpenCLIP-format checkpoint."""
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    out = {
        "logit_scale": state["logit_scale"],
        "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": state["text_model.final_layer_norm.weight"],
        "ln_final.bias": state["text_model.final_layer_norm.bias"],
        "text_projection": state["text_projection.weight"].t(),
        "visual.conv1.weight": state["vision_model.embeddings.patch_embedding.weight"],
        "visual.class_embedding": state["vision_model.embeddings.class_embedding"],
        "visual.positional_embedding": state["vision_model.embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": state["vision_model.pre_layrnorm.weight"],
        "visual.ln_pre.bias": state["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": state["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": state["vision_model.post_layernorm.bias"],
        "visual.proj": state["visual_projection.weight"].t(),
    }
    for source, target in (("text_model.encoder.layers.", "transformer.resblocks."),
                           ("vision_model.encoder.layers.", "visual.transformer.resblocks.")):
        layers = sorted({int(k[len(source):].split(".")[0]) for k in state if k.startswith(source)})
        for i in layers:
            p = f"{source}{i}."
            for kind in ("weight", "bias"):
                out[f"{target}{i}.attn.in_proj_{kind}"] = torch.cat(
                    [state[f"{p}self_attn.{n}.{kind}"] for n in ("q_proj", "k_proj", "v_proj")]
                )
                for hf, oc in names.items():
                    out[f"{target}{i}.{oc}.{kind}"] = state[f"{p}{hf}.{kind}"]
    return {"module." + k: v for k, v in out.items()}  # HPS checkpoints were saved from DDP


def random_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def folder(tmp_path_factory, name: str) -> str:
    return str(tmp_path_factory.mktemp(name))


__all__ = ["save_tiny_clip", "save_tiny_mask2former", "transformers_to_open_clip", "random_images", "folder", "os"]
