"""The images a run shows people and judges: which prompts (and sources) the grids and the card use, the pipeline
call that draws them (`generation`), with any of the run's weights (`policy.WEIGHTS`)."""

from typing import Dict, List, Optional, Sequence

import torch

from .conditioning import read_conditioning, reward_metadata
from .data import row_metadata
from .generation import generate_images, low_precision, sampling_with
from .memory_fit import FALLBACK_BATCH_SIZE


class RunImages:
    """Generation for a run.

    Args:
        pipeline, family, policy: What draws (the policy switches the LoRA weights).
        accelerator: The run's `Accelerator` (its device and precision).
        args: The `NFTConfig` (resolution, steps, batch size, validation prompts).
        max_sequence_length: The trained text length.
        columns: The conditioning columns (image-conditioned pipelines), else empty.
        train_dataset, eval_dataset: Where the validation rows come from (held-out first).
        guidance_scale: The CFG of evaluation, grids and the card (`Objective.evaluation_guidance`; 1.0: none).
    """

    def __init__(self, *, pipeline, family, policy, accelerator, args, max_sequence_length: int, columns: Dict[str, str],
                 train_dataset, eval_dataset=None, guidance_scale: float = 1.0):
        self.pipeline, self.family, self.policy, self.accelerator = pipeline, family, policy, accelerator
        self.args, self.max_sequence_length, self.columns = args, max_sequence_length, columns
        self.guidance_scale = guidance_scale
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset

    @property
    def published_weights(self) -> str:
        """`"ema"` unless `save_ema_weights=False`, then `"trained"`: what the run publishes and evaluates."""
        return "ema" if self.args.save_ema_weights else "trained"

    def validation_prompts(self) -> List[str]:
        """`validation_prompts`, else the first 4 held-out (or training) prompts; with conditioning columns always
        those rows, whose images go with them."""
        if self.args.validation_prompts and not self.columns:
            return list(self.args.validation_prompts)
        return list(self._validation_rows()["prompt"])

    def validation_conditioning(self) -> Optional[List[Dict[str, object]]]:
        """Each validation prompt's conditioning (`conditioning.read_conditioning`), or None for text-only runs."""
        return read_conditioning(self._validation_rows(), self.columns, self.args.resolution) if self.columns else None

    def _validation_rows(self):
        source = self.eval_dataset if self.eval_dataset is not None else self.train_dataset
        return source.select(range(min(4, len(source))))

    def call_kwargs(self, num_steps: Optional[int] = None, guidance_scale: Optional[float] = None) -> Dict[str, object]:
        """The call of evaluation images and of the card's snippet: `eval_num_steps` steps (40, the release's),
        the evaluation CFG (`guidance_scale`), at the trained resolution, text length and frame count."""
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        return self.family.call_kwargs(self.args.resolution, num_steps or self.args.eval_num_steps,
                                       self.max_sequence_length, scale)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seeds: Sequence[int], weights: str = "ema",
                 num_steps: Optional[int] = None, guidance_scale: float = 1.0, scheduler=None,
                 conditioning: Optional[Sequence[Dict[str, object]]] = None) -> torch.Tensor:
        """See `NFTTrainer.generate`."""
        args, accelerator = self.args, self.accelerator
        precision = low_precision(accelerator.device, accelerator.mixed_precision)
        with self.policy.weights(weights), sampling_with(self.pipeline, scheduler), precision, \
                self.family.text_encoders_on(accelerator.device, enabled=args.offload_text_encoders):
            return generate_images(self.pipeline, prompts, seeds, call_kwargs=self.call_kwargs(num_steps, guidance_scale),
                                   batch_size=args.sample_batch_size or FALLBACK_BATCH_SIZE, conditioning=conditioning,
                                   family=self.family)

    def judged(self, dataset):
        """One image per row of `dataset` (row `i` with seed `i`) with the published weights, and its prompts and
        metadata (its sources included) as judges take them: `(images, prompts, metadata)`."""
        prompts, metadata = list(dataset["prompt"]), row_metadata(dataset)
        values = read_conditioning(dataset, self.columns, self.args.resolution) if self.columns else None
        if values:  # the judges see each prompt's source too
            metadata = [{**m, **extra} for m, extra in zip(metadata, reward_metadata(values))]
        images = self.generate(prompts, list(range(len(prompts))), weights=self.published_weights, conditioning=values,
                               guidance_scale=self.guidance_scale)
        return images, prompts, metadata

    def gallery(self, seeds: Sequence[int], weights: Sequence[str]):
        """The validation prompts at each of `seeds` (prompt-major), once per set of `weights`: `(prompts,
        conditioning, {weights: images})`."""
        prompts, values = self.validation_prompts(), self.validation_conditioning()
        per_image = None if values is None else [v for v in values for _ in seeds]
        drawn = {w: self.generate([p for p in prompts for _ in seeds], list(seeds) * len(prompts), weights=w,
                                  conditioning=per_image, guidance_scale=self.guidance_scale) for w in weights}
        return prompts, values, drawn
