"""Tiny, randomly initialised pipelines of every family the tests train, built offline (diffusers'
`get_dummy_components` in spirit): test scaffolding, outside the installed package.

They have the real classes (`SD3Transformer2DModel` with dual attention and RMS qk-norm or
`FluxTransformer2DModel`, CLIP and T5 text encoders, `AutoencoderKL`, `FlowMatchEulerDiscreteScheduler`) at a
size that runs a training iteration on a laptop CPU in about a second. Tests and benchmarks use them; nothing here
downloads anything. The offline tokenizers come from `diffusers_nft.demo.offline_text`, which the demo's builder
uses too.
"""

import os
import tempfile

import torch

from diffusers_nft.demo.offline_text import corpus, tiny_clip_config, tiny_text_stack, train_clip_tokenizer

__all__ = ["train_clip_tokenizer"]  # re-exported: the reward-model fixtures build CLIP tokenizers too


def _tiny_vae(sample_size: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
        sample_size=8 * sample_size, shift_factor=0.0, scaling_factor=1.0,
        use_quant_conv=False, use_post_quant_conv=False,
    )


def build_tiny_sd3_pipeline(
    seed: int = 0, width: int = 64, num_layers: int = 2, sample_size: int = 8, sd35: bool = True
):
    """Build a tiny SD3.5-style `StableDiffusion3Pipeline` with random weights, fully offline.

    Args:
        seed: Seed for the random weights; the same seed gives the same pipeline.
        width: Transformer width (`num_attention_heads * attention_head_dim`).
        num_layers: Number of transformer blocks (block 0 uses SD3.5 dual attention).
        sample_size: Latent side length; images are `8 * sample_size` pixels square.
        sd35: SD3.5 blocks (dual attention in block 0, RMS qk-norm) or plain SD3 blocks.

    Returns:
        A `StableDiffusion3Pipeline` in float32 on the CPU.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer, tokenizer_3, text_encoder_3 = tiny_text_stack(folder)
    heads = 2
    transformer = SD3Transformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=4, out_channels=4, num_layers=num_layers,
        attention_head_dim=width // heads, num_attention_heads=heads, joint_attention_dim=text_encoder_3.config.d_model,
        caption_projection_dim=width, pooled_projection_dim=32, pos_embed_max_size=sample_size // 2 * 2,
        dual_attention_layers=(0,) if sd35 else (), qk_norm="rms_norm" if sd35 else None,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_tiny_vae(sample_size),
        text_encoder=CLIPTextModelWithProjection(tiny_clip_config(tokenizer)).eval(),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(tiny_clip_config(tokenizer)).eval(),
        tokenizer_2=tokenizer,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )


def build_tiny_sd3_controlnet_pipeline(seed: int = 0, sample_size: int = 8):
    """Build a tiny `StableDiffusion3ControlNetPipeline`: the tiny SD3.5 beside a one-layer `SD3ControlNetModel` of
    its shape, offline, its zero-initialised layers drawn at random. The VAE's log-variance is pinned at -30 so that the pipeline's sample of the control image's
    latents is their mode to 3e-7, as for a trained VAE."""
    from diffusers import SD3ControlNetModel, StableDiffusion3ControlNetPipeline

    sd3 = build_tiny_sd3_pipeline(seed)
    config = sd3.transformer.config
    controlnet = SD3ControlNetModel(
        sample_size=config.sample_size, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
        attention_head_dim=config.attention_head_dim, num_attention_heads=config.num_attention_heads,
        joint_attention_dim=config.joint_attention_dim, caption_projection_dim=config.caption_projection_dim,
        pooled_projection_dim=config.pooled_projection_dim, pos_embed_max_size=config.pos_embed_max_size,
        qk_norm=config.qk_norm,
    )
    conv_out = sd3.vae.encoder.conv_out
    with torch.no_grad():
        conv_out.weight[conv_out.out_channels // 2:] = 0
        conv_out.bias[conv_out.out_channels // 2:] = -30.0
        # A new ControlNet's input and output layers are zeros (it starts as a no-op); a trained one's are not.
        for module in (controlnet.pos_embed_input, controlnet.controlnet_blocks):
            for parameter in module.parameters():
                parameter.normal_(0.0, 0.1)
    return StableDiffusion3ControlNetPipeline(controlnet=controlnet, **sd3.components)


def build_tiny_flux_pipeline(seed: int = 0, guidance_embeds: bool = False, sample_size: int = 8):
    """Build a tiny FLUX.1-style `FluxPipeline` with random weights, fully offline.

    Args:
        seed: Seed for the random weights.
        guidance_embeds: A FLUX.1-dev style guidance embedding (True) or schnell style (False).
        sample_size: Latent side length; images are `8 * sample_size` pixels square.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer, tokenizer_2, text_encoder_2 = tiny_text_stack(folder)
    clip_config = tiny_clip_config(tokenizer, hidden=32)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=text_encoder_2.config.d_model,
        pooled_projection_dim=clip_config.hidden_size, guidance_embeds=guidance_embeds, axes_dims_rope=(4, 6, 6),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
    )
    return FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=_tiny_vae(sample_size),
        text_encoder=CLIPTextModel(clip_config).eval(),
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )


def _train_gemma_tokenizer(folder: str):
    import sentencepiece as spm
    from transformers import GemmaTokenizerFast

    corpus_file = os.path.join(folder, "corpus.txt")
    with open(corpus_file, "w") as f:
        f.write("\n".join(corpus() * 4))
    spm.SentencePieceTrainer.train(
        input=corpus_file, model_prefix=os.path.join(folder, "tokenizer"), vocab_size=100, model_type="unigram",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, minloglevel=2,
    )
    os.remove(corpus_file)
    return GemmaTokenizerFast.from_pretrained(folder)


def build_tiny_lumina2_pipeline(seed: int = 0, sample_size: int = 8):
    """Build a tiny Lumina-Image-2.0-style `Lumina2Pipeline` (Gemma-2 text encoder) with random weights, offline.

    Its prompts carry the pipeline's long system prompt: use `max_sequence_length=256` so they are not cut.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, Lumina2Pipeline, Lumina2Transformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = _train_gemma_tokenizer(folder)
    text_encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=16, pad_token_id=0, bos_token_id=2, eos_token_id=1,
        )
    ).eval()
    transformer = Lumina2Transformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=4, hidden_size=32, num_layers=1, num_refiner_layers=1,
        num_attention_heads=2, num_kv_heads=1, multiple_of=16, axes_dim_rope=(4, 6, 6), axes_lens=(300, 32, 32),
        cap_feat_dim=32,
    )
    return Lumina2Pipeline(
        transformer=transformer, vae=_tiny_vae(sample_size), text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )


# The chat template Qwen tokenizers carry, reduced to what the pipelines use (roles, generation prompt).
_QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _train_qwen_tokenizer(folder: str):
    """A GPT-2-style byte-level BPE tokenizer with Qwen's special tokens and a chat template, built offline.

    The merges are learnt from the corpus and the Qwen-Image prompt template, so that the template tokenizes to
    about as many tokens as with Qwen's own tokenizer (Qwen-Image drops the template's first 34 tokens) and prompts
    are not cut by a short `max_sequence_length`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    template = ("Describe the image by detailing the color, shape, size, texture, quantity, text, spatial "
                "relationships of the objects and background: system user assistant")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus() * 4 + [template] * 16, trainer)
    bpe.model.save(folder)
    tokenizer = Qwen2TokenizerFast.from_pretrained(
        folder, pad_token="<|endoftext|>", eos_token="<|im_end|>", unk_token=None, model_max_length=1024,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    tokenizer.chat_template = _QWEN_CHAT_TEMPLATE
    return tokenizer


def build_tiny_qwenimage_pipeline(seed: int = 0, sample_size: int = 8):
    """Build a tiny `QwenImagePipeline` (Qwen2.5-VL text encoder, Qwen-Image VAE) with random weights, offline.

    Shapes follow diffusers' own tests of the pipeline; images are `8 * sample_size` pixels square.
    """
    from diffusers import QwenImagePipeline
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = _train_qwen_tokenizer(folder)
    vocab = len(tokenizer)
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "rope_theta": 1000000.0, "vocab_size": vocab + 3,
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16, vocab_size=vocab + 3,
        vision_start_token_id=vocab, vision_end_token_id=vocab + 1, vision_token_id=vocab + 2,
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    return QwenImagePipeline(text_encoder=text_encoder, tokenizer=tokenizer, **_tiny_qwenimage_parts())


def _tiny_qwenimage_parts() -> dict:
    """The transformer, VAE and scheduler of the Qwen-Image builds (drawn after their text encoders, as always)."""
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel

    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1, temperal_downsample=[False, True],
        latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    )
    return {"transformer": transformer, "vae": vae, "scheduler": qwenimage_scheduler()}


def qwenimage_scheduler():
    """Qwen-Image's own scheduler config (dynamic, exponential shift), for the tiny builds and the GPU benchmark."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, base_image_seq_len=256, max_image_seq_len=8192,
        shift_terminal=0.02, time_shift_type="exponential",
    )


def build_tiny_qwenimage_edit_pipeline(seed: int = 0):
    """The first Qwen-Image-Edit (`QwenImageEditPipeline`) on the parts of `build_tiny_qwenimage_edit_plus_pipeline`
    (its notes hold; its sizes come from its module's `calculate_dimensions`)."""
    from diffusers import QwenImageEditPipeline

    plus = build_tiny_qwenimage_edit_plus_pipeline(seed)
    pipe = QwenImageEditPipeline(**plus.components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_qwenimage_edit_plus_pipeline(seed: int = 0):
    """Build a tiny `QwenImageEditPlusPipeline` (Qwen-Image-Edit-2509: a Qwen2.5-VL text encoder that reads the
    references through a real Qwen2-VL image processor), offline. Not saved and reloaded: its processor is the
    image-only subclass of `_qwen_vl_processor_class`, which `from_pretrained` cannot name; build it again with the
    same seed for a fresh copy. The pipeline sizes its references by its module's `VAE_IMAGE_SIZE` (1024^2) and
    `CONDITION_IMAGE_SIZE` (384^2): tests shrink both (`qwen_edit_sizes`)."""
    from diffusers import QwenImageEditPlusPipeline

    torch.manual_seed(seed)
    tokenizer, processor, text_encoder = _tiny_qwen2_5_vl()
    pipe = QwenImageEditPlusPipeline(text_encoder=text_encoder, tokenizer=tokenizer, processor=processor,
                                     **_tiny_qwenimage_parts())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_qwen3(tokenizer, causal_lm: bool, num_layers: int = 2):
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    config = Qwen3Config(hidden_size=16, intermediate_size=16, num_hidden_layers=num_layers, num_attention_heads=2,
                         num_key_value_heads=2, head_dim=8, vocab_size=len(tokenizer), max_position_embeddings=512,
                         bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return (Qwen3ForCausalLM if causal_lm else Qwen3Model)(config).eval()


def build_tiny_flux2_klein_pipeline(seed: int = 0, sample_size: int = 8):
    """Build a tiny `Flux2KleinPipeline` (Qwen3 text encoder, FLUX.2 VAE with its batch-norm latents), offline.

    The text encoder has 27 narrow layers so that the pipeline's default hidden-state layers (9, 18, 27) exist.
    """
    from diffusers import Flux2KleinPipeline

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = _train_qwen_tokenizer(folder)
    parts = _tiny_flux2_parts(sample_size, guidance_embeds=False)  # drawn before the text encoder, as always
    return Flux2KleinPipeline(text_encoder=_tiny_qwen3(tokenizer, True, num_layers=27), tokenizer=tokenizer,
                              is_distilled=False, **parts)


def _tiny_flux2_parts(sample_size: int, guidance_embeds: bool) -> dict:
    """The transformer, VAE (with its batch-norm latent statistics) and scheduler both FLUX.2 builds share."""
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel

    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=48, timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=guidance_embeds,
    )
    vae = AutoencoderKLFlux2(
        sample_size=8 * sample_size, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift=3.0)
    return {"transformer": transformer, "vae": vae, "scheduler": scheduler}


def build_tiny_zimage_pipeline(seed: int = 0, sample_size: int = 8):
    """Build a tiny `ZImagePipeline` (Qwen3 text encoder, single-stream DiT on reversed time), offline."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = _train_qwen_tokenizer(folder)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=2, n_refiner_layers=1, n_heads=2,
        n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
        axes_dims=[8, 4, 4], axes_lens=[256, 32, 32],
    )
    with torch.no_grad():  # allocated with torch.empty: random memory would leak into the outputs
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift=3.0)
    return ZImagePipeline(scheduler=scheduler, vae=_tiny_vae(sample_size), text_encoder=_tiny_qwen3(tokenizer, False),
                          tokenizer=tokenizer, transformer=transformer)


def build_tiny_wan_pipeline(seed: int = 0, two_experts: bool = False, boundary_ratio: float = 0.875):
    """Build a tiny Wan text-to-video `WanPipeline` (T5 encoder, Wan VAE, UniPC flow scheduler), offline.

    Args:
        seed: Seed for the random weights.
        two_experts: Wan 2.2 style: a second transformer (`transformer_2`) for the low-noise steps.
        boundary_ratio: Where Wan 2.2 switches experts, as a fraction of the 1000 training timesteps.

    Videos of `4 k + 1` frames at `8 n` pixels: 64 x 64 x 5 frames gives latents `(16, 2, 8, 8)`.
    """
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        _, tokenizer, text_encoder = tiny_text_stack(folder)

    def transformer():
        return WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
            text_dim=text_encoder.config.d_model, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        )

    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer(),
        transformer_2=transformer() if two_experts else None, boundary_ratio=boundary_ratio if two_experts else None,
    )


def build_tiny_wan_i2v_pipeline(seed: int = 0, two_experts: bool = False, boundary_ratio: float = 0.875):
    """Build a tiny `WanImageToVideoPipeline`, offline: Wan 2.1 style (a CLIP image encoder whose features the
    transformer attends to) by default; Wan 2.2 A14B style with `two_experts` (no image encoder, two experts).
    The transformer takes 36 channels: the 16 of the latents, 4 of the first-frame mask and 16 of its latents."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    wan = build_tiny_wan_pipeline(seed)
    torch.manual_seed(seed + 1)

    def transformer():
        return WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36, out_channels=16,
            text_dim=wan.text_encoder.config.d_model, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=None if two_experts else 4,
        )

    image_encoder = image_processor = None
    if not two_experts:
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            intermediate_size=16, patch_size=1)).eval()
        image_processor = CLIPImageProcessor(crop_size=32, size=32)
    return WanImageToVideoPipeline(
        tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, vae=wan.vae, scheduler=wan.scheduler,
        image_encoder=image_encoder, image_processor=image_processor, transformer=transformer(),
        transformer_2=transformer() if two_experts else None, boundary_ratio=boundary_ratio if two_experts else None,
    )


def build_tiny_wan_vace_pipeline(seed: int = 0):
    """Build a tiny `WanVACEPipeline` (Wan VACE: a conditioning video's latents, with its mask, feed VACE blocks
    beside the transformer's), offline, on the tiny Wan's text encoder and VAE; no family file serves it: the traced
    family does."""
    from diffusers import WanVACEPipeline, WanVACETransformer3DModel

    wan = build_tiny_wan_pipeline(seed)
    torch.manual_seed(seed + 1)
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=wan.text_encoder.config.d_model, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, vace_layers=[0, 1],
        vace_in_channels=2 * 16 + 8 * 8,  # inactive and reactive latents, and the mask folded 8 x 8
    )
    pipe = WanVACEPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, vae=wan.vae, scheduler=wan.scheduler,
                           transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_auraflow_pipeline(seed: int = 0, sample_size: int = 8):
    """Build a tiny `AuraFlowPipeline` (UMT5 encoder, MMDiT + single DiT layers), offline. No family file: the
    traced family serves it."""
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        _, tokenizer, _ = tiny_text_stack(folder)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=1, num_heads=4, pad_token_id=0,
        eos_token_id=1, decoder_start_token_id=0,
    )).eval()
    transformer = AuraFlowTransformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=4, num_mmdit_layers=1, num_single_dit_layers=1,
        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
        out_channels=4, pos_embed_max_size=64,
    )
    return AuraFlowPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=_tiny_vae(sample_size),
                            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler())


def build_tiny_chroma_pipeline(seed: int = 0, sample_size: int = 8):
    """Build a tiny `ChromaPipeline` (T5 only, FLUX-style packed latents, a modulation approximator), offline."""
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        _, tokenizer, text_encoder = tiny_text_stack(folder)
    transformer = ChromaTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=text_encoder.config.d_model, axes_dims_rope=[4, 4, 8],
        approximator_hidden_dim=32, approximator_layers=1, approximator_num_channels=16,
    )
    return ChromaPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder, tokenizer=tokenizer,
                          transformer=transformer, vae=_tiny_vae(sample_size), image_encoder=None,
                          feature_extractor=None)



# A chat template over content lists (`[{"type": "text", "text": ...}]`), as FLUX.2 [dev] formats its prompts.
_CONTENT_LIST_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
)


def build_tiny_flux2_pipeline(seed: int = 0, sample_size: int = 8):
    """Build a tiny FLUX.2 [dev] `Flux2Pipeline` (Mistral-3 text encoder, guidance embedding), offline.

    The pipeline's `tokenizer` is a Mistral-3 `PixtralProcessor`, whose offline build needs torchvision (which
    breaks diffusers here); a byte-level tokenizer with a content-list chat template stands in: the pipeline only
    calls its `apply_chat_template`. The text encoder has 30 narrow layers for the default layers (10, 20, 30).
    """
    from diffusers import Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = _train_qwen_tokenizer(folder)
    tokenizer.chat_template = _CONTENT_LIST_TEMPLATE
    vocab = len(tokenizer)
    config = Mistral3Config(
        text_config={"model_type": "mistral", "vocab_size": vocab + 1, "hidden_size": 16, "intermediate_size": 32,
                     "max_position_embeddings": 512, "num_attention_heads": 2, "num_hidden_layers": 30,
                     "num_key_value_heads": 1, "head_dim": 8, "sliding_window": None,
                     "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id},
        vision_config={"model_type": "pixtral", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "intermediate_size": 32, "image_size": 32, "patch_size": 16, "num_channels": 3},
        image_token_index=vocab, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    text_encoder = Mistral3ForConditionalGeneration(config).eval()
    return Flux2Pipeline(text_encoder=text_encoder, tokenizer=tokenizer,
                         **_tiny_flux2_parts(sample_size, guidance_embeds=True))


# A chat template that renders image content parts as `image_text` and text parts as themselves.
_VL_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}IMAGE{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _vl_tokenizer(folder: str, image_tokens: list):
    """The offline Qwen tokenizer with `image_tokens` added and a chat template that places them."""
    tokenizer = _train_qwen_tokenizer(folder)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", *image_tokens]})
    tokenizer.chat_template = _VL_CHAT_TEMPLATE.replace("IMAGE", "".join(image_tokens[:3]))
    return tokenizer


def _qwen_vl_processor_class():
    """`Qwen2_5_VLProcessor` without its video processor. transformers checks each part's class against
    `BaseVideoProcessor`, which needs torchvision (not installed here, and it breaks diffusers' imports); the image
    path, the part a judge uses, is the real processor's."""
    from transformers import Qwen2_5_VLProcessor

    class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            return type(argument)

    return ImageOnlyQwen2_5_VLProcessor


def _tiny_qwen_vl_processor():
    """A Qwen2.5-VL tokenizer (built offline, with the vision tokens), its processor (Qwen's image processor at
    28^2 to 56^2 pixels) and the vision token ids a model config takes."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    specials = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = _vl_tokenizer(scratch, specials)
    ids = dict(zip(("vision_start_token_id", "image_token_id", "vision_end_token_id", "video_token_id"),
                   tokenizer.convert_tokens_to_ids(specials)))
    images = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2,
                                      temporal_patch_size=2)
    processor = _qwen_vl_processor_class()(image_processor=images, tokenizer=tokenizer,
                                           chat_template=tokenizer.chat_template)
    return tokenizer, processor, ids


def _tiny_qwen2_5_vl():
    """A tiny random `Qwen2_5_VLForConditionalGeneration` (16 wide, 2 text layers, 1 vision layer), with its offline
    tokenizer and processor (`_tiny_qwen_vl_processor`)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer, processor, ids = _tiny_qwen_vl_processor()
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "rope_theta": 1000000.0, "vocab_size": len(tokenizer),
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                     "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        hidden_size=16, vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=tokenizer.eos_token_id, **ids,
    )
    return tokenizer, processor, Qwen2_5_VLForConditionalGeneration(config).eval()


def build_tiny_qwen2_5_vl_judge(folder: str, seed: int = 0):
    """Save a tiny random `Qwen2_5_VLForConditionalGeneration` to `folder` (loadable by
    `AutoModelForImageTextToText`) and return its processor (Qwen's image processor, a tokenizer built offline)."""
    torch.manual_seed(seed)
    _, processor, model = _tiny_qwen2_5_vl()
    model.save_pretrained(folder)
    return processor


def build_tiny_llava_judge(folder: str, seed: int = 0) -> None:
    """Save a tiny random `LlavaForConditionalGeneration` and its `LlavaProcessor` to `folder`: both load with
    `AutoModelForImageTextToText` / `AutoProcessor`, as a Hub model does."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = _vl_tokenizer(scratch, ["<image>"])
    images = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=tokenizer.chat_template)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=28, patch_size=14, projection_dim=16),
        text_config=LlamaConfig(hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=2, vocab_size=len(tokenizer), bos_token_id=None,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
    )
    LlavaForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)


def build_tiny_flux_controlnet_pipeline(seed: int = 0, sample_size: int = 8):
    """Build a tiny `FluxControlNetPipeline` (an InstantX-style `FluxControlNetModel` on the control image's packed
    VAE latents) beside the tiny FLUX.1, offline, its zero-initialised layers drawn at random; the VAE's
    log-variance pinned at -30 so that the pipeline's sample of the latents is their mode to 3e-7."""
    from diffusers import FluxControlNetModel, FluxControlNetPipeline

    flux = build_tiny_flux_pipeline(seed)
    config = flux.transformer.config
    controlnet = FluxControlNetModel(
        patch_size=1, in_channels=config.in_channels, num_layers=1, num_single_layers=1,
        attention_head_dim=config.attention_head_dim, num_attention_heads=config.num_attention_heads,
        joint_attention_dim=config.joint_attention_dim, pooled_projection_dim=config.pooled_projection_dim,
        guidance_embeds=config.guidance_embeds, axes_dims_rope=config.axes_dims_rope,
    )
    conv_out = flux.vae.encoder.conv_out
    with torch.no_grad():
        conv_out.weight[conv_out.out_channels // 2:] = 0
        conv_out.bias[conv_out.out_channels // 2:] = -30.0
        for module in (controlnet.controlnet_x_embedder, controlnet.controlnet_blocks,
                       controlnet.controlnet_single_blocks):
            for parameter in module.parameters():
                parameter.normal_(0.0, 0.1)
    return FluxControlNetPipeline(controlnet=controlnet, **flux.components)


def build_tiny_flux_control_pipeline(seed: int = 0, sample_size: int = 8):
    """Build a tiny `FluxControlPipeline` (FLUX.1 Canny/Depth [dev]: the control image's packed latents appended to
    the latents' channels, so the transformer takes twice the channels it returns), offline; no family file serves
    it: the traced family does. The VAE's log-variance is pinned at -30, so the pipeline's sample of the control
    latents is their mode (as for a trained VAE), whatever the call's generator."""
    from diffusers import FluxControlPipeline, FluxTransformer2DModel

    flux = build_tiny_flux_pipeline(seed, guidance_embeds=True)
    config = flux.transformer.config
    torch.manual_seed(seed + 1)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=2 * config.in_channels, out_channels=config.in_channels, num_layers=1,
        num_single_layers=1, attention_head_dim=config.attention_head_dim,
        num_attention_heads=config.num_attention_heads, joint_attention_dim=config.joint_attention_dim,
        pooled_projection_dim=config.pooled_projection_dim, guidance_embeds=True, axes_dims_rope=config.axes_dims_rope,
    )
    conv_out = flux.vae.encoder.conv_out  # the pipeline samples the control latents: pinned to their mode
    with torch.no_grad():
        conv_out.weight[conv_out.out_channels // 2:] = 0
        conv_out.bias[conv_out.out_channels // 2:] = -30.0
    parts = ("scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    return FluxControlPipeline(transformer=transformer, **{k: flux.components[k] for k in parts})


def build_tiny_flux_kontext_pipeline(seed: int = 0, sample_size: int = 8):
    """A tiny `FluxKontextPipeline` (FLUX.1 Kontext: the source image's latents join the sequence), offline; its
    guidance embedding is on, as FLUX.1 Kontext [dev]'s."""
    from diffusers import FluxKontextPipeline

    flux = build_tiny_flux_pipeline(seed=seed, guidance_embeds=True, sample_size=sample_size)
    return FluxKontextPipeline(**{k: v for k, v in flux.components.items() if k in ("transformer", "scheduler", "vae",
                               "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")})


def build_tiny_flux_fill_pipeline(seed: int = 0, sample_size: int = 8):
    """A tiny `FluxFillPipeline` (FLUX.1 Fill, inpainting), offline: the transformer's input takes the latents, the
    masked image's latents and the mask folded into 8 x 8 latent patches (16 + 16 + 256 channels)."""
    from diffusers import FluxFillPipeline, FluxTransformer2DModel

    flux = build_tiny_flux_pipeline(seed=seed, guidance_embeds=True, sample_size=sample_size)
    components = dict(flux.components)
    config = dict(components["transformer"].config)
    torch.manual_seed(seed)
    components["transformer"] = FluxTransformer2DModel(**{
        **{k: v for k, v in config.items() if not k.startswith("_")}, "in_channels": 16 + 16 + 256, "out_channels": 16})
    # A sharp posterior, as trained VAEs have (the pipeline encodes the masked image by sampling, not by the mode):
    # the log-variance half of the encoder's output at -30, so a sample is the mode to 3e-7.
    conv_out = components["vae"].encoder.conv_out
    with torch.no_grad():
        half = conv_out.out_channels // 2
        conv_out.weight[half:] = 0
        conv_out.bias[half:] = -30.0
    return FluxFillPipeline(**{k: components[k] for k in ("transformer", "scheduler", "vae", "text_encoder", "tokenizer",
                                                           "text_encoder_2", "tokenizer_2")})
