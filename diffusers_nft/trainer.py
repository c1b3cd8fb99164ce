"""`NFTTrainer`: the DiffusionNFT loop on accelerate (and Flow-GRPO's, with `objective="flow_grpo"`).

One iteration (`NFTTrainer.step`):
1. draw `prompts_per_iteration` prompts and sample `group_size` images each as the objective asks (NFT: the old
   policy, CFG-free, keeping only the final latents), decoded and scored while the next batch samples (`collect`);
2. gather the rewards of every process and turn them into credit (NFT: optimality probabilities r) (`credit`);
3. train the LoRA on the objective's micro-batches (`objectives`);
4. soft-update the old policy toward the trained one.

The trainer keeps the loop; each other job has an owner that takes plain values: the pipeline family
(`pipelines`), the engine it trains (`engine`), the logs (`run_log.RunLog`), images (`generation`), the LoRA file,
card and upload (`publisher.Publisher`), and checkpoints (`checkpoints.Checkpointer`).
"""

import os
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration
from peft import LoraConfig
from tqdm.auto import tqdm

from . import zero
from .callbacks import CallbackList, TrainerControl, TrainerState, evaluation_metrics, update_best_metric
from .checkpoints import CheckpointError, Checkpointer, check_output_dir, clean_incomplete, trained_function
from .collect import SEED_STREAMS, Collector, seeded
from .conditioning import check_run_conditioning, shown_sources
from .config import NFTConfig
from .credit import Credit, assign_credit
from .data import PromptSampler, PromptSource, prompt_sets
from .engine import NonFiniteError, build_engine, place_pipeline, probe_rewards
from .hub import CardInputs, card_hyperparameters, check_hub, hub_base_model
from .interrupts import StopSignals, TrainingInterrupted
from .lora_file import denoiser_of, give_peft_support, has_lora_loader, loading_call, write_lora_file
from .machines import check_shared_output_dir, on_every_machine
from .memory_fit import device_memory
from .metrics import TOTAL, eval_key, loss_key, monitor_key, reward_key, reward_stats, time_key
from .monitors import group_diversity, image_stats
from .objectives import build_objective, objective_class, resolve_config
from .objectives.base import cfg_words
from .pipelines import family_for_training
from .plan import IterationPlan
from .policy import check_lora_targets, make_lora_config
from .publisher import Publisher
from .rewards import RewardScorer, rewards_of
from .rollouts import Rollouts
from .run_images import RunImages
from .run_log import RunLog, count, device_words, precision_words, startup_block
from .schedules import old_policy_decay

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline, SchedulerMixin
    from huggingface_hub import HfApi

# A reward: a registered name or a callable `(images, prompts, metadata) -> floats`; or a list of them.
Rewards = Union[str, Callable, Sequence[Union[str, Callable]]]

logger = get_logger(__name__)

__all__ = ["NFTTrainer", "NonFiniteError"]


class NFTTrainer:
    """Fine-tune a flow-matching diffusers pipeline with DiffusionNFT, training a LoRA.

    Args:
        pipeline: A diffusers pipeline whose scheduler is a flow-matching one (`StableDiffusion3Pipeline`, ...).
        reward_funcs: A reward name (see `diffusers_nft.rewards.available_rewards()`), a callable
            `(images, prompts, metadata) -> floats`, or a list of them (weighted by `args.reward_weights`).
        args: The `NFTConfig` (`FlowGRPOConfig` for Flow-GRPO).
        train_dataset: Prompts: a `datasets.Dataset` with a `"prompt"` column (other columns reach the rewards as
            metadata), a list of strings, or a `.txt`/`.jsonl` file.
        eval_dataset: Held-out prompts, never trained on: scored by the judges every `eval_steps` iterations
            (`eval/<judge>/mean` in the metrics and the reward curve), and the validation grid's prompts when
            `args.validation_prompts` is not set.
        peft_config: The LoRA (`peft.LoraConfig`). Default: rank 32, alpha 64, gaussian init, on the family's
            attention projections (the release).
        callbacks: Objects with `on_step_end`, `on_log`, `on_evaluate`, `on_save`, ... hooks (see
            `diffusers_nft.callbacks`; `transformers.TrainerCallback` subclasses work); one may end training with
            `control.should_training_stop = True`. Hooks get `trainer=` too. `diffusers_nft.HackingGuard` is one.
        eval_reward_funcs: Judges for `eval_dataset` that are never trained on (names or callables, as
            `reward_funcs`); default: the training rewards.
        objective: `"nft"` or `"flow_grpo"` (`diffusers_nft.objectives.OBJECTIVES`); overrides `args.objective`.

    After `train()`, `pipeline` is the trained model: its transformer has one LoRA adapter, `"default"`, holding
    the saved weights (the EMA unless `save_ema_weights=False`), active.

    Example:
        ```py
        trainer = NFTTrainer(pipe, "jpeg_compressibility", NFTConfig(output_dir="out"), ["a cat", "a dog"])
        trainer.train()
        pipe.load_lora_weights("out", weight_name="pytorch_lora_weights.safetensors")
        ```
    """

    # How the model card's snippet builds a base that is not on the Hub: `(import line, expression)`, such as the
    # demo worlds' bundled pipelines (the scripts set it); None: `from_pretrained(<the base's Hub id>)`.
    card_base_loader: Optional[Tuple[str, str]] = None

    def __init__(self, pipeline: "DiffusionPipeline", reward_funcs: Rewards, args: Optional[NFTConfig] = None,
                 train_dataset: PromptSource = None, eval_dataset: Optional[PromptSource] = None,
                 peft_config: Optional[LoraConfig] = None, callbacks: Optional[Sequence] = None,
                 eval_reward_funcs: Optional[Rewards] = None, objective: Optional[str] = None):
        # Everything that can be wrong with the inputs is checked before any model compute.
        self.args = args = resolve_config(args, objective)
        self.objective_class = objective_class(args.objective)
        self.callbacks = CallbackList(callbacks or [], trainer=self)
        give_peft_support(pipeline)
        self.pipeline, self.family = pipeline, family_for_training(pipeline, args)
        self.max_sequence_length = args.max_sequence_length or self.family.default_max_sequence_length
        self.train_dataset, self.eval_dataset = prompt_sets(train_dataset, eval_dataset)
        self.columns = check_run_conditioning(self.family, args, {"train_dataset": self.train_dataset,
                                                                  "eval_dataset": self.eval_dataset})
        # The Accelerator comes first: it sets up the processes that everything below counts. It only reads the
        # environment; no model is touched yet.
        self.accelerator = Accelerator(
            mixed_precision=args.mixed_precision,  # None: accelerate's own setting (launcher flag, config file)
            log_with=args.trackers(),
            project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=args.logging_dir),
        )
        self.family.check_accelerator(self.accelerator)
        self._setup_rewards(reward_funcs, eval_reward_funcs)
        on_every_machine(lambda: check_output_dir(args.output_dir), "the output folder")
        check_shared_output_dir(args.output_dir)
        self.checkpointer = Checkpointer(self.accelerator, args)
        peft_config = peft_config or make_lora_config(self.family.denoiser,
                                                      default_targets=self.family.default_lora_targets)
        check_lora_targets(self.family.denoiser, peft_config.target_modules)
        resume = self._read_checkpoint(peft_config)  # a bad checkpoint fails now, not later
        self._claim_destinations(resume[0])
        self.plan = IterationPlan.from_config(args, self.accelerator.num_processes)
        self.accelerator.gradient_accumulation_steps = self.plan.accumulation
        zero.prepare(self.accelerator, args, self.plan.accumulation)
        on_every_machine(lambda: probe_rewards(self.scorer, self.eval_rewards, self.train_dataset, self.family,
                                               args.resolution, self.accelerator.device, self.columns), "the rewards")
        place_pipeline(pipeline, self.family, self.accelerator, args)
        self.engine = build_engine(self.family, peft_config, self.accelerator, args, self.plan)
        self.policy, self.model = self.engine.policy, self.engine.model
        self.optimizer, self.lr_scheduler = self.engine.optimizer, self.engine.lr_scheduler
        self.run_log = RunLog(self.accelerator, args.output_dir, args.trackers(), args.logging_dir)
        self.publisher = Publisher(self.accelerator, type(pipeline), peft_config, self.family.lora_layout())
        self.images = RunImages(pipeline=pipeline, family=self.family, policy=self.policy, accelerator=self.accelerator,
                                args=args, max_sequence_length=self.max_sequence_length, columns=self.columns,
                                train_dataset=self.train_dataset, eval_dataset=self.eval_dataset,
                                guidance_scale=self.objective_class.evaluation_guidance(args))
        self._setup_loop()
        if resume[0]:
            self._load(*resume)

    def _lora_file_words(self) -> str:
        """How the start-up block says to load the LoRA file."""
        if has_lora_loader(type(self.pipeline)):
            return "pytorch_lora_weights.safetensors, for pipe.load_lora_weights"
        _, call, extra = loading_call(type(self.pipeline))  # as the model card's snippet loads it
        return (f"pytorch_lora_weights.safetensors: {type(self.pipeline).__name__} has no load_lora_weights, so load "
                f"it with {call}folder, weight_name=...{extra})")

    def _setup_rewards(self, reward_funcs: Rewards, eval_reward_funcs: Optional[Rewards]) -> None:
        """The training rewards (weighted), the judges never trained on (None: `evaluate()` scores with the training
        rewards), and the scorer that calls the training rewards."""
        args, device = self.args, self.accelerator.device
        self.rewards = rewards_of(reward_funcs, args, device, weighted=True)
        self.eval_rewards = rewards_of(eval_reward_funcs, args, device) if eval_reward_funcs else None
        self.scorer = RewardScorer(self.rewards, args.reward_scoring, timeout=args.reward_timeout)

    def _read_checkpoint(self, peft_config: LoraConfig):
        """`(path, parts)` of the checkpoint to resume from, checked against this run (`Checkpointer.read`, with
        what it trains: `self.trains`, also written into every checkpoint), or `(None, None)`."""
        self.trains = trained_function(peft_config, self.rewards.names, self.rewards.weights,
                                       self.train_dataset["prompt"])
        return self.checkpointer.read(self.args.resume_from_checkpoint, self.trains)

    def _claim_destinations(self, resumed: Optional[str]) -> None:
        """Before any compute: the output folder is this run's alone (a fresh run never mixes with another's files,
        `Checkpointer.claim_output_dir`), and with `push_to_hub` the Hub repo can be written (a run that cannot
        upload fails now, not after training)."""
        args = self.args
        self._refusal = self.checkpointer.claim_output_dir(resumed)  # raised by step(), unless train() resumes
        if args.push_to_hub and self.accelerator.is_main_process:
            logger.info("The Hub repo %s is ready for the upload after training.",
                        check_hub(self._repo_id(None), token=args.hub_token, private=args.hub_private_repo))

    def _setup_loop(self) -> None:
        """The grid, objective, collector, prompt order and counters of a fresh run (a resume overwrites the last)."""
        args = self.args
        self.latent_shape = self.family.latent_shape(args.resolution)
        # Every solver runs on the grid of the pipeline's own scheduler, and NFT's training draws from exactly the
        # noise levels the rollouts called the model at.
        self.sampling_sigmas = self.family.sampling_sigmas(args.num_sampling_steps, self.latent_shape)
        self.objective = build_objective(args, family=self.family, policy=self.policy,
                                         sampling_sigmas=self.sampling_sigmas)
        self.collector = Collector(family=self.family, policy=self.policy, scorer=self.scorer,
                                   accelerator=self.accelerator, args=args, plan=self.plan, dataset=self.train_dataset,
                                   latent_shape=self.latent_shape, max_sequence_length=self.max_sequence_length,
                                   columns=self.columns)
        self.sampling_batch = self._fit_sampling_batch()
        self.prompt_sampler = PromptSampler(len(self.train_dataset), args.seed)
        self.state = TrainerState(max_steps=args.max_steps,  # global_step and log_history live here
                                  is_local_process_zero=self.accelerator.is_local_main_process,
                                  is_world_process_zero=self.accelerator.is_main_process)
        self.control = TrainerControl()

    def _fit_sampling_batch(self) -> str:
        """The collector's images per sampling batch: `sample_batch_size`, else the most that fit in the device's
        memory where it can be measured (CUDA); returns the start-up block's words for it."""
        memory = device_memory(self.accelerator.device) if self.args.sample_batch_size is None else None
        if memory is not None:
            reason = self.collector.fit_batch_to_memory(memory, self.objective)
        else:
            reason = "sample_batch_size" if self.args.sample_batch_size else "the default where memory is not measured"
        return f"{self.collector.batch_size} images per process ({reason})"

    # ------------------------------------------------------------------ the loop

    @property
    def global_step(self) -> int:
        """NFT iterations done (TRL's `state.global_step`; an iteration holds several optimizer steps)."""
        return self.state.global_step

    @global_step.setter
    def global_step(self, value: int) -> None:
        self.state.global_step = value

    @property
    def optimizer_step(self) -> int:
        """Optimizer steps done (the lr warm-up, the EMA and the old-policy decay count these)."""
        return self.engine.optimizer_step

    @property
    def history(self) -> List[Dict[str, float]]:
        """The metrics of every iteration so far; TRL's name for it, `state.log_history`, is the same list."""
        return self.state.log_history

    @history.setter
    def history(self, value: List[Dict[str, float]]) -> None:
        self.state.log_history = value

    def train(self, resume_from_checkpoint: Optional[str] = None) -> List[Dict[str, float]]:
        """Run NFT iterations until `max_steps`, with logging, checkpoints, sample grids and the final LoRA.

        Args:
            resume_from_checkpoint: A `checkpoint-<step>` folder, or `"latest"` in `output_dir`, to continue from
                exactly (as `NFTConfig.resume_from_checkpoint`, which is read when the trainer is built).

        Returns:
            The metrics of every iteration.
        """
        args, accelerator, started = self.args, self.accelerator, time.perf_counter()
        self.policy.resume()  # a second train() (a larger max_steps) trains on from where the first ended
        if resume_from_checkpoint:
            path, parts = self.checkpointer.read(resume_from_checkpoint, self.trains)
            if path:
                self._load(path, parts)
                self._refusal = self.checkpointer.claim_output_dir(path)
        if accelerator.is_main_process:
            clean_incomplete(args.output_dir)
        self.run_log.start("diffusers-nft", args.to_dict(), self.describe())
        first_step = self.global_step
        if self.global_step == 0 and self.validation_prompts:
            self.log_validation()
        bar = tqdm(total=args.max_steps, initial=self.global_step, desc=self.objective_class.short,
                   disable=not accelerator.is_local_main_process)
        try:
            self.callbacks.call("on_train_begin", args, self.state, self.control)
            with StopSignals() as stop:
                while self.global_step < args.max_steps and not self.control.should_training_stop:
                    metrics = self.step()
                    bar.update(1)
                    bar.set_postfix(reward=f"{metrics[reward_key(TOTAL)]:.4g}", loss=f"{metrics[loss_key('policy')]:.3g}")
                    self.end_iteration(metrics)
                    self._stop_if_asked(stop)
            bar.close()
            self.save_lora(args.output_dir)
        finally:
            self.scorer.close()  # the reward worker (a process with reward_scoring="process") never outlives train()
        accelerator.wait_for_everyone()
        accelerator.end_training()
        self.policy.finish(self.published_weights)
        self.callbacks.call("on_train_end", args, self.state, self.control)
        logger.info(self.run_log.summary(self.global_step, self.history, time.perf_counter() - started,
                                         (self.global_step - first_step) * args.images_per_iteration))
        return self.history

    def step(self) -> Dict[str, float]:
        """One NFT iteration: sample, reward, train, update the old policy. Returns its metrics."""
        args, iteration = self.args, self.global_step
        if self._refusal:  # a fresh run in another run's folder: nothing is computed or written
            raise ValueError(self._refusal)
        self.policy.resume()  # after train(): the old adapter again
        timings = {"sampling": 0.0, "reward": 0.0}
        prompt_index = self.prompt_sampler.next(args.prompts_per_iteration)
        rollouts = self.collector.collect(prompt_index, iteration=iteration, objective=self.objective, timings=timings)
        start = time.perf_counter()
        credit = assign_credit(rollouts, accelerator=self.accelerator, rewards=self.rewards, objective=self.objective,
                               plan=self.plan)
        timings["reward"] += time.perf_counter() - start
        start = time.perf_counter()
        metrics = self.train_on(rollouts, credit.local, iteration)
        if args.monitors:
            metrics.update(self._image_monitors(rollouts, credit.group_ids))
        metrics["old_theta_deviation"] = self.policy.deviation()
        metrics["old_policy_decay"] = old_policy_decay(self.optimizer_step, args.old_policy_decay,
                                                       args.old_policy_decay_constant)
        self.policy.update_old(metrics["old_policy_decay"])
        timings["training"] = time.perf_counter() - start
        self.global_step += 1
        metrics = self._iteration_metrics(credit, rollouts, metrics, timings)
        self.history.append(metrics)
        return metrics

    def _iteration_metrics(self, credit: Credit, rollouts: Rollouts, trained: Dict[str, float],
                           timings: Dict[str, float]) -> Dict[str, float]:
        """The iteration's row of `metrics.jsonl`: rewards, credit, training, monitors and times."""
        metrics = {"step": self.global_step, "optimizer_step": self.optimizer_step}
        for name, values in credit.scores.items():
            metrics.update(reward_stats(name, values))
        metrics.update({**credit.metrics, "sample_x0_norm": rollouts.latents.flatten(1).norm(dim=1).mean().item(),
                        "lr": self.lr_scheduler.get_last_lr()[0], **trained})
        metrics.update({time_key(k): v for k, v in timings.items()})
        metrics[time_key("iteration")] = sum(timings.values())
        metrics["images_per_second"] = self.args.images_per_iteration / max(sum(timings.values()), 1e-9)
        if torch.cuda.is_available():
            metrics["gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return metrics

    def train_on(self, rollouts: Rollouts, credit: torch.Tensor, iteration: int) -> Dict[str, float]:
        """Train on the objective's micro-batches of this process's `rollouts`, with their `credit` (`Engine`)."""
        generator = seeded(self.args.seed, SEED_STREAMS["train"], iteration, self.accelerator.process_index)
        batches = self.objective.micro_batches(rollouts, credit, batch_size=self.args.train_batch_size,
                                               levels=self.plan.levels_per_image, generator=generator)
        return self.engine.train_on(batches, self.objective, iteration=iteration)

    def _image_monitors(self, rollouts: Rollouts, group_ids: torch.Tensor) -> Dict[str, float]:
        """Brightness, saturation and within-group diversity of the iteration's images (all processes')."""
        images = self.accelerator.gather(rollouts.thumbnails.to(self.accelerator.device)).cpu()
        stats = {**image_stats(images), "diversity": group_diversity(images, group_ids)}
        return {monitor_key(k): v for k, v in stats.items()}

    def end_iteration(self, metrics: Dict[str, float]) -> None:
        """Evaluate, log, checkpoint and draw the validation grid when their iterations come; tell the callbacks.
        `train()` calls it after each `step()`; a loop of one's own does too."""
        args, step, hooks = self.args, self.global_step, self.callbacks
        last = step == args.max_steps
        if self.eval_dataset is not None and (step % (args.eval_steps or args.validation_steps) == 0 or last):
            results = self.evaluate()
            metrics.update(results)  # into this iteration's row of metrics.jsonl and the trackers
            results = evaluation_metrics(results)  # with transformers' eval_<judge> names for its callbacks
            hooks.call("on_evaluate", args, self.state, self.control, metrics=results)
            update_best_metric(self.state, args, results)
        if step % args.logging_steps == 0 or last:
            self.run_log.log(metrics, self.history, last=last)
            hooks.call("on_log", args, self.state, self.control, logs=metrics)
        if step % args.save_steps == 0:
            hooks.call("on_save", args, self.state, self.control, checkpoint=self.save_checkpoint())
        if (step % args.validation_steps == 0 or last) and self.validation_prompts:
            self.log_validation()
        hooks.call("on_step_end", args, self.state, self.control, metrics=metrics)

    def _stop_if_asked(self, stop: StopSignals) -> None:
        """After a SIGTERM/SIGINT on any process: a checkpoint if `save_on_interrupt`, then `TrainingInterrupted`."""
        accelerator = self.accelerator
        signum = int(accelerator.gather(torch.tensor([stop.received or 0], device=accelerator.device)).max())
        if not signum:  # every process stops together, or none does
            return
        if self.args.save_on_interrupt and self.global_step % self.args.save_steps:
            self.save_checkpoint()
        accelerator.end_training()
        raise TrainingInterrupted(signum)

    def describe(self) -> str:
        """The start-up block: what `train()` will run, and where it writes and logs."""
        args, plan, method, accelerator = self.args, self.plan, self.objective_class, self.accelerator
        model = getattr(self.pipeline, "name_or_path", None) or type(denoiser_of(self.pipeline)).__name__
        iterations = args.max_steps - self.global_step
        return startup_block(method.title, {
            "model": f"{model} ({type(self.pipeline).__name__}, {type(self.family).__name__})",
            "iteration": f"{args.prompts_per_iteration} prompts x {args.group_size} images = {args.images_per_iteration} "
                         f"images ({plan.local_images} per process, {count(plan.num_processes, 'process')}), "
                         f"{method.sampling_words(args)}",
            "training": f"{count(plan.levels_per_image, method.trained_on)} per image, "
                        f"{count(plan.optimizer_steps, 'optimizer step')} per iteration, "
                        f"{iterations * plan.optimizer_steps} in all",
            "sampling batch": self.sampling_batch,
            "precision": precision_words(accelerator.mixed_precision, denoiser_of(self.pipeline).dtype),
            "device": device_words(accelerator.device),
            "trainable": f"{sum(p.numel() for p in self.policy.trainable_parameters()):,} LoRA parameters (rank "
                         f"{self.policy.lora_config.r}, alpha {self.policy.lora_config.lora_alpha:g}) in "
                         f"{count(len(self.policy.trainable_parameters()) // 2, 'module')}",
            "iterations": f"{iterations} (from {self.global_step} to max_steps {args.max_steps})",
            "counting": "max_steps and the *_steps intervals count iterations; lr_warmup_steps, the EMA and the "
                        "old-policy decay count optimizer steps",
            "rewards": ", ".join(f"{name} x {weight:g}" for name, weight in zip(self.rewards.names, self.rewards.weights)),
            "output_dir": os.path.abspath(args.output_dir),
            "LoRA file": self._lora_file_words(),
            "trackers": args.report_to if args.report_to != "none" else "none (metrics.jsonl only)",
        })

    # ------------------------------------------------------------------ images and judges

    @property
    def validation_prompts(self) -> List[str]:
        """The prompts of the sample grids and the card (`RunImages.validation_prompts`)."""
        return self.images.validation_prompts()

    @property
    def published_weights(self) -> str:
        """What the run publishes (LoRA file, checkpoint LoRA, card, evaluation): `"ema"` unless
        `save_ema_weights=False`, then `"trained"`."""
        return self.images.published_weights

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], weights: str = "ema",
                 num_steps: Optional[int] = None, guidance_scale: float = 1.0,
                 scheduler: Optional["SchedulerMixin"] = None,
                 conditioning: Optional[Sequence[Dict[str, object]]] = None) -> torch.Tensor:
        """One image per (prompt, seed) from the pipeline's own call, with chosen weights (`diffusers_nft.generation`:
        the noise of seed `s` is `torch.Generator().manual_seed(s)`'s, as in the card's snippet).

        Args:
            prompts: Prompts, one per image.
            seeds: Seeds of the starting noise, one per image.
            weights: `"ema"`, `"trained"`, `"old"` or `"base"` (`policy.WEIGHTS`).
            num_steps: Steps; `eval_num_steps` by default.
            guidance_scale: CFG scale; 1.0 is CFG-free.
            scheduler: A diffusers scheduler to sample with instead of the pipeline's own.
            conditioning: For image-conditioned pipelines, each image's call arguments (`{"image": PIL image}`).

        Returns:
            Images `(N, 3, H, W)` (videos `(N, F, 3, H, W)`) in [0, 1] on the CPU.
        """
        return self.images.generate(prompts, seeds, weights, num_steps, guidance_scale, scheduler, conditioning)

    @torch.no_grad()
    def evaluate(self) -> Dict[str, float]:
        """The judges (`eval_reward_funcs`, else the training rewards) on `eval_dataset`, never trained on: one
        image per prompt (prompt `i` with seed `i`), the published weights, the objective's evaluation CFG (none for
        NFT), `eval_num_steps` steps.
        Returns `eval/<judge>/mean` values."""
        if self.eval_dataset is None:
            raise ValueError("evaluate() needs prompts: pass eval_dataset to NFTTrainer.")
        images, prompts, metadata = self.images.judged(self.eval_dataset)
        scores = (self.eval_rewards or self.rewards)(images.to(self.accelerator.device), prompts, metadata)
        return {eval_key(name): values.double().mean().item() for name, values in scores.items()}

    def log_validation(self) -> Optional[str]:
        """Save (and log to the trackers) a fixed-seed grid of the published weights on the validation prompts."""
        weights = self.published_weights
        prompts, values, drawn = self.images.gallery(range(self.args.num_validation_images), [weights])
        return self.run_log.grid(drawn[weights], prompts, self.global_step, scale=max(1, 256 // self.args.resolution),
                                 caption=f"iteration {self.global_step}, {weights} weights, no CFG",
                                 sources=shown_sources(values))

    # ------------------------------------------------------------------ what the run writes

    def save_lora(self, output_dir: str) -> str:
        """Write `pytorch_lora_weights.safetensors` (the published weights) with its LoRA metadata, loadable with
        `pipe.load_lora_weights(output_dir, weight_name=...)`. Every process calls it."""
        self.accelerator.wait_for_everyone()
        return self.publisher.save_lora(output_dir, self.policy.state_dict(self.published_weights))  # a gather

    def save_model(self, output_dir: Optional[str] = None) -> str:
        """TRL's name: write the LoRA (`save_lora`) to `output_dir` (the run's, by default)."""
        return self.save_lora(output_dir or self.args.output_dir)

    def create_model_card(self, repo_id: Optional[str] = None, folder: Optional[str] = None,
                          evaluation: Optional[str] = None) -> Optional[str]:
        """Write `README.md` (the model card), the before/after grid, the widget images and the reward curve. Every
        process must call it (they generate together); the main one writes and gets the card's path.

        Args:
            repo_id: The Hub repo the card is for; default: `hub_model_id`, else the name of `output_dir`.
            folder: Where to write; `output_dir` by default.
            evaluation: A markdown table of results to show; default: `output_dir/results.md` when there is one.
        """
        seeds = list(range(min(self.args.num_validation_images, 4)))
        prompts, values, drawn = self.images.gallery(seeds, ["base", self.published_weights])
        caption = (f"{self.objective_class.short}: {self.published_weights} weights; both: the pipeline's own "
                   f"{self.args.eval_num_steps}-step call, {cfg_words(self.images.guidance_scale)}, the seeds above")
        return self.publisher.write_card(folder or self.args.output_dir, self._card_inputs(repo_id, evaluation),
                                         prompts, drawn["base"], drawn[self.published_weights], seeds=seeds,
                                         scale=max(1, 256 // self.args.resolution), caption=caption,
                                         conditioning=values)

    def _card_inputs(self, repo_id: Optional[str], evaluation: Optional[str]) -> CardInputs:
        args, results = self.args, os.path.join(self.args.output_dir, "results.md")
        if evaluation is None and os.path.isfile(results):
            with open(results) as f:
                evaluation = f.read()
        return CardInputs(
            repo_id=self._repo_id(repo_id), pipeline_class=type(self.pipeline).__name__,
            base_model=hub_base_model(getattr(self.pipeline, "name_or_path", None), args.base_model_id),
            rewards=list(zip(self.rewards.names, self.rewards.weights)), history=self.history,
            hyperparameters=card_hyperparameters(args, self.policy.lora_config, self.accelerator.mixed_precision,
                                                 self.objective_class.card_settings),
            call_kwargs=self.images.call_kwargs(), license=args.license, evaluation=evaluation,
            lora_layout=self.family.lora_layout(), method=self.objective_class, base_loader=self.card_base_loader,
        )

    def _repo_id(self, repo_id: Optional[str]) -> str:
        return repo_id or self.args.hub_model_id or os.path.basename(os.path.normpath(self.args.output_dir))

    def push_to_hub(self, repo_id: Optional[str] = None, token: Optional[str] = None, private: Optional[bool] = None,
                    api: Optional["HfApi"] = None, write_card: bool = True) -> Optional[str]:
        """Save the LoRA and its model card into `output_dir`, then upload them with its results (no checkpoints,
        logs or step samples). Every process calls it. A failed upload leaves all of it in `output_dir`.

        Args:
            repo_id: Hub repo; default: `hub_model_id`, else the name of `output_dir`.
            token: Hub token, passed to every Hub call; default: `hub_token`, else the logged-in one.
            private: Create the repo private; default: `hub_private_repo`.
            api: A stand-in for `huggingface_hub.HfApi` (for tests and mirrors).
            write_card: False when `create_model_card` just wrote the card for this repo (the scripts do).

        Returns:
            The repo URL (None on processes other than the main one).

        Raises:
            RuntimeError: If the Hub refuses the card or the upload, or is not reached (the message says which).
        """
        args, repo_id = self.args, self._repo_id(repo_id)
        self.save_lora(args.output_dir)
        if write_card:
            self.create_model_card(repo_id)
        return self.publisher.upload(args.output_dir, repo_id, token=token or args.hub_token,
                                     private=args.hub_private_repo if private is None else private, api=api)

    def save_checkpoint(self) -> Optional[str]:
        """Write `output_dir/checkpoint-<step>` atomically with everything an exact resume needs, and the LoRA as
        the final file holds it, so that `load_lora_weights(checkpoint-N)` works. Every process calls it."""
        accelerator = self.accelerator
        state = {"global_step": self.global_step, "optimizer_step": self.optimizer_step,
                 "prompt_sampler": self.prompt_sampler.state_dict(), "reward_normalizer": self.rewards.state_dict(),
                 "history": self.history, "distributed_type": str(accelerator.distributed_type),
                 "num_processes": accelerator.num_processes, "config": self.args.to_dict(), "trains": self.trains}
        path = self.checkpointer.save(
            self.global_step, policy=self.policy, model=self.model, optimizer=self.optimizer,
            lr_scheduler=self.lr_scheduler, state=state,
            extra=lambda folder, lora: write_lora_file(type(self.pipeline), folder, lora[self.published_weights],
                                                       self.policy.lora_config, self.family.lora_layout()),
        )
        if path:
            logger.info("Saved checkpoint %s", path)
        return path

    def _load(self, path: str, parts: dict) -> None:
        """Restore the state of checkpoint `path`, whose parts the checkpointer read."""
        state = self.checkpointer.restore(path, parts, policy=self.policy, model=self.model, optimizer=self.optimizer,
                                          lr_scheduler=self.lr_scheduler)
        try:
            self.prompt_sampler.load_state_dict(state["prompt_sampler"])
            self.rewards.load_state_dict(state["reward_normalizer"])
            self.global_step, self.engine.optimizer_step = state["global_step"], state["optimizer_step"]
        except (KeyError, ValueError) as error:
            raise CheckpointError(f"Cannot resume from {path!r}: {error}") from error
        self.history = state["history"]
        self.run_log.resume(self.global_step)
        logger.info("Resumed from %s at iteration %d (optimizer step %d).", path, self.global_step, self.optimizer_step)
