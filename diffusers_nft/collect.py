"""Data collection: one process's share of an iteration's images, sampled as the objective asks (its policy, CFG
scale and sampler), decoded, and scored while the next batch samples."""

import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .conditioning import read_conditioning, reward_metadata
from .data import row_metadata
from .guidance import empty_prompt_rows, guided_velocity
from .machines import agreed_max
from .memory_fit import FALLBACK_BATCH_SIZE, fit_batch
from .monitors import thumbnails
from .pipelines import select_conditioning
from .pipelines.base import SOURCE
from .rollouts import Rollouts

# Independent random streams of one run: changing how one is drawn leaves the others as they were.
SEED_STREAMS = {"noise": 1, "train": 2, "eval": 3, "sde": 4}


def seeded(seed: int, *keys: int) -> torch.Generator:
    """An independent CPU generator for `(seed, *keys)`: noise does not depend on batch or process layout."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def nested_bar(accelerator, total: int, desc: str) -> tqdm:
    """A bar inside the iteration bar: only on a terminal, where it redraws in place (in a log file it would leave
    cursor-movement escape codes), and on the local main process."""
    on = accelerator.is_local_main_process and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, leave=False, disable=not on)


class Collector:
    """Encodes prompts, builds the (optionally guided) velocity, and collects an iteration's rollouts.

    Args:
        family: The pipeline family's family.
        policy: The `NFTPolicy`; collection samples with `objective.sampling_policy`.
        scorer: The `RewardScorer` that scores a batch while the next one samples.
        accelerator: The run's `Accelerator` (device, process index).
        args: The `NFTConfig`.
        plan: The `IterationPlan` (this process's images).
        dataset: The training prompts (a `datasets.Dataset`).
        latent_shape: The latent shape of one sample.
        max_sequence_length: Text tokens per prompt.
        columns: The dataset's conditioning columns (pipeline-call argument -> column), for image-conditioned
            pipelines.
    """

    def __init__(self, *, family, policy, scorer, accelerator, args, plan, dataset, latent_shape, max_sequence_length,
                 columns: Optional[Dict[str, str]] = None):
        self.family, self.policy, self.scorer, self.accelerator = family, policy, scorer, accelerator
        self.args, self.plan, self.dataset = args, plan, dataset
        self.latent_shape, self.max_sequence_length = latent_shape, max_sequence_length
        self.columns = columns or {}
        # Images per sampling batch: the config's, else FALLBACK_BATCH_SIZE until `fit_batch_to_memory` measures.
        self.batch_size = args.sample_batch_size or FALLBACK_BATCH_SIZE
        self._uncond = None

    def encode(self, prompts: List[str]):
        """The prompts' conditioning, without gradients (offloaded text encoders visit the device meanwhile)."""
        device = self.accelerator.device
        with self.family.text_encoders_on(device, enabled=self.args.offload_text_encoders), torch.no_grad():
            return self.family.encode_prompts(prompts, device, self.max_sequence_length)

    def uncond(self):
        """The empty prompt's conditioning (one row), encoded once."""
        if self._uncond is None:
            self._uncond = self.encode([""])
        return self._uncond

    def velocity(self, cond, num_rows: int, guidance_scale: float = 1.0):
        """`(x, sigma) -> velocity` of the active policy for `num_rows` samples; with `guidance_scale > 1`,
        classifier-free guided."""
        predict = self.family.predict_velocity
        if guidance_scale <= 1.0:
            return lambda x, sigma: predict(x, sigma, cond)
        uncond = empty_prompt_rows(self.uncond(), num_rows)
        return lambda x, sigma: guided_velocity(predict, x, sigma, cond, uncond, guidance_scale)

    def encode_rows(self, rows):
        """The conditioning of dataset `rows` (their prompts, and their images for image-conditioned pipelines:
        decoded and encoded once for the whole group) and their metadata as rewards take it: `(cond, metadata)`."""
        args, row_prompts, row_meta = self.args, list(rows["prompt"]), row_metadata(rows)
        cond = self.encode(row_prompts)
        if self.columns:
            values, device = read_conditioning(rows, self.columns, args.resolution), self.accelerator.device
            with self.family.text_encoders_on(device, enabled=args.offload_text_encoders), torch.no_grad():
                cond[SOURCE] = self.family.encode_conditioning(values, device, prompts=row_prompts)
            row_meta = [{**{k: v for k, v in meta.items() if k not in self.columns.values()}, **extra}  # no paths
                        for meta, extra in zip(row_meta, reward_metadata(values))]
        return cond, row_meta

    def fit_batch_to_memory(self, memory, objective) -> str:
        """Set `batch_size` to the most images a sampling batch fits in the device's free memory (`memory_fit`),
        measured on batches of the first prompt with `objective`'s sampler, policy and CFG, and agreed by every
        process (the smallest); returns how it was chosen, for the start-up block."""
        cond, _ = self.encode_rows(self.dataset.select([0]))

        def peak_of(count: int) -> int:
            shape = (count, *self.latent_shape)
            noise = torch.randn(shape, generator=seeded(self.args.seed, 0)).to(self.accelerator.device)
            velocity = self.velocity(select_conditioning(cond, torch.zeros(count, dtype=torch.long)), count,
                                     objective.guidance_scale)

            def step_noise(k):
                return torch.randn(shape, generator=seeded(self.args.seed, 0, k))

            def sample():
                with self.policy.using(objective.sampling_policy), torch.no_grad():
                    return self.family.decode(objective.sample(velocity, self.family.start_latents(noise),
                                                               step_noise).latents)
            return memory.peak(sample)

        batch, reason = fit_batch(peak_of, memory.free(), self.plan.local_images)
        self.batch_size = int(-agreed_max(-batch, self.accelerator.device))
        return reason if self.batch_size == batch else f"the smallest of the processes'; here {batch}, {reason}"

    def collect(self, prompt_index: Sequence[int], *, iteration: int, objective, timings: Dict[str, float]) -> Rollouts:
        """Sample this process's share of the iteration's images as `objective` asks, and score them.

        Args:
            prompt_index: The iteration's prompt rows of `dataset`, one per group.
            iteration: The iteration number (seeds the noise).
            objective: The `Objective`: its `sampling_policy`, `guidance_scale` and `sample`.
            timings: `"sampling"` and `"reward"` seconds, added to.
        """
        args, start = self.args, time.perf_counter()
        image_ids = torch.arange(args.images_per_iteration)[self.plan.images_of(self.accelerator.process_index)]
        group_ids = image_ids // args.group_size
        local_groups = sorted(set(group_ids.tolist()))
        rows = self.dataset.select([prompt_index[g] for g in local_groups])
        row_prompts = list(rows["prompt"])
        cond, row_meta = self.encode_rows(rows)
        row_of_image = torch.tensor([local_groups.index(g) for g in group_ids.tolist()])
        prompts = [row_prompts[i] for i in row_of_image.tolist()]
        metadata = [row_meta[i] for i in row_of_image.tolist()]
        timings["sampling"] += time.perf_counter() - start
        batches = self._sample_batches(cond, row_of_image, image_ids, iteration, objective, timings,
                                       prompts=prompts, metadata=metadata)
        start = time.perf_counter()
        rewards = [self.scorer.wait(future) for future in batches.pop("futures")]  # scored while sampling went on
        timings["reward"] += time.perf_counter() - start
        return Rollouts(
            cond=cond, row_of_image=row_of_image, group_ids=group_ids,
            rewards={k: torch.cat([r[k] for r in rewards]) for k in rewards[0]},
            uncond=self.uncond() if "uncond" in objective.needs else None,
            **{k: torch.cat(v) if v else None for k, v in batches.items()},
        )

    def _sample_batches(self, cond, row_of_image, image_ids, iteration, objective, timings, *, prompts, metadata):
        """Sample, decode and submit for scoring every batch of `batch_size` images."""
        args, shape = self.args, self.latent_shape
        out = {"latents": [], "states": [], "log_probs": [], "thumbnails": [], "futures": []}
        bar = nested_bar(self.accelerator, self.plan.local_images, "sampling")
        with self.policy.using(objective.sampling_policy):
            for lo in range(0, self.plan.local_images, self.batch_size):
                start = time.perf_counter()
                index = torch.arange(lo, min(lo + self.batch_size, self.plan.local_images))
                ids = [int(image_ids[i]) for i in index]
                noise = torch.stack([torch.randn(shape, generator=seeded(args.seed, SEED_STREAMS["noise"], iteration, i))
                                     for i in ids])

                def step_noise(k, ids=ids):  # the SDE's noise of step k, per image
                    return torch.stack([torch.randn(shape, generator=seeded(args.seed, SEED_STREAMS["sde"], iteration,
                                                                            i, k)) for i in ids])

                row_cond = select_conditioning(cond, row_of_image[index])
                velocity = self.velocity(row_cond, len(index), objective.guidance_scale)
                with torch.no_grad():
                    first = self.family.start_latents(noise.to(self.accelerator.device))  # the rollout's start
                    sample = objective.sample(velocity, first, step_noise)
                    images = self.family.decode(sample.latents)
                out["latents"].append(sample.latents)
                for key in ("states", "log_probs"):
                    if getattr(sample, key) is not None:
                        out[key].append(getattr(sample, key))
                if args.monitors:
                    out["thumbnails"].append(thumbnails(images).cpu())
                timings["sampling"] += time.perf_counter() - start
                start = time.perf_counter()
                out["futures"].append(self.scorer.submit(images, [prompts[i] for i in index.tolist()],
                                                         [metadata[i] for i in index.tolist()]))
                timings["reward"] += time.perf_counter() - start
                bar.update(len(index))
        bar.close()
        return out

