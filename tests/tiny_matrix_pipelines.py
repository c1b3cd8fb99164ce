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
