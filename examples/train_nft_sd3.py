#!/usr/bin/env python
"""Fine-tune Stable Diffusion 3 / 3.5 with DiffusionNFT and LoRA.

    accelerate launch examples/train_nft_sd3.py \
        --pretrained_model_name_or_path stabilityai/stable-diffusion-3.5-medium \
        --prompts prompts.txt --reward jpeg_compressibility \
        --output_dir sd35-nft --mixed_precision bf16

Every `NFTConfig` field is a flag (`--nft_beta`, `--kl_beta`, `--group_size`, `--sampler`, ...), with the
defaults of the public release. The diffusers names `--max_train_steps`, `--checkpointing_steps`,
`--checkpoints_total_limit` and `--validation_prompt` work too. Without `--pretrained_model_name_or_path` the
script trains the bundled demo world (a tiny pretrained digits model and its judge), on a laptop CPU.
"""

from diffusers_nft import NFTConfig
from diffusers_nft import scripts
from diffusers_nft.scripts import ScriptArguments, from_pretrained_kwargs, run

__all__ = ["NFTConfig", "ScriptArguments", "load_pipeline", "main", "prepare", "run"]


def load_pipeline(script_args: ScriptArguments, config: NFTConfig):
    """The SD3/SD3.5 pipeline to train, or the tiny offline demo pipeline."""
    from diffusers import StableDiffusion3Pipeline

    if script_args.pretrained_model_name_or_path is None:
        from diffusers_nft.demo import load_demo_pipeline

        return load_demo_pipeline()
    return StableDiffusion3Pipeline.from_pretrained(
        script_args.pretrained_model_name_or_path, **from_pretrained_kwargs(script_args, config)
    )


def prepare(argv=None, load_pipeline=load_pipeline):
    return scripts.prepare(argv, load_pipeline)


def main(argv=None, load_pipeline=load_pipeline) -> None:
    scripts.main(argv, load_pipeline)


if __name__ == "__main__":
    scripts.cli(load_pipeline)
