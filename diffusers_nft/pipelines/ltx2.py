"""LTX-2 text-to-video (`LTX2Pipeline`): video and audio denoised together by one transformer.

Each step the transformer takes the packed video tokens and the packed audio tokens and returns a velocity for
each; the video's attention reads the audio and the other way round, so neither can be sampled alone. A sample's
latents are therefore both, flattened and joined into one vector (video first): the solvers, the rollouts and the
NFT loss treat them as one state, so training follows the joint flow the pipeline samples. Rewards see the video
only (`decode` gives frames); the audio is generated and trained with it but not scored, and the default LoRA
targets are the video's own attention layers (`attn1`, `attn2`), so the audio branch changes only through what it
reads from the video.

Prompts go through Gemma and the pipeline's text connectors (one stream for video, one for audio). Timesteps are
`1000 sigma`; the schedule is the pipeline's `linspace(1, 1 / N, N)` shifted by its token-count `mu`.
"""

import inspect
from typing import List, Tuple

import numpy as np
import torch

from .base import Conditioning, VideoFamily

LTX2_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")


class LTX2Family(VideoFamily):
    """LTX-2 text-to-video with its audio. Videos have `num_frames = 8 k + 1` frames (121 by default)."""

    pipeline_class_names = ("LTX2Pipeline",)
    default_lora_targets = LTX2_TARGETS
    default_max_sequence_length = 1024  # LTX2Pipeline's default
    default_num_frames = 121

    def __init__(self, pipeline, distilled_guidance_scale: float = 3.5, num_frames=None):
        super().__init__(pipeline, distilled_guidance_scale, num_frames)
        from diffusers.pipelines.ltx2.pipeline_ltx2 import get_conditioning_frame_rate

        defaults = {k: p.default for k, p in inspect.signature(type(pipeline).__call__).parameters.items()}
        self.frame_rate = defaults.get("frame_rate", 24.0)
        self.fps = get_conditioning_frame_rate(self.frame_rate, defaults.get("motion_speed"))

    def temporal_compression(self) -> int:
        return self.pipeline.vae_temporal_compression_ratio

    @property
    def text_encoders(self) -> List[torch.nn.Module]:
        return [self.pipeline.text_encoder, self.pipeline.connectors]

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        """Gemma's states through the pipeline's connectors: the video and the audio text streams and their mask."""
        pipe = self.pipeline
        embeds, mask, _, _ = pipe.encode_prompt(list(prompts), do_classifier_free_guidance=False,
                                                max_sequence_length=max_sequence_length, device=device)
        video, audio, connector_mask = pipe.connectors(embeds, mask, padding_side=pipe.tokenizer.padding_side)
        return {"encoder_hidden_states": video, "audio_encoder_hidden_states": audio,
                "encoder_attention_mask": connector_mask, "audio_encoder_attention_mask": connector_mask}

    # --- the joint latents ----------------------------------------------------------------------------------------

    def _sizes(self, resolution: int) -> dict:
        pipe = self.pipeline
        frames = self.latent_frames()
        side = resolution // pipe.vae_spatial_compression_ratio
        seconds = self.frames / self.frame_rate
        per_second = pipe.audio_sampling_rate / pipe.audio_hop_length / float(pipe.audio_vae_temporal_compression_ratio)
        mel = pipe.audio_vae.config.mel_bins // pipe.audio_vae_mel_compression_ratio
        return {"num_frames": frames, "height": side, "width": side, "audio_num_frames": round(seconds * per_second),
                "video": (frames * side * side, self.transformer.config.in_channels),
                "audio": (round(seconds * per_second), pipe.audio_vae.config.latent_channels * mel)}

    def latent_shape(self, resolution: int) -> Tuple[int, ...]:
        sizes = self._sizes(resolution)
        return (int(np.prod(sizes["video"]) + np.prod(sizes["audio"])),)

    def _resolution_of(self, length: int) -> int:
        """The resolution whose joint latents have `length` values (the audio's share does not depend on it)."""
        one = self._sizes(self.resolution_multiple())
        audio, per_pixel = int(np.prod(one["audio"])), one["num_frames"] * one["video"][1]
        side = round(((length - audio) / per_pixel) ** 0.5)
        return side * self.pipeline.vae_spatial_compression_ratio

    def resolution_multiple(self) -> int:
        return self.pipeline.vae_spatial_compression_ratio * self.pipeline.transformer_spatial_patch_size

    def _split(self, latents: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, dict]:
        sizes = self._sizes(self._resolution_of(latents.shape[1]))
        count = int(np.prod(sizes["video"]))
        video = latents[:, :count].reshape(len(latents), *sizes["video"])
        return video, latents[:, count:].reshape(len(latents), *sizes["audio"]), sizes

    def image_tokens(self, latent_shape: Tuple[int, ...]) -> int:
        return self._sizes(self._resolution_of(latent_shape[0]))["video"][0]

    def schedule_sigmas(self, num_steps: int) -> np.ndarray:
        return np.linspace(1.0, 1 / num_steps, num_steps)  # the pipeline's

    def sampling_mu(self, latent_shape: Tuple[int, ...]) -> float:
        """The pipeline's `calculate_shift` of the video token count, with its defaults (1024 / 4096, 0.95 / 2.05)."""
        config = self.pipeline.scheduler.config
        base_len, max_len = config.get("base_image_seq_len", 1024), config.get("max_image_seq_len", 4096)
        base_shift, max_shift = config.get("base_shift", 0.95), config.get("max_shift", 2.05)
        slope = (max_shift - base_shift) / (max_len - base_len)
        return self.image_tokens(latent_shape) * slope + base_shift - slope * base_len

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype, batch = self.transformer.dtype, len(latents)
        video, audio, sizes = self._split(latents.float())
        rope = self.transformer
        timestep = (1000 * sigma.float()).to(dtype)
        video_v, audio_v = self.model(
            hidden_states=video.to(dtype), audio_hidden_states=audio.to(dtype), timestep=timestep, sigma=timestep,
            num_frames=sizes["num_frames"], height=sizes["height"], width=sizes["width"], fps=self.fps,
            audio_num_frames=sizes["audio_num_frames"],
            video_coords=rope.rope.prepare_video_coords(batch, sizes["num_frames"], sizes["height"], sizes["width"],
                                                        latents.device, fps=self.fps),
            audio_coords=rope.audio_rope.prepare_audio_coords(batch, sizes["audio_num_frames"], latents.device),
            isolate_modalities=False, spatio_temporal_guidance_blocks=None, perturbation_mask=None,
            use_cross_timestep=True, return_dict=False, **cond)
        return torch.cat([video_v.float().flatten(1), audio_v.float().flatten(1)], dim=1)

    def cfg_free_call_kwargs(self) -> dict:
        # its other guidances (spatio-temporal, modality isolation, the audio's CFG) are off too
        return {"guidance_scale": 1.0, "stg_scale": 0.0, "modality_scale": 1.0, "audio_guidance_scale": 1.0,
                "audio_stg_scale": 0.0, "audio_modality_scale": 1.0}

    def guidance_call_kwargs(self, guidance_scale: float) -> dict:
        if guidance_scale == 1.0:
            return self.cfg_free_call_kwargs()
        return {**self.cfg_free_call_kwargs(), "guidance_scale": guidance_scale,
                "audio_guidance_scale": guidance_scale}

    def pipeline_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return self._split(latents)[0]  # the packed video tokens (the audio is drawn by the pipeline)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Videos `(B, frames, 3, H, W)` in [0, 1], from the video part (the audio is not decoded)."""
        pipe = self.pipeline
        video, _, sizes = self._split(latents.float())
        video = pipe._unpack_latents(video, sizes["num_frames"], sizes["height"], sizes["width"],
                                     pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)
        vae = pipe.vae
        video = pipe._denormalize_latents(video, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        timestep = None
        if vae.config.timestep_conditioning:  # decoded at the pipeline's default decode_timestep 0, with no noise
            timestep = torch.zeros(len(video), device=video.device, dtype=vae.dtype)
        frames = vae.decode(video.to(vae.dtype), timestep, return_dict=False)[0]
        return (frames.float().permute(0, 2, 1, 3, 4) / 2 + 0.5).clamp(0, 1)
