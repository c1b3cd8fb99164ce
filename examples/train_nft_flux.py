#!/usr/bin/env python
"""Fine-tune FLUX.1 with DiffusionNFT and LoRA. The same flags as `train_nft_sd3.py`.

    accelerate launch examples/train_nft_flux.py \
        --pretrained_model_name_or_path black-forest-labs/FLUX.1-dev \
        --prompts prompts.txt --reward pickscore --distilled_guidance_scale 3.5 \
        --output_dir flux-nft --mixed_precision bf16 --gradient_checkpointing

FLUX.1-dev is guidance-distilled: `--distilled_guidance_scale` feeds its guidance embedding (training and
sampling stay CFG-free). The offline demo world is an SD3 pipeline: without a model, run `train_nft_sd3.py`.
"""

from diffusers_nft import NFTConfig
from diffusers_nft.scripts import ScriptArguments, cli, from_pretrained_kwargs


def load_flux_pipeline(script_args: ScriptArguments, config: NFTConfig):
    """The FLUX.1 pipeline to train."""
    from diffusers import FluxPipeline

    if script_args.pretrained_model_name_or_path is None:
        raise ValueError("train_nft_flux.py needs --pretrained_model_name_or_path (a FLUX.1 Hub id or folder); the "
                         "offline demo world is an SD3 pipeline: run examples/train_nft_sd3.py without a model.")
    return FluxPipeline.from_pretrained(
        script_args.pretrained_model_name_or_path, **from_pretrained_kwargs(script_args, config)
    )


if __name__ == "__main__":
    cli(load_flux_pipeline)
