"""What a run publishes: the final LoRA (finite, written atomically), the model card from plain values, and the
upload to the Hub (staged, so that a failed upload leaves `output_dir` as it was). The trainer hands it tensors,
images and a `hub.CardInputs`; it never reads the trainer."""

import dataclasses
import os
import shutil
import tempfile
from typing import Dict, Optional, Sequence

import torch
from accelerate.logging import get_logger

from .conditioning import shown_sources
from .hub import CardInputs, save_sources, upload_folder, write_card_images, write_model_card
from .engine import NonFiniteError
from .lora_file import LORA_WEIGHT_NAME, write_lora_file
from .visualize import plot_reward_curve

logger = get_logger(__name__)


class Publisher:
    """Writes a run's LoRA and card, and uploads them.

    Args:
        accelerator: The run's `Accelerator`: the main process writes, every process waits for it.
        pipeline_class: The pipeline class whose `save_lora_weights` writes the LoRA file.
        lora_config: The `LoraConfig` the weights were trained with (its alpha is folded into the file).
        lora_layout: The LoRA files and the tensors each holds (`PipelineFamily.lora_layout`).
    """

    def __init__(self, accelerator, pipeline_class: type, lora_config, lora_layout):
        self.accelerator, self.pipeline_class = accelerator, pipeline_class
        self.lora_config, self.lora_layout = lora_config, lora_layout

    def save_lora(self, folder: str, weights: Dict[str, torch.Tensor]) -> str:
        """Write `pytorch_lora_weights.safetensors` (and the layout's other files) into `folder`, loadable with
        `pipe.load_lora_weights(folder, weight_name=...)`; call it on every process, with the gathered `weights`.

        Raises:
            NonFiniteError: If a tensor is not finite; nothing is written.
        """
        bad = [name for name, tensor in weights.items() if not torch.isfinite(tensor).all()]
        if bad:
            raise NonFiniteError(f"{len(bad)} of {len(weights)} LoRA tensors are not finite (e.g. {bad[0]}); the LoRA "
                                 f"was not saved to {folder}.")
        if self.accelerator.is_main_process:  # written beside, then renamed: a crash never leaves half a file
            os.makedirs(folder, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=".tmp-lora-", dir=folder)
            for written in write_lora_file(self.pipeline_class, staging, weights, self.lora_config, self.lora_layout):
                target = os.path.join(folder, os.path.basename(written))
                os.replace(written, target)
                logger.info("Saved LoRA %s", target)
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return os.path.join(folder, LORA_WEIGHT_NAME)

    def write_card(self, folder: str, inputs: CardInputs, prompts: Sequence[str], base: torch.Tensor,
                   tuned: torch.Tensor, *, seeds: Sequence[int], scale: int, caption: str,
                   conditioning: Optional[Sequence[dict]] = None) -> Optional[str]:
        """On the main process: the same-seed before/after grid, the widget images, the reward curve and
        `README.md` in `folder`; returns the card's path (None elsewhere).

        Args:
            inputs: What the card says.
            prompts: The gallery's prompts; `base` and `tuned` hold `len(seeds)` images of each, prompt-major.
            seeds: The seeds of each prompt's images (the grid's columns; the widget shows the first).
            scale: Upscaling of the grid's tiles, for tiny images.
            caption: How the images were generated, under the grid.
            conditioning: Each prompt's conditioning (argument -> PIL image(s)) for image-conditioned pipelines: the
                grid shows the source first, the images are saved beside the card, and the snippet loads them.
        """
        if not self.accelerator.is_main_process:
            return None
        label = (inputs.method.short if inputs.method else "NFT")
        sources = save_sources(folder, conditioning) if conditioning else None
        if sources:
            inputs = dataclasses.replace(inputs, conditioning_files=sources[0])
        widget = write_card_images(folder, list(prompts), base, tuned, per_prompt=len(seeds), scale=scale,
                                   settings=caption, tuned_label=label, seeds=seeds,
                                   sources=shown_sources(conditioning))
        if inputs.history:
            plot_reward_curve(inputs.history, os.path.join(folder, "reward_curve.png"))
        card = write_model_card(folder, widget=widget, seed=seeds[0], inputs=inputs)
        logger.info("Wrote model card %s (with %s)", card, ", ".join(sorted(os.listdir(os.path.join(folder, "images")))))
        return card

    def upload(self, output_dir: str, repo_id: str, token: Optional[str] = None, private: Optional[bool] = None,
               api=None) -> Optional[str]:
        """Upload `output_dir`'s LoRA, card and results (not its checkpoints, logs or samples) to `repo_id`; the URL
        on the main process, None elsewhere.

        Raises:
            RuntimeError: If the Hub refuses the card or the files, or is not reached; `output_dir` keeps them all.
        """
        if not self.accelerator.is_main_process:
            return None
        url = upload_folder(output_dir, repo_id, token=token, private=private, api=api)
        logger.info("Uploaded the LoRA, its model card and images to %s", url)
        return url
