#!/usr/bin/env python
"""Real NFTTrainer iterations at SD3.5-Medium scale on one GPU: images/s, the time split and peak memory.

A random-init SD3.5-Medium-architecture transformer (config below), LoRA r 32 / alpha 64 on the release targets,
512 px (1024 image tokens + 333 text tokens), bf16, the release schedule: 10 DPM-Solver steps, training at
int(0.99 * 10) = 9 timesteps with the old (and, when kl_beta > 0, reference) forwards, a model-free reward.
The text encoders are tiny stand-ins with the real output widths (the T5 slot is empty, so its 256 tokens are
zeros, as the SD3 pipeline does without T5): they are off the measured path, which is the transformer and VAE.

    python benchmarks/gpu_iteration.py                      # the table, on the GPU
    python benchmarks/gpu_iteration.py --compile            # with torch.compile on the transformer
    python benchmarks/gpu_iteration.py --model flux1dev --gradient_checkpointing  # FLUX.1-dev size (12 B)
    python benchmarks/gpu_iteration.py --model qwenimage --gradient_checkpointing  # Qwen-Image size (20 B)
    python benchmarks/gpu_iteration.py --tiny --device cpu  # a smoke run of this script on a CPU

Targets (issue 16), SD3.5-Medium size on one H200: >= 4.0 images/s compiled and >= 2.2 eager, peak memory <= 40 GiB
at 16 images per micro-batch. `benchmarks/gpu_suite.sh` runs every row in one command.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager

import torch

from diffusers_nft import NFTConfig, NFTTrainer
from diffusers_nft.metrics import time_key

SD35_MEDIUM = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm",
)
# FLUX.1-dev's transformer (11.9 B parameters) and VAE, from their published configs.
FLUX1_DEV = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)
FLUX_VAE_SCALING = dict(scaling_factor=0.3611, shift_factor=0.1159)
# Qwen-Image's transformer (20.4 B parameters), from its published config; its VAE is AutoencoderKLQwenImage's default.
QWEN_IMAGE = dict(
    patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=3584, guidance_embeds=False, axes_dims_rope=(16, 56, 56),
)
QWEN_IMAGE_TINY = dict(QWEN_IMAGE, num_layers=1, attention_head_dim=16, num_attention_heads=2, axes_dims_rope=(4, 6, 6))
SD35_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False,
)


def build_flux_pipeline(device: str):
    """A FLUX.1-dev-size `FluxPipeline` (random weights) with tiny text encoders of the real output widths."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    from diffusers_nft.demo.offline_text import tiny_clip_config, tiny_text_stack

    with tempfile.TemporaryDirectory() as folder:
        tokenizer, tokenizer_2, text_encoder_2 = tiny_text_stack(folder, t5_dim=4096)
    torch.manual_seed(0)
    with torch.device(device):
        return FluxPipeline(
            transformer=FluxTransformer2DModel(**FLUX1_DEV),
            vae=AutoencoderKL(**{**SD35_VAE, **FLUX_VAE_SCALING}),
            scheduler=FlowMatchEulerDiscreteScheduler(
                shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                max_image_seq_len=4096,
            ),
            text_encoder=CLIPTextModel(tiny_clip_config(tokenizer, hidden=768)), tokenizer=tokenizer,
            text_encoder_2=text_encoder_2.to(device), tokenizer_2=tokenizer_2,
        )


def tiny_builders():
    """`tests/tiny_pipelines.py`, the test scaffolding's offline builders: not in the wheel, so read from the checkout."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import tiny_pipelines

    return tiny_pipelines


@contextmanager
def default_dtype(dtype: torch.dtype):
    """Create parameters in `dtype`: Qwen-Image's 20 B parameters in float32 would not fit an 80 GiB GPU."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def build_qwenimage_pipeline(tiny: bool, device: str):
    """A Qwen-Image-size `QwenImagePipeline` (random weights, created in bfloat16 on a GPU) with a one-layer
    Qwen2.5-VL text encoder of the real width (3584); `tiny` shrinks the transformer and VAE for a CPU smoke run."""
    from diffusers import AutoencoderKLQwenImage, QwenImagePipeline, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    builders = tiny_builders()
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = builders._train_qwen_tokenizer(folder)
    vocab = len(tokenizer)
    text = Qwen2_5_VLConfig(  # 28 heads of 128, as Qwen2.5-VL-7B; one layer, a narrow MLP
        text_config={"hidden_size": 3584, "intermediate_size": 256, "num_hidden_layers": 1, "num_attention_heads": 28,
                     "num_key_value_heads": 4, "rope_theta": 1000000.0, "vocab_size": vocab + 3,
                     "rope_scaling": {"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
                     "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 3584},
        hidden_size=3584, vocab_size=vocab + 3, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        vision_start_token_id=vocab, vision_end_token_id=vocab + 1, vision_token_id=vocab + 2,
    )
    vae = dict(base_dim=24, dim_mult=[1, 2, 2, 2], num_res_blocks=1) if tiny else {}
    torch.manual_seed(0)
    with torch.device(device), default_dtype(torch.bfloat16 if device == "cuda" else torch.float32):
        return QwenImagePipeline(
            transformer=QwenImageTransformer2DModel(**(QWEN_IMAGE_TINY if tiny else QWEN_IMAGE)),
            vae=AutoencoderKLQwenImage(**vae),
            scheduler=builders.qwenimage_scheduler(),
            text_encoder=Qwen2_5_VLForConditionalGeneration(text).eval(), tokenizer=tokenizer,
        )


def build_pipeline(tiny: bool, device: str):
    """An SD3 pipeline with the SD3.5-Medium transformer and VAE (random weights) and tiny text encoders.

    The weights are created on `device`: initialising 2.5 B parameters there takes a second, on the CPU a minute.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from diffusers_nft.demo.offline_text import train_clip_tokenizer

    if tiny:
        return tiny_builders().build_tiny_sd3_pipeline(width=128, num_layers=4)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = train_clip_tokenizer(folder)

    def clip(projection_dim):  # real output widths (768 + 1280 = the pooled 2048), tiny insides
        config = CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=77, projection_dim=projection_dim,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
        return CLIPTextModelWithProjection(config)

    torch.manual_seed(0)
    with torch.device(device):
        return StableDiffusion3Pipeline(
            transformer=SD3Transformer2DModel(**SD35_MEDIUM),
            vae=AutoencoderKL(**SD35_VAE),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            text_encoder=clip(768), tokenizer=tokenizer, text_encoder_2=clip(1280), tokenizer_2=tokenizer,
            text_encoder_3=None, tokenizer_3=None,
        )


MODELS = ("sd35m", "flux1dev", "qwenimage")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2, help="Timed iterations after one warm-up.")
    parser.add_argument("--prompts", type=int, default=2, help="Prompt groups per iteration.")
    parser.add_argument("--group_size", type=int, default=16)
    parser.add_argument("--micro_batch", type=int, default=16, help="Images per sampling and training micro-batch.")
    parser.add_argument("--sampling_batch_from_memory", action="store_true",
                        help="Leave sample_batch_size unset: the trainer chooses it from the device's free memory.")
    parser.add_argument("--kl_beta", type=float, default=1e-4)
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer.")
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--before_pair", action="store_true",
                        help="As before issue 32: the old and reference predictions as two forwards, plain AdamW.")
    parser.add_argument("--model", choices=MODELS, default="sd35m",
                        help="sd35m: SD3.5-Medium size (2.5 B); flux1dev: FLUX.1-dev size (12 B); qwenimage: "
                             "Qwen-Image size (20 B). Default: sd35m.")
    parser.add_argument("--tiny", action="store_true", help="A tiny model, for a smoke run of the script.")
    parser.add_argument("--device", default="cuda")
    return parser.parse_args()


def time_iterations(pipe, cli, cuda: bool, resolution: int):
    """One warm-up iteration, then `cli.iterations` timed ones: (their metrics, the warm-up's seconds, images per
    iteration)."""
    prompts = [f"a photo of object number {i}" for i in range(cli.prompts)]
    with tempfile.TemporaryDirectory() as output_dir:
        config = NFTConfig(
            output_dir=output_dir, report_to="none", resolution=resolution, max_sequence_length=16 if cli.tiny else 256,
            prompts_per_iteration=cli.prompts, group_size=cli.group_size,
            sample_batch_size=None if cli.sampling_batch_from_memory else cli.micro_batch,
            train_batch_size=cli.micro_batch, num_sampling_steps=10, sampler="dpm_solver", kl_beta=cli.kl_beta,
            mixed_precision="bf16" if cuda else "no", gradient_checkpointing=cli.gradient_checkpointing,
            torch_compile=cli.compile, max_steps=1000, batch_frozen_forwards=not cli.before_pair,
            fused_adamw=False if cli.before_pair else None,
        )
        trainer = NFTTrainer(pipe, "jpeg_compressibility", config, prompts)
        print(f"sampling batch: {trainer.sampling_batch}", flush=True)
        start = time.perf_counter()
        trainer.step()  # warm-up (and compilation)
        warmup = time.perf_counter() - start
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        runs = []
        for _ in range(cli.iterations):
            runs.append(trainer.step())
            if cuda:
                torch.cuda.synchronize()
    return runs, warmup, config.images_per_iteration


def build_model(cli, device: str):
    """The pipeline `--model` names; `--tiny` gives a small one (Qwen-Image's own build, shrunk; else tiny SD3)."""
    if cli.model == "qwenimage":
        return build_qwenimage_pipeline(cli.tiny, device)
    if cli.model == "flux1dev" and not cli.tiny:
        return build_flux_pipeline(device)
    return build_pipeline(cli.tiny, device)


def main():
    cli = parse_args()
    cuda = cli.device == "cuda" and torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    pipe = build_model(cli, device)
    resolution = 64 if cli.tiny else 512
    runs, warmup, images = time_iterations(pipe, cli, cuda, resolution)
    device = torch.cuda.get_device_name() if cuda else "CPU"
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    parts = ("sampling", "reward", "training", "iteration")
    median = {part: statistics.median(m[time_key(part)] for m in runs) for part in parts}
    name = {"sd35m": "SD3.5-Medium", "flux1dev": "FLUX.1-dev", "qwenimage": "Qwen-Image"}[cli.model]
    name = f"tiny stand-in for the {name}" if cli.tiny else name
    print(f"\n{device}; {name} transformer "
          f"({sum(p.numel() for p in pipe.transformer.parameters()) / 1e9:.2f} B params with LoRA), {resolution} px, "
          f"{images} images/iteration, micro-batch {cli.micro_batch}, kl_beta={cli.kl_beta}, compile={cli.compile}, "
          f"gradient checkpointing={cli.gradient_checkpointing}, old/reference pair and fused AdamW="
          f"{'off' if cli.before_pair else 'on'}; median of {cli.iterations} (warm-up {warmup:.1f} s).\n")
    print("| part | s / iteration | s / image |")
    print("| --- | ---: | ---: |")
    for part in parts:
        print(f"| {part} | {median[part]:.2f} | {median[part] / images:.4f} |")
    print(f"\nimages/s per GPU: {images / median['iteration']:.2f}   peak memory: {peak:.1f} GiB")


if __name__ == "__main__":
    main()
