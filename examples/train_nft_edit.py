#!/usr/bin/env python
"""Fine-tune an image-editing pipeline (FLUX.1 Kontext) with DiffusionNFT and LoRA. The same flags as
`train_nft_sd3.py`, with the source images of each instruction in a dataset column (`--image_column`).

    accelerate launch examples/train_nft_edit.py \
        --pretrained_model_name_or_path black-forest-labs/FLUX.1-Kontext-dev \
        --dataset_name edits.jsonl --caption_column instruction --image_column source \
        --reward vlm_edit_judge --reward edit_consistency:0.5 --distilled_guidance_scale 2.5 \
        --output_dir kontext-nft --mixed_precision bf16 --gradient_checkpointing

Without a model it trains the bundled edit world, offline, on a laptop CPU: a tiny Kontext-shaped pipeline that
recolours or redraws a coloured digit ("make it blue", "turn it into a seven"), rewarded by `digit_edit` and
reported, like the digits demo, by that reward and by a held-out judge on 60 held-out edits (`nft-edit-demo/`).
"""

from diffusers_nft import NFTConfig
from diffusers_nft import scripts
from diffusers_nft.demo import EDIT_DEMO
from diffusers_nft.scripts import ScriptArguments, from_pretrained_kwargs

__all__ = ["load_pipeline", "main", "prepare"]


def load_pipeline(script_args: ScriptArguments, config: NFTConfig):
    """The FLUX.1 Kontext pipeline to train, or the edit world's tiny one."""
    from diffusers import FluxKontextPipeline

    if script_args.pretrained_model_name_or_path is None:
        return EDIT_DEMO.load_pipeline()
    return FluxKontextPipeline.from_pretrained(
        script_args.pretrained_model_name_or_path, **from_pretrained_kwargs(script_args, config)
    )


def prepare(argv=None, load_pipeline=load_pipeline):
    return scripts.prepare(argv, load_pipeline, EDIT_DEMO)


def main(argv=None, load_pipeline=load_pipeline) -> None:
    scripts.main(argv, load_pipeline, EDIT_DEMO)


if __name__ == "__main__":
    scripts.cli(load_pipeline, EDIT_DEMO)
