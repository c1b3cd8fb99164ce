"""Build the edit demo's model from a seed: a tiny FLUX.1 Kontext-shaped `FluxKontextPipeline`.

    python -m diffusers_nft.demo.build_edit --output diffusers_nft/demo/weights/edit_pipeline

It reuses the digits pipeline's trained VAE, its T5 encoder and tokenizers (`weights/pipeline`), adds a frozen
random CLIP text encoder, and trains a `FluxTransformer2DModel` (no guidance embedding, so CFG is Kontext's true
CFG) by flow matching on (source, instruction, edited) triples of `edit_world.training_pairs`: the source's packed
latents join the sequence at their own rotary ids, as `FluxKontextPipeline` feeds them. 10% of the instructions are
dropped (the source kept), so that CFG is possible. The build is deterministic on CPU.
"""

import argparse
import os
import time

import torch

from .edit_world import COLOR_EDITS, DIGIT_EDITS, instruction, training_pairs
from .world import COLOR_NAMES

MAX_SEQUENCE_LENGTH = 32


def build_edit_pipeline(seed: int, width: int, layers: int):
    """The pipeline around a fresh transformer, from the digits pipeline's VAE and text stack."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    from . import PIPELINE
    from .offline_text import tiny_clip_config

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(PIPELINE, subfolder="tokenizer")
    t5 = T5EncoderModel.from_pretrained(PIPELINE, subfolder="text_encoder_3").eval()
    clip = CLIPTextModel(tiny_clip_config(tokenizer, hidden=32)).eval()
    heads = width // 32
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=layers, num_single_layers=layers, attention_head_dim=32,
        num_attention_heads=heads, joint_attention_dim=t5.config.d_model, pooled_projection_dim=32,
        guidance_embeds=False, axes_dims_rope=(8, 12, 12),
    )
    return FluxKontextPipeline(
        transformer=transformer, vae=AutoencoderKL.from_pretrained(PIPELINE, subfolder="vae"),
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                  base_image_seq_len=256, max_image_seq_len=4096),
        text_encoder=clip, tokenizer=tokenizer, text_encoder_2=t5,
        tokenizer_2=T5TokenizerFast.from_pretrained(PIPELINE, subfolder="tokenizer_3"),
    )


def all_instructions():
    """Every instruction of the world, and the empty one last."""
    prompts = [instruction("color", 0, c, k) for k in range(len(COLOR_EDITS)) for c in COLOR_NAMES]
    prompts += [instruction("digit", d, "", k) for k in range(len(DIGIT_EDITS)) for d in range(10)]
    return prompts + [""]


@torch.no_grad()
def encode_instructions(pipe):
    """`{instruction: (embeds, pooled)}` for every instruction and the empty one."""
    prompts = all_instructions()
    embeds, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, max_sequence_length=MAX_SEQUENCE_LENGTH)
    return {p: (embeds[i], pooled[i]) for i, p in enumerate(prompts)}


@torch.no_grad()
def packed_latents(pipe, images: torch.Tensor) -> torch.Tensor:
    vae = pipe.vae
    latents = (vae.encode(images * 2 - 1).latent_dist.mode() - vae.config.shift_factor) * vae.config.scaling_factor
    return pipe._pack_latents(latents, *latents.shape)


def kontext_velocity(pipe, x_t: torch.Tensor, source: torch.Tensor, sigma: torch.Tensor, embeds, pooled):
    """The transformer's velocity for packed noisy latents beside the packed source, as the pipeline calls it."""
    batch, side = len(x_t), int(x_t.shape[1] ** 0.5)
    ids = pipe._prepare_latent_image_ids(batch, side, side, x_t.device, x_t.dtype)
    source_ids = ids.clone()
    source_ids[..., 0] = 1
    text_ids = torch.zeros(embeds.shape[1], 3)
    out = pipe.transformer(hidden_states=torch.cat([x_t, source], 1), timestep=sigma, guidance=None,
                           pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=text_ids,
                           img_ids=torch.cat([ids, source_ids]), return_dict=False)[0]
    return out[:, : x_t.shape[1]]


def train_edit_transformer(pipe, steps: int, seed: int, log, batch_size: int = 64, caption_dropout: float = 0.1,
                           snapshot=None):
    """Flow matching on edit triples; `snapshot(step)` is called every 1000 steps (to pick a step count)."""
    table = encode_instructions(pipe)
    optimizer = torch.optim.AdamW(pipe.transformer.parameters(), lr=5e-4, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    pipe.transformer.train()
    for step in range(steps):
        sources, targets, prompts = training_pairs(seed * 7919 + step, batch_size)
        drop = torch.rand(batch_size, generator=generator) < caption_dropout
        prompts = ["" if d else p for p, d in zip(prompts, drop.tolist())]
        embeds = torch.stack([table[p][0] for p in prompts])
        pooled = torch.stack([table[p][1] for p in prompts])
        source, x0 = packed_latents(pipe, sources), packed_latents(pipe, targets)
        sigma = torch.sigmoid(torch.randn(batch_size, generator=generator))
        noise = torch.randn(x0.shape, generator=generator)
        x_t = (1 - sigma.view(-1, 1, 1)) * x0 + sigma.view(-1, 1, 1) * noise
        loss = torch.nn.functional.mse_loss(kontext_velocity(pipe, x_t, source, sigma, embeds, pooled), noise - x0)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pipe.transformer.parameters(), 1.0)
        optimizer.step()
        if step % 200 == 0 or step == steps - 1:
            log(f"edit transformer step {step}: loss {loss.item():.4f}")
        if snapshot is not None and (step + 1) % 1000 == 0:
            pipe.transformer.eval()
            snapshot(step + 1)
            pipe.transformer.train()
    pipe.transformer.eval()
    return pipe


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--output", default=os.path.join(here, "weights", "edit_pipeline"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--snapshots", action="store_true", help="Also save the transformer every 1000 steps.")
    args = parser.parse_args(argv)
    start = time.time()

    def log(message):
        print(f"[{time.time() - start:7.1f}s] {message}", flush=True)

    pipe = build_edit_pipeline(args.seed, args.width, args.layers)

    def snapshot(step):
        if args.snapshots:
            pipe.transformer.save_pretrained(os.path.join(args.output + "-snapshots", f"step-{step}"))
            log(f"snapshot at step {step}")

    train_edit_transformer(pipe, args.steps, args.seed, log, snapshot=snapshot)
    pipe.save_pretrained(args.output)
    log(f"saved to {args.output}")


if __name__ == "__main__":
    main()
