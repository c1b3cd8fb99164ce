"""What the trainer needs from a pipeline family. One subclass per family, in a file of its own."""

import inspect
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..lora_file import SINGLE_LORA_LAYOUT, denoiser_name, denoiser_of
from ..sampling import pipeline_sigmas

logger = logging.getLogger(__name__)

# The attention projections of MMDiT-style joint blocks (the DiffusionNFT release's LoRA targets for SD3.5).
JOINT_ATTENTION_TARGETS = (
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
)

Conditioning = Dict[str, Any]
"""Prompt conditioning of a family: named values with one row per prompt. A tensor's first dimension and a list's
items are rows; `Shared` values are the same for every row. Under `SOURCE`, a dict of the same kind holds what the
row's images give (`PipelineFamily.encode_conditioning`): classifier-free guidance drops the text, not those."""

SOURCE = "source"
UNCONDITIONAL = "unconditional"  # under SOURCE: what guidance's unconditional branch uses instead (text states)


@dataclass(frozen=True)
class Shared:
    """A conditioning value that every row shares (such as a text-position table), passed on as it is."""

    value: Any


class Layers(list):
    """A conditioning value that is a list of tensors each with one row per sample (BRIA FIBO's text-encoder layers),
    unlike a plain list, which has one item per sample (Z-Image's)."""


def select_conditioning(cond: Conditioning, index: torch.Tensor) -> Conditioning:
    """Rows `index` of every conditioning value: tensors are indexed, lists picked item by item, `Shared` kept."""
    rows = index.tolist()
    selected = {}
    for key, value in cond.items():
        if isinstance(value, torch.Tensor):
            selected[key] = value[index.to(value.device)]
        elif isinstance(value, Layers):
            selected[key] = Layers(layer[index.to(layer.device)] for layer in value)
        elif isinstance(value, list):
            selected[key] = [value[i] for i in rows]
        elif isinstance(value, dict):
            selected[key] = select_conditioning(value, index)
        else:
            selected[key] = value
    return selected


def switch_off_guiders(pipeline) -> None:
    """Disable the pipeline's guider components (HunyuanImage 2.1's, HunyuanVideo 1.5's): they guide whatever the
    call says, and NFT samples and trains without CFG. The log says how to enable them again."""
    from diffusers.guiders.guider_utils import BaseGuidance

    for name, component in pipeline.components.items():
        if isinstance(component, BaseGuidance) and component._enabled:
            component.disable()
            logger.warning("%s's %s (%s) is disabled: NFT samples and trains without CFG. Enable it again for guided "
                           "generation: pipe.%s.enable().", type(pipeline).__name__, name, type(component).__name__,
                           name)


def unshared(value: Any) -> Any:
    """The value of a `Shared` conditioning entry, any other value as it is."""
    return value.value if isinstance(value, Shared) else value


class PipelineFamily:
    """The bridge between `NFTTrainer` and one family of flow-matching diffusers pipelines.

    A subclass names the pipeline classes it serves in `pipeline_class_names`, and implements prompt encoding
    and the velocity prediction; the latent shape and decoding default to 2-D `AutoencoderKL` latents. Everything else (the LoRA adapters, sampling, the loss) is
    shared, so a new family is one small file registered in `diffusers_nft.pipelines`.

    Args:
        pipeline: The diffusers pipeline.
        distilled_guidance_scale: Guidance value for models with a guidance embedding.
        num_frames: Frames per video, for video families.
    """

    pipeline_class_names: Tuple[str, ...] = ()
    # The pipeline-call arguments the family conditions on (`conditioning.CONDITIONING_ARGUMENTS`) -> how many images
    # one call takes for each; empty for text-to-image and text-to-video families.
    conditioning: Dict[str, int] = {}
    required_conditioning: Tuple[str, ...] = ()  # those it cannot sample without
    # True where the pipeline's call takes one conditioning for all its prompts (FLUX.2's reference images) rather
    # than one per prompt; generation then calls it once per conditioning.
    conditioning_shared_by_call: bool = False
    max_prompts_per_call: Optional[int] = None  # where the pipeline's call takes fewer prompts than asked (None: any)
    card_tags: Tuple[str, ...] = ()  # the Hub tags of the family's model cards, beside the shared ones
    pipeline_tag: str = "text-to-image"  # the Hub task its cards name
    default_lora_targets: Tuple[str, ...] = ()
    # T5-style text length when `NFTConfig.max_sequence_length` is None: the release's where it has one, else
    # the pipeline's own default.
    default_max_sequence_length: int = 256

    def __init__(self, pipeline, distilled_guidance_scale: float = 3.5, num_frames: Optional[int] = None):
        self.pipeline = pipeline
        # Frames per video for video families (None: the family's default); image families have none.
        self.num_frames = num_frames
        # Fed to the guidance embedding of guidance-distilled models (FLUX.1-dev); ignored by the others.
        self.distilled_guidance_scale = distilled_guidance_scale
        # What forward passes go through; the trainer swaps in the accelerate-prepared module.
        self.model = denoiser_of(pipeline)

    @property
    def transformer(self) -> torch.nn.Module:
        return self.pipeline.transformer

    @property
    def denoiser(self) -> torch.nn.Module:
        """The module that gets LoRA and trains: the transformer (DreamLite: the UNet; Wan 2.2: both experts in one
        module)."""
        return denoiser_of(self.pipeline)

    def lora_layout(self) -> Dict[str, Tuple[str, dict]]:
        """LoRA file name -> (prefix of the LoRA tensors it holds, the `load_lora_weights` arguments that load it)."""
        return dict(SINGLE_LORA_LAYOUT)

    @property
    def text_encoders(self) -> List[torch.nn.Module]:
        """The text encoders, for moving them off the accelerator once prompts are encoded."""
        names = ("text_encoder", "text_encoder_2", "text_encoder_3")
        return [getattr(self.pipeline, n) for n in names if getattr(self.pipeline, n, None) is not None]

    def video_frames(self) -> Optional[int]:
        """Frames per sample for video families (their `decode` gives `(B, F, 3, H, W)`); None for images."""
        return None

    def check_accelerator(self, accelerator) -> None:
        """Raise `ValueError` before any compute if this family cannot run under the accelerator's backend."""

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        """Encode prompts once; the result is reused for every image of the prompt and for training."""
        raise NotImplementedError

    def encode_conditioning(self, values: List[Dict[str, Any]], device: torch.device,
                            prompts: Optional[List[str]] = None) -> Conditioning:
        """The rows' images (`conditioning.read_conditioning`: argument -> PIL image(s) at the trained size) as model
        inputs, one row each (VAE latents where the pipeline encodes them), encoded once per iteration; they go
        under `SOURCE` in the conditioning. Text-only families have none. `prompts` (the rows' prompts) serve
        families whose text encoder reads the images too; their values under `SOURCE` then include the text states,
        and under `SOURCE["unconditional"]` what guidance's unconditional branch replaces them with."""
        return {}

    def use_example_conditioning(self, values: Dict[str, Any]) -> None:
        """A row's conditioning (argument -> PIL image(s)), shown before any compute to families that learn from
        calls of the pipeline (the traced family traces with it); the others need none."""

    def conditioning_call_kwargs(self, values: List[Dict[str, Any]]) -> dict:
        """The pipeline-call arguments of a batch's conditioning: argument -> one value per image, or the row's own
        values where the call takes one conditioning for all its prompts (`conditioning_shared_by_call`; generation
        then gives it one row's images at a time)."""
        if self.conditioning_shared_by_call:
            return dict(values[0]) if values else {}
        return {arg: [v[arg] for v in values] for arg in (values[0] if values else {})}

    def latent_shape(self, resolution: int) -> Tuple[int, ...]:
        """Shape of one sample's latents (without the batch dimension) at a square resolution: `(C, h, w)` of
        the VAE by default."""
        side = resolution // self.pipeline.vae_scale_factor
        return (self.transformer.config.in_channels, side, side)

    def resolution_multiple(self) -> int:
        """Image sides must be a multiple of this: the VAE's downscaling times the transformer's patch size."""
        return self.pipeline.vae_scale_factor * (self.transformer.config.get("patch_size", None) or 1)

    def check_resolution(self, resolution: int) -> None:
        """Raise `ValueError` with valid sizes when the denoiser (the pipeline's transformer, or its UNet) cannot take
        latents of this resolution (`resolution_multiple`, and a position table's size where it has one)."""
        multiple, denoiser = self.resolution_multiple(), denoiser_of(self.pipeline)
        if resolution % multiple:
            nearest = sorted({c for c in (resolution // multiple * multiple, (resolution // multiple + 1) * multiple) if c})
            raise ValueError(f"resolution {resolution} does not suit {type(denoiser).__name__}: sides must be "
                             f"multiples of {multiple} (the VAE's downscaling times the "
                             f"{denoiser_name(type(self.pipeline))}'s). Use {' or '.join(map(str, nearest))}.")
        max_patches = denoiser.config.get("pos_embed_max_size", None)
        if max_patches and resolution // multiple > max_patches:
            raise ValueError(f"resolution {resolution} is larger than {type(denoiser).__name__}'s position "
                             f"embedding allows ({max_patches} patches: at most {max_patches * multiple} px).")

    def image_tokens(self, latent_shape: Tuple[int, ...]) -> int:
        """Number of image tokens the transformer sees for one sample (2x2 patches of 2-D latents by default)."""
        return (latent_shape[-1] // 2) * (latent_shape[-2] // 2)

    def schedule_sigmas(self, num_steps: int) -> Optional[np.ndarray]:
        """The sigmas the pipeline passes to its scheduler's `set_timesteps`; None lets the scheduler space them
        (SD3). FLUX-style pipelines override this."""
        return None

    def sampling_mu(self, latent_shape: Tuple[int, ...]) -> Optional[float]:
        """The resolution-dependent shift `mu` of schedulers with dynamic shifting (linear in the number of image
        tokens, as the pipelines compute it), or None for a static shift."""
        config = self.pipeline.scheduler.config
        if not config.get("use_dynamic_shifting", False):
            return None
        base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
        base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
        return base_shift + (max_shift - base_shift) / (max_len - base_len) * (self.image_tokens(latent_shape) - base_len)

    def sampling_sigmas(self, num_steps: int, latent_shape: Tuple[int, ...]) -> torch.Tensor:
        """The noise grid the pipeline itself would sample on in `num_steps` steps (float64, ending at 0)."""
        return pipeline_sigmas(
            self.pipeline.scheduler, num_steps, self.schedule_sigmas(num_steps), self.sampling_mu(latent_shape)
        )

    def start_latents(self, noise: torch.Tensor) -> torch.Tensor:
        """Where a rollout starts, given standard normal `noise`: the noise itself for most pipelines (Cosmos 2
        scales it, as its pipeline starts from variance-exploding noise)."""
        return noise

    def pipeline_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """These latents in the layout of the pipeline's `latents=` argument (the same one for most families)."""
        return latents

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The transformer's velocity `eps - x0` at noise level `sigma` (shape `(B,)`), in float32."""
        raise NotImplementedError

    def call_images(self, images: torch.Tensor) -> torch.Tensor:
        """The images of the pipeline's own call with `output_type="pt"`, in [0, 1]: as they are for most pipelines
        (PRXPixel's are its raw pixels in [-1, 1])."""
        return images

    def cfg_free_call_kwargs(self) -> dict:
        """The pipeline-call arguments that turn classifier-free guidance off (how a CFG-free LoRA is used)."""
        return {"guidance_scale": 1.0}

    def guidance_call_kwargs(self, guidance_scale: float) -> dict:
        """The pipeline-call arguments for classifier-free guidance `v_u + g (v_c - v_u)` with `g = guidance_scale`
        (1.0: none); most pipelines take `guidance_scale` and an empty negative prompt."""
        return self.cfg_free_call_kwargs() if guidance_scale == 1.0 else {"guidance_scale": guidance_scale}

    def call_kwargs(self, resolution: int, num_steps: int, max_sequence_length: int,
                    guidance_scale: float = 1.0) -> dict:
        """The pipeline-call arguments that generate as the run evaluates (`diffusers_nft.generation`) and as the
        model card's snippet calls: the trained size, text length and frame count, `num_steps` steps, the CFG switch."""
        kwargs = {"height": resolution, "width": resolution, "num_inference_steps": num_steps,
                  **self.guidance_call_kwargs(guidance_scale)}
        parameters = inspect.signature(type(self.pipeline).__call__).parameters
        if "max_sequence_length" in parameters:  # SD3 attends over the padding, so the length matters
            kwargs["max_sequence_length"] = max_sequence_length
        if self.video_frames() is not None and "num_frames" in parameters:
            kwargs["num_frames"] = self.video_frames()
        return kwargs

    @contextmanager
    def text_encoders_on(self, device, enabled: bool = True) -> Iterator[None]:
        """Text encoders kept on the CPU (`offload_text_encoders`) visit `device` inside the block."""
        moved = [e for e in self.text_encoders if enabled and e.device != torch.device(device)]
        for encoder in moved:
            encoder.to(device)
        try:
            yield
        finally:
            for encoder in moved:
                encoder.to("cpu")

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode latents to images as a float tensor `(B, 3, H, W)` in [0, 1] (an `AutoencoderKL` with its
        scaling and shift factors by default)."""
        vae = self.pipeline.vae
        latents = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
        images = vae.decode(latents, return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0, 1)


class VideoFamily(PipelineFamily):
    """Families whose samples are videos of `num_frames = r k + 1` frames, `r` being the VAE's temporal compression
    (`temporal_compression`): the first frame is encoded alone, then `r` frames per latent frame. `decode` gives
    `(B, F, 3, H, W)`.

    Raises:
        ValueError: From the constructor, for a frame count the VAE cannot encode, with the nearest valid ones.
    """

    pipeline_tag = "text-to-video"
    default_num_frames: int = 81  # the pipeline's default

    def __init__(self, pipeline, distilled_guidance_scale: float = 3.5, num_frames: Optional[int] = None):
        super().__init__(pipeline, distilled_guidance_scale, num_frames)
        ratio = self.temporal_compression()
        if (self.frames - 1) % ratio:
            below = (self.frames - 1) // ratio * ratio + 1
            raise ValueError(f"num_frames {self.frames} does not suit {type(pipeline).__name__}: its VAE takes "
                             f"{ratio} k + 1 frames. Use {below} or {below + ratio}.")

    def temporal_compression(self) -> int:
        """Frames per latent frame after the first."""
        return self.pipeline.vae_scale_factor_temporal

    @property
    def frames(self) -> int:
        return self.num_frames or self.default_num_frames

    def video_frames(self) -> int:
        return self.frames

    def latent_frames(self) -> int:
        return (self.frames - 1) // self.temporal_compression() + 1


class PackedLatentsFamily(PipelineFamily):
    """Families whose scheduler steps 2x2-packed token sequences `(h / 2 * w / 2, 4 * channels)` (FLUX.1,
    Qwen-Image, FLUX.2): image sides are multiples of twice the VAE's downscaling."""

    def resolution_multiple(self) -> int:
        return self.pipeline.vae_scale_factor * 2

    def latent_shape(self, resolution: int) -> Tuple[int, ...]:
        side = resolution // self.resolution_multiple()
        return (side * side, self.transformer.config.in_channels)

    def image_tokens(self, latent_shape: Tuple[int, ...]) -> int:
        return latent_shape[0]  # already packed

    def _guidance(self, model: torch.nn.Module, batch: int, device: torch.device) -> Optional[torch.Tensor]:
        """The embedded guidance of `model` (FLUX.1-dev's, FLUX.2-dev's, a ControlNet's), or None where it has no
        guidance embedding."""
        if not model.config.get("guidance_embeds", False):
            return None
        return torch.full((batch,), self.distilled_guidance_scale, device=device, dtype=torch.float32)
