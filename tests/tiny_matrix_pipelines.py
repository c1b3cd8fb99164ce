"""Tiny offline builds of the text-to-image and text-to-video classes that have no family file: the rows of
`benchmarks/family_matrix.py` beyond `tiny_pipelines.py`. Test scaffolding, outside the installed package.

Shapes follow `get_dummy_components` in diffusers' own `tests/pipelines/<package>/`; the text encoders and
tokenizers those tests download are built here from configs and from tokenizers trained offline. Each builder
returns the pipeline with random weights, in float32 on the CPU, and draws the same weights for the same seed.
"""

import tempfile

import torch

from diffusers_nft.demo.offline_text import tiny_clip_config, tiny_text_stack, train_clip_tokenizer
from tiny_pipelines import _train_gemma_tokenizer, _train_qwen_tokenizer, _tiny_vae


def _drawn_like_trained(model: torch.nn.Module) -> None:
    """Draw the layers a new model initialises to zeros (output layers, modulation gates), as a trained model's are
    not: otherwise the model predicts 0, or skips its blocks, and a LoRA on its attention changes nothing."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 0 and not parameter.any():
                parameter.normal_(0.0, 0.1)


def _t5(d_model: int = 32):
    """A trained T5 tokenizer and a one-layer T5 encoder of width `d_model`."""
    with tempfile.TemporaryDirectory() as folder:
        _, tokenizer, encoder = tiny_text_stack(folder, t5_dim=d_model)
    return tokenizer, encoder


def _clip(hidden: int = 16, max_length: int = 77):
    """A trained CLIP tokenizer padding to `max_length` and its tiny CLIP text config of width `hidden`."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = train_clip_tokenizer(folder, max_length)
    return tokenizer, tiny_clip_config(tokenizer, hidden)


def _llama_tokenizer():
    """A sentencepiece Llama tokenizer (bos 2, eos 1, pad 0), trained on the corpus like the Gemma one."""
    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as folder:
        gemma = _train_gemma_tokenizer(folder)
        tokenizer = LlamaTokenizer.from_pretrained(folder, pad_token="<pad>", legacy=False)
    tokenizer.model_max_length = gemma.model_max_length = 256
    return tokenizer


def _llama(tokenizer, hidden: int, causal_lm: bool, num_layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=num_layers, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return (LlamaForCausalLM if causal_lm else LlamaModel)(config).eval()


def build_tiny_bria_pipeline(seed: int = 0):
    """`BriaPipeline` (BRIA 3.2: T5 encoder, FLUX-style transformer without pooled text), offline."""
    from diffusers import AutoencoderKL, BriaPipeline, BriaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(seed)
    tokenizer, text_encoder = _t5(32)
    transformer = BriaTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=None, axes_dims_rope=[0, 4, 4],
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16), in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, norm_num_groups=4, shift_factor=0,
        scaling_factor=0.13025, layers_per_block=1,
    )
    return BriaPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                        text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=None, feature_extractor=None)


def build_tiny_ltx_pipeline(seed: int = 0):
    """`LTXPipeline` (LTX-Video: T5 encoder, causal video VAE), offline."""
    from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline,
                           LTXVideoTransformer3DModel)

    torch.manual_seed(seed)
    tokenizer, text_encoder = _t5(32)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
        cross_attention_dim=32, num_layers=1, caption_channels=32,
    )
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1,
        patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    return LTXPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                       text_encoder=text_encoder, tokenizer=tokenizer)


def build_tiny_mochi_pipeline(seed: int = 0):
    """`MochiPipeline` (Mochi 1: T5 encoder, asymmetric DiT), offline."""
    from diffusers import AutoencoderKLMochi, FlowMatchEulerDiscreteScheduler, MochiPipeline, MochiTransformer3DModel

    torch.manual_seed(seed)
    tokenizer, text_encoder = _t5(32)
    transformer = MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
        in_channels=12, out_channels=None, qk_norm="rms_norm", text_embed_dim=32, time_embed_dim=4,
        activation_fn="swiglu", max_sequence_length=16,
    )
    vae = AutoencoderKLMochi(latent_channels=12, out_channels=3, encoder_block_out_channels=(32, 32, 32, 32),
                             decoder_block_out_channels=(32, 32, 32, 32), layers_per_block=(1, 1, 1, 1, 1))
    return MochiPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                         text_encoder=text_encoder, tokenizer=tokenizer)


def build_tiny_cogview4_pipeline(seed: int = 0):
    """`CogView4Pipeline` (GLM-4 encoder; its timesteps are unshifted beside shifted sigmas), offline."""
    from diffusers import CogView4Pipeline, CogView4Transformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import GlmConfig, GlmModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = _train_qwen_tokenizer(folder)
    text_encoder = GlmModel(GlmConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=16,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                      pad_token_id=tokenizer.pad_token_id)).eval()
    transformer = CogView4Transformer2DModel(patch_size=2, in_channels=4, num_layers=2, attention_head_dim=4,
                                             num_attention_heads=4, out_channels=4, text_embed_dim=32,
                                             time_embed_dim=8, condition_dim=4)
    scheduler = FlowMatchEulerDiscreteScheduler(base_shift=0.25, max_shift=0.75, base_image_seq_len=256,
                                                use_dynamic_shifting=True, time_shift_type="linear")
    return CogView4Pipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=_tiny_vae(8),
                            transformer=transformer, scheduler=scheduler)


def build_tiny_hunyuan_video_pipeline(seed: int = 0):
    """`HunyuanVideoPipeline` (Llama and CLIP encoders, guidance-distilled transformer), offline."""
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline,
                           HunyuanVideoTransformer3DModel)
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = _llama_tokenizer()
    tokenizer_2, clip_config = _clip(8)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
    )
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True,
    )
    return HunyuanVideoPipeline(
        text_encoder=_llama(tokenizer, 16, causal_lm=False), tokenizer=tokenizer, transformer=transformer, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=CLIPTextModel(clip_config).eval(),
        tokenizer_2=tokenizer_2,
    )


def build_tiny_hidream_pipeline(seed: int = 0):
    """`HiDreamImagePipeline` (two CLIPs, T5 and Llama; a mixture-of-experts transformer), offline."""
    from diffusers import FlowMatchEulerDiscreteScheduler, HiDreamImagePipeline, HiDreamImageTransformer2DModel
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer, clip_config = _clip(32, max_length=128)
    clip_config.max_position_embeddings, clip_config.projection_dim = 128, 32
    tokenizer_3, text_encoder_3 = _t5(32)
    tokenizer_4 = _llama_tokenizer()
    transformer = HiDreamImageTransformer2DModel(
        patch_size=2, in_channels=4, out_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=4, caption_channels=[32, 16], text_emb_dim=64, num_routed_experts=4,
        num_activated_experts=2, axes_dims_rope=(4, 2, 2), max_resolution=(32, 32), llama_layers=(0, 1),
    ).eval()
    pipe = HiDreamImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae(8),
        text_encoder=CLIPTextModelWithProjection(clip_config).eval(), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(clip_config).eval(), tokenizer_2=tokenizer,
        text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3,
        text_encoder_4=_llama(tokenizer_4, 16, causal_lm=True), tokenizer_4=tokenizer_4, transformer=transformer,
    )
    pipe.default_sample_size = 8  # it resizes every request to this area (1024^2 for the real model): 64^2 here
    return pipe


def build_tiny_lumina_pipeline(seed: int = 0):
    """`LuminaPipeline` (Lumina-Next: Gemma encoder), offline."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LuminaNextDiT2DModel, LuminaPipeline
    from transformers import GemmaConfig, GemmaForCausalLM

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = _train_gemma_tokenizer(folder)
    text_encoder = GemmaForCausalLM(GemmaConfig(vocab_size=len(tokenizer), head_dim=4, hidden_size=8,
                                                intermediate_size=16, num_attention_heads=2, num_hidden_layers=2,
                                                num_key_value_heads=2, pad_token_id=0, bos_token_id=2,
                                                eos_token_id=1)).eval()
    transformer = LuminaNextDiT2DModel(
        sample_size=8, patch_size=2, in_channels=4, hidden_size=16, num_layers=2, num_attention_heads=2,
        num_kv_heads=1, multiple_of=16, ffn_dim_multiplier=None, norm_eps=1e-5, learn_sigma=True, qk_norm=True,
        cross_attention_dim=8, scaling_factor=1.0,
    ).eval()
    return LuminaPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae(8),
                          text_encoder=text_encoder, tokenizer=tokenizer)


class PassThroughSafetyChecker(torch.nn.Module):
    """What diffusers' Cosmos tests pass for the Cosmos guardrail (a multi-GB model): every text and video is safe.
    Real users keep the guardrail."""

    def __init__(self):
        super().__init__()
        self.register_buffer("_device", torch.zeros(1), persistent=False)

    def check_text_safety(self, prompt: str) -> bool:
        return True

    def check_video_safety(self, frames):
        return frames

    @property
    def device(self):
        return self._device.device

    @property
    def dtype(self):
        return self._device.dtype


def build_tiny_cosmos2_pipeline(seed: int = 0, video: bool = False):
    """`Cosmos2TextToImagePipeline` (or, with `video`, `Cosmos2VideoToWorldPipeline`): T5, Wan VAE, offline."""
    from diffusers import (AutoencoderKLWan, Cosmos2TextToImagePipeline, Cosmos2VideoToWorldPipeline,
                           CosmosTransformer3DModel, FlowMatchEulerDiscreteScheduler)

    torch.manual_seed(seed)
    tokenizer, text_encoder = _t5(32)
    transformer = CosmosTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=16, num_layers=2, mlp_ratio=2,
        text_embed_dim=32, adaln_lora_dim=4, max_size=(4, 32, 32), patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0),
        concat_padding_mask=False, extra_pos_embed_type="learnable",
    )
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    cls = Cosmos2VideoToWorldPipeline if video else Cosmos2TextToImagePipeline
    return cls(text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
               scheduler=FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True),
               safety_checker=PassThroughSafetyChecker())


def build_tiny_cosmos2_video_pipeline(seed: int = 0):
    """`Cosmos2VideoToWorldPipeline` on the parts of `build_tiny_cosmos2_pipeline`."""
    return build_tiny_cosmos2_pipeline(seed, video=True)


def _qwen_tokenizer():
    with tempfile.TemporaryDirectory() as folder:
        return _train_qwen_tokenizer(folder)


def build_tiny_sana_pag_pipeline(seed: int = 0):
    """`SanaPAGPipeline` (Sana with perturbed-attention guidance: Gemma-2 encoder, DC-AE), offline."""
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPAGPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = _train_gemma_tokenizer(folder)
    tokenizer.padding_side = "right"
    text_encoder = Gemma2Model(Gemma2Config(vocab_size=len(tokenizer), head_dim=16, hidden_size=32,
                                            intermediate_size=64, num_attention_heads=2, num_hidden_layers=1,
                                            num_key_value_heads=2, pad_token_id=0, bos_token_id=2, eos_token_id=1,
                                            attn_implementation="eager")).eval()
    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=2, num_attention_heads=2, attention_head_dim=4,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=32,
        sample_size=32,
    )
    vae = AutoencoderDC(
        # four stages: 8x smaller latents than pixels, as the image transformers of the other builds
        in_channels=3, latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",),
        decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",), encoder_block_out_channels=(8,) * 4,
        decoder_block_out_channels=(8,) * 4, encoder_qkv_multiscales=((), (), (), (5,)),
        decoder_qkv_multiscales=((), (), (), (5,)), encoder_layers_per_block=(1,) * 4,
        decoder_layers_per_block=[1] * 4, downsample_block_type="conv",
        upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    return SanaPAGPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), pag_applied_layers=["blocks.1"])


def build_tiny_kandinsky5_pipeline(seed: int = 0, video: bool = False):
    """`Kandinsky5T2IPipeline` (or, with `video`, `Kandinsky5T2VPipeline`): a Qwen2.5-VL and a CLIP encoder, a
    transformer whose attention projections are `to_query`/`to_key`/`to_value`, offline."""
    from diffusers import (AutoencoderKL, AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler,
                           Kandinsky5T2IPipeline, Kandinsky5T2VPipeline, Kandinsky5Transformer3DModel)
    from transformers import CLIPTextModel
    from tiny_pipelines import _tiny_qwen2_5_vl

    torch.manual_seed(seed)
    _, processor, text_encoder = _tiny_qwen2_5_vl()
    tokenizer_2, clip_config = _clip(16)
    if video:
        vae = AutoencoderKLHunyuanVideo(
            in_channels=3, out_channels=3, latent_channels=16, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
            up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
            act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
            temporal_compression_ratio=4, mid_block_add_attention=True,
        )
    else:
        vae = AutoencoderKL(block_out_channels=(8, 8, 16, 16), in_channels=3, out_channels=3,
                            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                            latent_channels=16, norm_num_groups=4, layers_per_block=1, scaling_factor=0.3611,
                            shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    transformer = Kandinsky5Transformer3DModel(
        in_visual_dim=16, in_text_dim=16, in_text_dim2=16, time_dim=16, out_visual_dim=16, patch_size=(1, 2, 2),
        model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=2, axes_dims=(1, 1, 2), visual_cond=False,
        attention_type="regular",
    )
    cls = Kandinsky5T2VPipeline if video else Kandinsky5T2IPipeline
    pipe = cls(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=processor,
               text_encoder_2=CLIPTextModel(clip_config).eval(), tokenizer_2=tokenizer_2,
               scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0))
    if not video:
        pipe.resolutions = [(64, 64)]  # it resizes to its resolution list (1024^2 and six others for the real one)
    return pipe


def build_tiny_kandinsky5_video_pipeline(seed: int = 0):
    """`Kandinsky5T2VPipeline` on the parts of `build_tiny_kandinsky5_pipeline`."""
    return build_tiny_kandinsky5_pipeline(seed, video=True)


def build_tiny_ovis_pipeline(seed: int = 0):
    """`OvisImagePipeline` (Qwen3 encoder, FLUX-style transformer), offline."""
    from diffusers import FlowMatchEulerDiscreteScheduler, OvisImagePipeline, OvisImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    tokenizer = _qwen_tokenizer()
    text_encoder = Qwen3Model(Qwen3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                          vocab_size=len(tokenizer), max_position_embeddings=512,
                                          pad_token_id=tokenizer.pad_token_id)).eval()
    transformer = OvisImageTransformer2DModel(patch_size=1, in_channels=16, out_channels=16, num_layers=1,
                                              num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                                              joint_attention_dim=32, axes_dims_rope=(4, 4, 8))
    return OvisImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae(8),
                             text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)


def _byt5():
    """ByT5's tokenizer (bytes: no vocabulary to train) and a tiny T5 encoder over it."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    config = T5Config(d_model=32, d_kv=4, d_ff=16, num_layers=2, num_heads=2, relative_attention_num_buckets=8,
                      relative_attention_max_distance=32, vocab_size=256, feed_forward_proj="gated-gelu",
                      dense_act_fn="gelu_new", is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False)
    return ByT5Tokenizer(), T5EncoderModel(config).eval()


def build_tiny_hunyuan_image_pipeline(seed: int = 0):
    """`HunyuanImagePipeline` (HunyuanImage 2.1: Qwen2.5-VL and ByT5 encoders, guider objects), offline."""
    from diffusers import (AdaptiveProjectedMixGuidance, AutoencoderKLHunyuanImage, FlowMatchEulerDiscreteScheduler,
                           HunyuanImagePipeline, HunyuanImageTransformer2DModel)
    from tiny_pipelines import _tiny_qwen2_5_vl

    torch.manual_seed(seed)
    tokenizer, _, text_encoder = _tiny_qwen2_5_vl()
    tokenizer_2, text_encoder_2 = _byt5()
    transformer = HunyuanImageTransformer2DModel(
        in_channels=4, out_channels=4, num_attention_heads=4, attention_head_dim=8, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=(1, 1), guidance_embeds=False, text_embed_dim=16,
        text_embed_2_dim=32, rope_axes_dim=(4, 4),
    )
    vae = AutoencoderKLHunyuanImage(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32,) * 4,
                                    layers_per_block=1, scaling_factor=0.476986, spatial_compression_ratio=8,
                                    sample_size=64)
    return HunyuanImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
        guider=AdaptiveProjectedMixGuidance(adaptive_projected_guidance_start_step=2),
        ocr_guider=AdaptiveProjectedMixGuidance(adaptive_projected_guidance_start_step=3),
    )


def build_tiny_hunyuan_video15_pipeline(seed: int = 0):
    """`HunyuanVideo15Pipeline` (HunyuanVideo 1.5: Qwen2.5-VL text and ByT5 encoders, a CFG guider), offline."""
    from diffusers import (AutoencoderKLHunyuanVideo15, ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler,
                           HunyuanVideo15Pipeline, HunyuanVideo15Transformer3DModel)
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    torch.manual_seed(seed)
    tokenizer = _qwen_tokenizer()
    text_encoder = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
        hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        rope_theta=1000000.0, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"})).eval()
    tokenizer_2, text_encoder_2 = _byt5()
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
        num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=32,
        image_embed_dim=12, rope_axes_dim=(2, 2, 4), target_size=16, task_type="t2v",
    ).eval()
    vae = AutoencoderKLHunyuanVideo15(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16),
                                      layers_per_block=1, spatial_compression_ratio=4, temporal_compression_ratio=2,
                                      downsample_match_channel=False, upsample_match_channel=False).eval()
    return HunyuanVideo15Pipeline(
        text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        guider=ClassifierFreeGuidance(guidance_scale=6.0),
    )


def build_tiny_krea2_pipeline(seed: int = 0):
    """`Krea2Pipeline` (Qwen3-VL text tower with layer taps, Qwen-Image VAE), offline."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Krea2Pipeline, Krea2Transformer2DModel
    from transformers import Qwen3VLConfig, Qwen3VLModel
    from tiny_pipelines import _tiny_qwenimage_parts

    torch.manual_seed(seed)
    tokenizer = _qwen_tokenizer()
    transformer = Krea2Transformer2DModel(
        in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=32, timestep_embed_dim=8, text_hidden_dim=16, num_text_layers=3, text_num_attention_heads=2,
        text_num_key_value_heads=1, text_intermediate_size=16, num_layerwise_text_blocks=1, num_refiner_text_blocks=1,
        axes_dims_rope=(4, 2, 2), rope_theta=1000.0,
    )
    vae = _tiny_qwenimage_parts()["vae"]
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=6400)
    text_encoder = Qwen3VLModel(Qwen3VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "head_dim": 8, "vocab_size": len(tokenizer)},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        vocab_size=len(tokenizer))).eval()
    return Krea2Pipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                         transformer=transformer, text_encoder_select_layers=(0, 1, 2))


def build_tiny_prx_pipeline(seed: int = 0):
    """`PRXPipeline` (a T5Gemma encoder, latent space), offline."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, PRXPipeline, PRXTransformer2DModel
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaConfig, T5GemmaModuleConfig
    from transformers.models.t5gemma.modeling_t5gemma import T5GemmaEncoder

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = _train_gemma_tokenizer(folder)
    tokenizer.model_max_length = 64
    transformer = PRXTransformer2DModel(patch_size=1, in_channels=4, context_in_dim=8, hidden_size=8, mlp_ratio=2.0,
                                        num_heads=2, depth=1, axes_dim=[2, 2])
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,) * 4,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        layers_per_block=1, latent_channels=4, norm_num_groups=1, use_quant_conv=False,
                        use_post_quant_conv=False, shift_factor=0.0, scaling_factor=1.0).eval()
    encoder = dict(vocab_size=len(tokenizer), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=1, head_dim=4, max_position_embeddings=64,
                   layer_types=["full_attention"], hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=4,
                   sliding_window=4096, pad_token_id=0, bos_token_id=2, eos_token_id=1)
    config = T5GemmaConfig(encoder=T5GemmaModuleConfig(**encoder), is_encoder_decoder=False, **encoder)
    _drawn_like_trained(transformer)  # its blocks' modulation starts at zero
    return PRXPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
                       text_encoder=T5GemmaEncoder(config.encoder).eval(), tokenizer=tokenizer, vae=vae)


def build_tiny_prx_pixel_pipeline(seed: int = 0):
    """`PRXPixelPipeline` (PRX in pixel space: no VAE; a Qwen3 encoder), offline."""
    from diffusers import FlowMatchEulerDiscreteScheduler, PRXPixelPipeline, PRXTransformer2DModel
    from tiny_pipelines import _tiny_qwen3

    torch.manual_seed(seed)
    tokenizer = _qwen_tokenizer()
    # 8x8 pixel patches: 64 tokens at 64 px, as the latent builds have (diffusers' test has 1x1 at 32 px)
    transformer = PRXTransformer2DModel(patch_size=8, in_channels=3, context_in_dim=16, hidden_size=8, mlp_ratio=2.0,
                                        num_heads=2, depth=1, axes_dim=[2, 2], bottleneck_size=8,
                                        resolution_embeds=True)
    _drawn_like_trained(transformer)  # its blocks' modulation starts at zero
    return PRXPixelPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
                            text_encoder=_tiny_qwen3(tokenizer, False), tokenizer=tokenizer, prompt_max_tokens=16)


def build_tiny_bria_fibo_pipeline(seed: int = 0):
    """`BriaFiboPipeline` (FIBO: a SmolLM3 encoder whose begin token is 128000, a Wan 2.2 VAE), offline."""
    from diffusers import AutoencoderKLWan, BriaFiboPipeline, BriaFiboTransformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import SmolLM3Config, SmolLM3ForCausalLM

    torch.manual_seed(seed)
    tokenizer, _ = _t5(32)
    transformer = BriaFiboTransformer2DModel(
        patch_size=1, in_channels=48, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=64, text_encoder_dim=32, pooled_projection_dim=None, axes_dims_rope=[0, 4, 4],
    )
    vae = AutoencoderKLWan(base_dim=16, decoder_base_dim=16, num_res_blocks=1, out_channels=12, patch_size=2,
                           scale_factor_spatial=16, scale_factor_temporal=4, temperal_downsample=[False, True, True],
                           z_dim=48, dim_mult=[1, 1, 1, 1], is_residual=True, in_channels=12,
                           latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
    # the pipeline starts every prompt with token 128000: the encoder keeps SmolLM3's vocabulary size
    text_encoder = SmolLM3ForCausalLM(SmolLM3Config(hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                                                    num_attention_heads=2, num_key_value_heads=1)).eval()
    return BriaFiboPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                            text_encoder=text_encoder, tokenizer=tokenizer)


def build_tiny_easyanimate_pipeline(seed: int = 0):
    """`EasyAnimatePipeline` (EasyAnimate V5.1: a Qwen2-VL-style encoder with its chat template, MagViT VAE),
    offline."""
    from diffusers import (AutoencoderKLMagvit, EasyAnimatePipeline, EasyAnimateTransformer3DModel,
                           FlowMatchEulerDiscreteScheduler)
    from tiny_pipelines import _tiny_qwen2_5_vl

    torch.manual_seed(seed)
    tokenizer, _, text_encoder = _tiny_qwen2_5_vl()
    transformer = EasyAnimateTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                                out_channels=4, time_embed_dim=2, text_embed_dim=16, num_layers=1,
                                                sample_width=16, sample_height=16, patch_size=2)
    vae = AutoencoderKLMagvit(
        in_channels=3, out_channels=3,
        down_block_types=("SpatialDownBlock3D",) + ("SpatialTemporalDownBlock3D",) * 3,
        up_block_types=("SpatialUpBlock3D",) + ("SpatialTemporalUpBlock3D",) * 3, block_out_channels=(8, 8, 8, 8),
        latent_channels=4, layers_per_block=1, norm_num_groups=2, spatial_group_norm=False,
    )
    return EasyAnimatePipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
                               scheduler=FlowMatchEulerDiscreteScheduler())


def _tiny_ltx2_audio():
    """LTX-2's audio VAE and vocoder, tiny (diffusers' LTX-2 test's shapes)."""
    from diffusers import AutoencoderKLLTX2Audio
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8,
    )
    vocoder = LTX2Vocoder(
        in_channels=audio_vae.config.output_channels * audio_vae.config.mel_bins, hidden_channels=32, out_channels=2,
        upsample_kernel_sizes=[4, 4], upsample_factors=[2, 2], resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]], leaky_relu_negative_slope=0.1, output_sampling_rate=16000,
    )
    return audio_vae, vocoder


def build_tiny_ltx2_pipeline(seed: int = 0):
    """`LTX2Pipeline` (LTX-2: a Gemma-3 encoder whose every layer feeds text connectors, a video transformer with an
    audio branch, video and audio VAEs and a vocoder), offline. Shapes follow diffusers' own LTX-2 test."""
    from diffusers import AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler, LTX2Pipeline
    from diffusers import LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = _train_gemma_tokenizer(folder)
    hidden, layers = 32, 2  # the text connectors' width (4 heads x 8) is the text encoder's
    text_config = {"vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 32, "num_hidden_layers": layers,
                   "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "pad_token_id": 0,
                   "bos_token_id": 2, "eos_token_id": 1, "sliding_window": 64}
    vision_config = {"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "image_size": 28, "patch_size": 14}
    text_encoder = Gemma3ForConditionalGeneration(Gemma3Config(text_config=text_config, vision_config=vision_config,
                                                               mm_tokens_per_image=4)).eval()
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
        caption_channels=hidden, rope_double_precision=False, rope_type="split",
    )
    connectors = LTX2TextConnectors(
        caption_channels=hidden, text_proj_in_factor=layers + 1, video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_theta=10000.0,
        rope_double_precision=False, causal_temporal_positioning=False, rope_type="split",
    )
    vae = AutoencoderKLLTX2Video(
        # three 2x stages (the test's one, thrice): 8x smaller latents than pixels, as the image builds
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,) * 3,
        decoder_block_out_channels=(8,) * 3, layers_per_block=(1,) * 3, decoder_layers_per_block=(1,) * 4,
        spatio_temporal_scaling=(True,) * 3, decoder_spatio_temporal_scaling=(True,) * 3,
        decoder_inject_noise=(False,) * 4, downsample_type=("spatial",) * 3, upsample_residual=(False,) * 3,
        upsample_factor=(1,) * 3, timestep_conditioning=False, patch_size=1,
        patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    audio_vae, vocoder = _tiny_ltx2_audio()
    return LTX2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, audio_vae=audio_vae,
                        text_encoder=text_encoder, tokenizer=tokenizer, connectors=connectors,
                        transformer=transformer, vocoder=vocoder, processor=None, prompt_enhancer=None,
                        duration_head=None)


def _tiny_qwen3_vl(num_layers: int = 8):
    """A tiny `Qwen3VLForConditionalGeneration` (16 wide, `num_layers` text layers) with an offline Qwen3-VL processor (its
    image path; no video processor, which needs torchvision)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from tiny_pipelines import _vl_tokenizer

    class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            return type(argument)

    specials = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = _vl_tokenizer(folder, specials)
    ids = dict(zip(("vision_start_token_id", "image_token_id", "vision_end_token_id", "video_token_id"),
                   tokenizer.convert_tokens_to_ids(specials)))
    images = Qwen2VLImageProcessorPil(min_pixels=32 * 32, max_pixels=64 * 64, patch_size=16, merge_size=2,
                                      temporal_patch_size=2)
    processor = ImageOnlyQwen3VLProcessor(image_processor=images, tokenizer=tokenizer, video_processor=None,
                                          chat_template=tokenizer.chat_template)
    config = Qwen3VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": num_layers, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "rope_theta": 1000000.0, "vocab_size": len(tokenizer), "head_dim": 8,
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        **ids,
    )
    return processor, Qwen3VLForConditionalGeneration(config).eval()


def build_tiny_nucleusmoe_pipeline(seed: int = 0):
    """`NucleusMoEImagePipeline` (a Qwen3-VL encoder, Qwen-Image VAE, a mixture-of-experts transformer with its
    experts off as in diffusers' test), offline."""
    from diffusers import FlowMatchEulerDiscreteScheduler, NucleusMoEImagePipeline, NucleusMoEImageTransformer2DModel
    from tiny_pipelines import _tiny_qwenimage_parts

    torch.manual_seed(seed)
    transformer = NucleusMoEImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=4,
        joint_attention_dim=16, axes_dims_rope=(8, 4, 4), moe_enabled=False, capacity_factors=[8.0, 8.0],
    )
    vae = _tiny_qwenimage_parts()["vae"]
    processor, text_encoder = _tiny_qwen3_vl()
    return NucleusMoEImagePipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                                   text_encoder=text_encoder, processor=processor)


def build_tiny_longcat_pipeline(seed: int = 0):
    """`LongCatImagePipeline` (a Qwen2.5-VL encoder with its processor, a FLUX-style transformer), offline."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, LongCatImagePipeline
    from diffusers import LongCatImageTransformer2DModel
    from tiny_pipelines import _tiny_qwen2_5_vl

    torch.manual_seed(seed)
    tokenizer, processor, text_encoder = _tiny_qwen2_5_vl()
    # the pipeline draws 16 latent channels whatever the VAE: the VAE has 16, packed 2x2 into 64
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16),
                        layers_per_block=1, latent_channels=16, norm_num_groups=4, shift_factor=0.0,
                        scaling_factor=1.0, use_quant_conv=False, use_post_quant_conv=False)
    transformer = LongCatImageTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                                 attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                                 pooled_projection_dim=16, axes_dims_rope=[4, 6, 6])
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return LongCatImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                text_processor=processor, transformer=transformer)


def build_tiny_ernie_image_pipeline(seed: int = 0):
    """`ErnieImagePipeline` (a Ministral-3 text tower, FLUX.2 VAE; no prompt enhancer), offline."""
    from diffusers import ErnieImagePipeline, ErnieImageTransformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import Mistral3Config, Mistral3Model
    from tiny_pipelines import _tiny_flux2_parts

    torch.manual_seed(seed)
    tokenizer = _qwen_tokenizer()
    parts = _tiny_flux2_parts(8, guidance_embeds=False)
    transformer = ErnieImageTransformer2DModel(hidden_size=32, num_attention_heads=2, num_layers=1,
                                               ffn_hidden_size=64, in_channels=16, out_channels=16, patch_size=1,
                                               text_in_dim=16, rope_axes_dim=(4, 6, 6))
    _drawn_like_trained(transformer)
    text_encoder = Mistral3Model(Mistral3Config(
        text_config={"model_type": "ministral3", "hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "vocab_size": len(tokenizer)},
        vision_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "head_dim": 8, "image_size": 32, "patch_size": 16},
    )).eval()
    return ErnieImagePipeline(transformer=transformer, vae=parts["vae"], text_encoder=text_encoder,
                              tokenizer=tokenizer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), pe=None,
                              pe_tokenizer=None)


def build_tiny_qwenimage21_pipeline(seed: int = 0):
    """`QwenImage21Pipeline` (Qwen-Image 2.1: a Qwen3-VL encoder, a 16x VAE, unpatched latents), offline."""
    from diffusers import (AutoencoderKLQwenImage21, FlowMatchEulerDiscreteScheduler, QwenImage21Pipeline,
                           QwenImage21Transformer2DModel)

    torch.manual_seed(seed)
    transformer = QwenImage21Transformer2DModel(patch_size=1, in_channels=8, out_channels=8, num_layers=1,
                                                attention_head_dim=16, num_attention_heads=2, context_in_dim=16,
                                                mlp_ratio=2, axes_dims_rope=(4, 6, 6))
    vae = AutoencoderKLQwenImage21(base_dim=8, decoder_base_dim=8, z_dim=8, dim_mult=[1, 1, 1, 1, 1],
                                   num_res_blocks=1, temperal_downsample=[False, True, True, True],
                                   latents_mean=[0.0] * 8, latents_std=[1.0] * 8)
    processor, text_encoder = _tiny_qwen3_vl()
    return QwenImage21Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                               processor=processor, transformer=transformer)


def build_tiny_bria_fibo2_pipeline(seed: int = 0):
    """`BriaFibo2Pipeline` (FIBO 2: six bundles of three Qwen3-VL layers, up to layer 35, feed a Perceiver and five
    injection blocks), offline: the text encoder has 36 narrow layers so that the pipeline's layers exist."""
    from diffusers import BriaFibo2Pipeline, BriaFibo2Transformer2DModel
    from tiny_pipelines import _tiny_flux2_parts

    torch.manual_seed(seed)
    parts = _tiny_flux2_parts(8, guidance_embeds=False)
    transformer = BriaFibo2Transformer2DModel(
        in_channels=4, patch_size=2, dim=32, n_layers=5, n_refiner_layers=1, n_heads=2, cap_feat_dim=48,
        injection_layer_ids=(0, 1, 2, 3, 4), perceiver_num_layers=1, min_num_gist_tokens=4, max_num_gist_tokens=8,
        gist_step=4, gist_min_text_len=4, gist_max_text_len=64, axes_dims=(8, 4, 4), axes_lens=(256, 64, 64),
    )
    processor, text_encoder = _tiny_qwen3_vl(num_layers=36)
    return BriaFibo2Pipeline(transformer=transformer, scheduler=parts["scheduler"], vae=parts["vae"],
                             text_encoder=text_encoder, processor=processor)


def build_tiny_ideogram4_pipeline(seed: int = 0):
    """`Ideogram4Pipeline` (13 tapped layers of a Qwen3-VL text tower, up to layer 35; a second transformer for the
    unconditional branch; FLUX.2 VAE), offline."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Ideogram4Pipeline, Ideogram4Transformer2DModel
    from tiny_pipelines import _tiny_flux2_parts

    torch.manual_seed(seed)
    parts = _tiny_flux2_parts(8, guidance_embeds=False)
    config = dict(in_channels=16, num_layers=1, attention_head_dim=16, num_attention_heads=2, intermediate_size=32,
                  adaln_dim=16, llm_features_dim=13 * 16, mrope_section=(4, 2, 2), rope_theta=10000)
    transformer, unconditional = Ideogram4Transformer2DModel(**config), Ideogram4Transformer2DModel(**config)
    processor, text_encoder = _tiny_qwen3_vl(num_layers=36)
    return Ideogram4Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=parts["vae"],
                             text_encoder=text_encoder.model,
                             tokenizer=processor.tokenizer, transformer=transformer,
                             unconditional_transformer=unconditional, prompt_enhancer_head=None)


def build_tiny_dreamlite_pipeline(seed: int = 0, mobile: bool = False):
    """`DreamLitePipeline` (or its distilled `DreamLiteMobilePipeline`): a UNet denoiser, a tiny autoencoder and a
    Qwen3-VL encoder, offline. Shapes follow diffusers' own DreamLite test (its UNet at half width)."""
    from diffusers import AutoencoderTiny, DreamLiteMobilePipeline, DreamLitePipeline, DreamLiteUNetModel
    from diffusers import FlowMatchEulerDiscreteScheduler

    torch.manual_seed(seed)
    processor, text_encoder = _tiny_qwen3_vl(num_layers=2)
    unet = DreamLiteUNetModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DreamLiteCrossAttnNoSelfAttnDownBlock2D", "DreamLiteCrossAttnDownBlock2D"),
        up_block_types=("DreamLiteCrossAttnUpBlock2D", "DreamLiteUpBlock2D"), cross_attention_dim=16,
        attention_head_dim=8, norm_num_groups=8, transformer_layers_per_block=1,
    ).eval()
    # four blocks: 8x smaller latents than pixels, as the pipeline's own `vae_scale_factor` rule reads them
    vae = AutoencoderTiny(in_channels=3, out_channels=3, encoder_block_out_channels=(8,) * 4,
                          decoder_block_out_channels=(8,) * 4, num_encoder_blocks=(1,) * 4,
                          num_decoder_blocks=(1,) * 4, latent_channels=4).eval()
    cls = DreamLiteMobilePipeline if mobile else DreamLitePipeline
    return cls(text_encoder=text_encoder, tokenizer=processor.tokenizer, processor=processor, vae=vae, unet=unet,
               scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000))


# A chat template in GLM-Image's shape: the user's text (and images, as image tokens), then the assistant's turn.
_GLM_IMAGE_TEMPLATE = ("{% for message in messages %}<|user|>{% for item in message['content'] %}"
                       "{% if item['type'] == 'image' %}<|begin_of_image|><|image|><|end_of_image|>"
                       "{% else %}{{ item['text'] }}{% endif %}{% endfor %}{% endfor %}<|assistant|>")


def _tiny_glm_image_prior():
    """GLM-Image's autoregressive prior, tiny, with its processor, offline: the offline Qwen-style tokenizer with
    GLM-Image's image, grid and turn tokens (the begin-of-image token as `bos_token`, as the processor appends it),
    and a `GlmImageForConditionalGeneration` of diffusers' test's shapes whose token ids are that tokenizer's."""
    from transformers import GlmImageConfig, GlmImageForConditionalGeneration, GlmImageProcessor
    from transformers.models.glm_image.image_processing_pil_glm_image import GlmImageImageProcessorPil
    from tiny_pipelines import _train_qwen_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        tokenizer = _train_qwen_tokenizer(folder)
    specials = ["<|user|>", "<|assistant|>", "<|begin_of_image|>", "<|end_of_image|>", "<|image|>", "<sop>", "<eop>"]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.bos_token = "<|begin_of_image|>"
    tokenizer.padding_side = "left"  # the prior generates after the prompt: a batch's prompts end together
    tokenizer.image_token, tokenizer.grid_bos_token, tokenizer.grid_eos_token = "<|image|>", "<sop>", "<eop>"
    begin, end, image = tokenizer.convert_tokens_to_ids(specials[2:5])
    processor = GlmImageProcessor(image_processor=GlmImageImageProcessorPil(), tokenizer=tokenizer,
                                  chat_template=_GLM_IMAGE_TEMPLATE)
    config = GlmImageConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 512,
                     "vision_vocab_size": 128, "pad_token_id": tokenizer.pad_token_id, "eos_token_id": end,
                     "rope_parameters": {"mrope_section": (4, 2, 2)}},
        vision_config={"depth": 2, "hidden_size": 32, "num_heads": 2, "image_size": 32, "patch_size": 8,
                       "intermediate_size": 32},
        vq_config={"embed_dim": 32, "num_embeddings": 128, "latent_channels": 32},
        image_token_id=image, image_start_token_id=begin, image_end_token_id=end)
    return processor, GlmImageForConditionalGeneration(config).eval()


def build_tiny_glm_image_pipeline(seed: int = 0):
    """`GlmImagePipeline` (an autoregressive prior whose image tokens condition the DiT, a ByT5 glyph encoder),
    offline. Shapes follow diffusers' own GLM-Image test; its processor and tokenizer, which that test downloads, are
    built here (`_tiny_glm_image_prior`)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, GlmImagePipeline, GlmImageTransformer2DModel

    torch.manual_seed(seed)
    processor, prior = _tiny_glm_image_prior()
    tokenizer, text_encoder = _byt5()
    # patch 2 x VAE 8 = 16 px per token: the prior's tokens (32 px, upsampled twice) cover the image
    transformer = GlmImageTransformer2DModel(
        patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        text_embed_dim=text_encoder.config.hidden_size, time_embed_dim=16, condition_dim=8,
        prior_vq_quantizer_codebook_size=128)
    vae = AutoencoderKL(block_out_channels=(4, 8, 16, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        norm_num_groups=4, sample_size=128, latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    return GlmImagePipeline(tokenizer=tokenizer, processor=processor, text_encoder=text_encoder,
                            vision_language_encoder=prior, vae=vae, transformer=transformer,
                            scheduler=FlowMatchEulerDiscreteScheduler())
