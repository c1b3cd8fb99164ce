"""The shape of one NFT iteration: which images each process samples, how many micro-batches it trains, how many
optimizer steps they make. Pure arithmetic on the config and the process count, checked before any compute."""

import math
from dataclasses import dataclass

from .timesteps import num_train_timesteps


@dataclass(frozen=True)
class IterationPlan:
    """One iteration, per process.

    Attributes:
        num_processes: Processes that share the iteration's images.
        local_images: Images each process samples and trains on.
        levels_per_image: Noise levels (NFT) or recorded transitions (Flow-GRPO) each image trains at.
        micro_batches: Training micro-batches per process (`ceil(local_images / train_batch_size)` per level).
        accumulation: Micro-batches per optimizer step.
        optimizer_steps: Optimizer steps per iteration.
    """

    num_processes: int
    local_images: int
    levels_per_image: int
    micro_batches: int
    accumulation: int
    optimizer_steps: int

    @classmethod
    def from_config(cls, args, num_processes: int) -> "IterationPlan":
        """The plan of `args` (an `NFTConfig`) over `num_processes` processes.

        Raises:
            ValueError: If the images do not split evenly over the processes, or the micro-batches over the
                optimizer steps; the message says what to change.
        """
        images = args.images_per_iteration
        if images % num_processes:
            raise ValueError(f"prompts_per_iteration * group_size = {images} images must split evenly over "
                             f"{num_processes} processes.")
        local = images // num_processes
        levels = num_train_timesteps(args.num_sampling_steps, args.timestep_fraction)
        micro = math.ceil(local / args.train_batch_size) * levels
        if args.gradient_accumulation_steps is None and micro % args.optimizer_steps_per_iteration:
            raise ValueError(
                f"An iteration has {micro} training micro-batches per process; optimizer_steps_per_iteration="
                f"{args.optimizer_steps_per_iteration} must divide it (change train_batch_size or the group geometry)."
            )
        accumulation = args.gradient_accumulation_steps or micro // args.optimizer_steps_per_iteration
        if micro % accumulation:
            raise ValueError(
                f"An iteration has {micro} training micro-batches per process (ceil({local} / train_batch_size "
                f"{args.train_batch_size}) x {levels} timesteps); gradient_accumulation_steps={accumulation} must "
                "divide it."
            )
        return cls(num_processes, local, levels, micro, accumulation, micro // accumulation)

    def images_of(self, process_index: int) -> slice:
        """The iteration's image indices that `process_index` samples and trains on (groups may straddle)."""
        return slice(process_index * self.local_images, (process_index + 1) * self.local_images)
