"""What the trainer needs from a pipeline family. One subclass per family, in a file of its own."""

from typing import Dict, List, Tuple

import torch

Conditioning = Dict[str, torch.Tensor]
"""Prompt conditioning of a family: named tensors whose first dimension is the batch."""


def select_conditioning(cond: Conditioning, index: torch.Tensor) -> Conditioning:
    """Rows `index` of every conditioning tensor."""
    return {key: value[index.to(value.device)] for key, value in cond.items()}


class FlowPipelineAdapter:
    """The bridge between `NFTTrainer` and one family of flow-matching diffusers pipelines.

    A subclass names the pipeline classes it serves in `pipeline_class_names`, and implements prompt encoding,
    the latent shape, the velocity prediction and decoding. Everything else (adapters, sampling, the loss) is
    shared, so a new family is one small file registered in `diffusers_nft.pipelines`.

    Args:
        pipeline: The diffusers pipeline.
        distilled_guidance_scale: Guidance value for models with a guidance embedding.
    """

    pipeline_class_names: Tuple[str, ...] = ()
    default_lora_targets: Tuple[str, ...] = ()

    def __init__(self, pipeline, distilled_guidance_scale: float = 3.5):
        self.pipeline = pipeline
        # Fed to the guidance embedding of guidance-distilled models (FLUX.1-dev); ignored by the others.
        self.distilled_guidance_scale = distilled_guidance_scale
        # What forward passes go through; the trainer swaps in the accelerate-prepared module.
        self.model = pipeline.transformer

    @property
    def transformer(self) -> torch.nn.Module:
        return self.pipeline.transformer

    @property
    def text_encoders(self) -> List[torch.nn.Module]:
        """The text encoders, for moving them off the accelerator once prompts are encoded."""
        names = ("text_encoder", "text_encoder_2", "text_encoder_3")
        return [getattr(self.pipeline, n) for n in names if getattr(self.pipeline, n, None) is not None]

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        """Encode prompts once; the result is reused for every image of the prompt and for training."""
        raise NotImplementedError

    def latent_shape(self, resolution: int) -> Tuple[int, ...]:
        """Shape of one sample's latents (without the batch dimension) at a square resolution."""
        raise NotImplementedError

    def sampling_shift(self, latent_shape: Tuple[int, ...]) -> float:
        """The time shift of sampling at this latent shape: the scheduler's `shift` unless the family shifts by
        resolution (Flux: `exp(mu)`)."""
        return self.pipeline.scheduler.config.get("shift", 1.0)

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The transformer's velocity `eps - x0` at noise level `sigma` (shape `(B,)`), in float32."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode latents to images as a float tensor `(B, 3, H, W)` in [0, 1]."""
        raise NotImplementedError
