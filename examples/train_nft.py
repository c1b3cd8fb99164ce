#!/usr/bin/env python
"""Fine-tune any supported flow-matching pipeline with DiffusionNFT and LoRA: Qwen-Image, FLUX.2, Z-Image, Wan,
SD3, FLUX.1, Lumina-Image 2.0 by their family files, the other text-to-image/video flow pipelines traced.

    accelerate launch examples/train_nft.py \
        --pretrained_model_name_or_path Qwen/Qwen-Image \
        --prompts prompts.txt --reward pickscore --resolution 1024 \
        --output_dir qwen-image-nft --mixed_precision bf16 --gradient_checkpointing

    accelerate launch examples/train_nft.py --pretrained_model_name_or_path Wan-AI/Wan2.1-T2V-1.3B-Diffusers \
        --prompts prompts.txt --reward pickscore --reward temporal_consistency:0.5 --num_frames 33 --resolution 480

The pipeline is loaded with `DiffusionPipeline.from_pretrained`, so its class comes from its `model_index.json`.
The flags are those of `train_nft_sd3.py` (every `NFTConfig` field), or a YAML/JSON file of them first (flags
after it override it); `--family traced` traces even a family that has a family file. Without `--pretrained_model_name_or_path` it trains the bundled demo world.
"""

# DiffusionPipeline.from_pretrained(--pretrained_model_name_or_path), or the demo's pipeline without one
from diffusers_nft.scripts import cli, load_any_pipeline as load_pipeline

if __name__ == "__main__":
    cli(load_pipeline)
