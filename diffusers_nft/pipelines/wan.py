"""Wan 2.1 / 2.2 text-to-video (`WanPipeline`): 5-D video latents `(C, frames, h, w)`, a UMT5 text encoder, the
UniPC flow scheduler's grid, timesteps `1000 sigma` (per token with Wan 2.2 TI2V's `expand_timesteps`), and a
video VAE whose latents are normalised by per-channel mean and std."""

from typing import List, Optional, Tuple

import torch

from .base import Conditioning, VideoFamily

SECOND_EXPERT_LORA = "pytorch_lora_weights_transformer_2.safetensors"  # loaded with load_into_transformer_2=True

WAN_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # self- and cross-attention of every block


class WanExperts(torch.nn.Module):
    """Wan 2.2's two experts as one trainable module: rows at `sigma >= boundary` go through `high`
    (`transformer`), the others through `low` (`transformer_2`), as `WanPipeline` switches them by timestep.

    Both get the same LoRA config; their tensors are named `high.*` and `low.*`.
    """

    def __init__(self, high: torch.nn.Module, low: torch.nn.Module, boundary: float):
        super().__init__()
        self.high, self.low, self.boundary = high, low, boundary

    @property
    def dtype(self) -> torch.dtype:
        return self.high.dtype

    def add_adapter(self, config, adapter_name: str = "default") -> None:
        self.high.add_adapter(config, adapter_name=adapter_name)
        self.low.add_adapter(config, adapter_name=adapter_name)

    def enable_gradient_checkpointing(self) -> None:
        self.high.enable_gradient_checkpointing()
        self.low.enable_gradient_checkpointing()

    def forward(self, hidden_states, timestep, encoder_hidden_states, sigma, return_dict=False, **per_row):
        """`per_row`: further inputs with one row per sample (`encoder_hidden_states_image`)."""
        high = sigma >= self.boundary
        out, idle = None, []
        for expert, rows in ((self.high, high), (self.low, ~high)):
            if not bool(rows.any()):
                idle.append(expert)
                continue
            index = rows.nonzero().squeeze(1)
            extra = {k: v[index] for k, v in per_row.items()}
            prediction = expert(hidden_states=hidden_states[index], timestep=timestep[index],
                                encoder_hidden_states=encoder_hidden_states[index], return_dict=False, **extra)[0]
            if out is None:
                out = prediction.new_zeros(hidden_states.shape[:1] + prediction.shape[1:])
            out = out.index_put((index,), prediction)
        # An expert no row used still joins the graph (with zero gradients), so DDP's reducer sees every parameter.
        trained = [p for expert in idle for p in expert.parameters() if p.requires_grad]
        if trained and torch.is_grad_enabled():
            out = out + 0.0 * sum(p.sum() for p in trained)
        return (out,)


class WanFamily(VideoFamily):
    """Wan text-to-video. Videos have `num_frames = 4 k + 1` frames (81 by default).

    Wan 2.2 A14B checkpoints have two experts (`transformer` for high noise, `transformer_2` below the pipeline's
    `boundary_ratio`): sampling and training use the expert the pipeline would use at each sigma, both get LoRA,
    and the LoRA is two files, the second loaded with `load_into_transformer_2=True`.
    """

    pipeline_class_names = ("WanPipeline",)
    default_lora_targets = WAN_TARGETS
    default_max_sequence_length = 512  # WanPipeline's default
    default_num_frames = 81

    def __init__(self, pipeline, distilled_guidance_scale: float = 3.5, num_frames: Optional[int] = None):
        super().__init__(pipeline, distilled_guidance_scale, num_frames)
        self._experts = None
        if getattr(pipeline, "transformer_2", None) is not None:
            if pipeline.transformer is None or pipeline.config.get("boundary_ratio") is None:
                raise ValueError("This WanPipeline has `transformer_2` but not both experts and a `boundary_ratio`; "
                                 "load the full Wan 2.2 checkpoint (or one expert alone, as `transformer`).")
            self._experts = WanExperts(pipeline.transformer, pipeline.transformer_2, pipeline.config.boundary_ratio)
            self.model = self._experts

    @property
    def denoiser(self) -> torch.nn.Module:
        return self._experts if self._experts is not None else self.pipeline.transformer

    def lora_layout(self):
        if self._experts is None:
            return super().lora_layout()
        return {"pytorch_lora_weights.safetensors": ("high.", {}),
                SECOND_EXPERT_LORA: ("low.", {"load_into_transformer_2": True})}

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        embeds, _ = self.pipeline.encode_prompt(list(prompts), do_classifier_free_guidance=False,
                                                max_sequence_length=max_sequence_length, device=device)
        return {"encoder_hidden_states": embeds}

    def resolution_multiple(self) -> int:
        return self.pipeline.vae_scale_factor_spatial * self.transformer.config.patch_size[1]

    def latent_shape(self, resolution: int) -> Tuple[int, ...]:
        side = resolution // self.pipeline.vae_scale_factor_spatial
        return (self.transformer.config.in_channels, self.latent_frames(), side, side)

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self._transformer(latents, sigma, cond)

    def _transformer(self, hidden_states: torch.Tensor, sigma: torch.Tensor, cond: Conditioning,
                     **per_row: torch.Tensor) -> torch.Tensor:
        """The (expert's) transformer on `hidden_states` at `sigma`, in float32; `per_row`: further inputs."""
        dtype, shape = self.transformer.dtype, hidden_states.shape
        timestep = 1000 * sigma.float()
        if self.pipeline.config.get("expand_timesteps", False):  # Wan 2.2 TI2V: one timestep per 2x2 token
            timestep = timestep[:, None].expand(shape[0], shape[2] * (shape[3] // 2) * (shape[4] // 2))
        inputs = dict(hidden_states=hidden_states.to(dtype), timestep=timestep,
                      encoder_hidden_states=cond["encoder_hidden_states"].to(dtype), return_dict=False,
                      **{k: v.to(dtype) for k, v in per_row.items()})
        if self._experts is not None:
            inputs["sigma"] = sigma.float()  # which expert each row goes to
        return self.model(**inputs)[0].float()

    def cfg_free_call_kwargs(self) -> dict:
        if self._experts is not None:
            return {"guidance_scale": 1.0, "guidance_scale_2": 1.0}
        return {"guidance_scale": 1.0}

    def guidance_call_kwargs(self, guidance_scale: float) -> dict:
        if self._experts is not None:  # Wan 2.2: the same scale for both experts
            return {"guidance_scale": guidance_scale, "guidance_scale_2": guidance_scale}
        return {"guidance_scale": guidance_scale}

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Videos `(B, frames, 3, H, W)` in [0, 1]."""
        vae = self.pipeline.vae
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, vae.dtype)
        inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents.device, vae.dtype)
        # divided by 1 / std, as WanPipeline does: multiplying by std differs in the last bit
        videos = vae.decode(latents.to(vae.dtype) / inverse_std + mean, return_dict=False)[0]  # (B, 3, F, H, W)
        return (videos.float().permute(0, 2, 1, 3, 4) / 2 + 0.5).clamp(0, 1)
