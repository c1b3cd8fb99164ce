"""`NFTTrainer`: the DiffusionNFT loop on accelerate (and Flow-GRPO's, with `objective="flow_grpo"`).

One iteration (`NFTTrainer.step`):
1. draw `prompts_per_iteration` prompts, encode each once;
2. sample `group_size` images per prompt as the objective asks (NFT: the old policy, CFG-free, keeping only the
   final latents; Flow-GRPO: the current policy's SDE with CFG, keeping the trajectory) (`collect.Collector`);
3. score the decoded images, gather rewards from every process and turn them into the objective's weights
   (NFT: optimality probabilities r; Flow-GRPO: group-normalised advantages);
4. train the LoRA on the objective's micro-batches (`objectives`);
5. soft-update the old policy toward the trained one.
"""

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from peft import LoraConfig
from tqdm.auto import tqdm

from .callbacks import CallbackList, TrainerControl, TrainerState
from .checkpoints import Checkpointer
from . import zero
from .checkpoints.folder import CheckpointError, check_output_dir, clean_incomplete
from .collect import SEED_STREAMS, Collector, seeded
from .config import NFTConfig, weight_dtype
from .data import PromptSampler, PromptSource, load_prompts, row_metadata
from .hub import LORA_WEIGHT_NAME, METHODS, UPLOAD_STAGING, create_model_card, publish_staged, stage_upload, upload_folder
from .interrupts import StopSignals, TrainingInterrupted
from .lora_file import write_lora_file
from .monitors import group_diversity, image_stats
from .metrics import TOTAL, eval_key, loss_key, monitor_key, reward_key, reward_stats, time_key
from .objectives import build_objective
from .pipelines import get_family, select_conditioning
from .plan import IterationPlan
from .policy import TRAINED, NFTPolicy, check_lora_targets, make_lora_config
from .rewards import RewardScorer, WeightedRewards
from .rollouts import Rollouts
from .sampling import is_flow_matching_scheduler
from .schedules import ema_decay, old_policy_decay
from .visualize import plot_reward_curve, save_grid

logger = get_logger(__name__)

_TRAINED_ON = {"nft": "noise levels", "flow_grpo": "recorded transitions"}  # what a micro-step trains, per objective



class NFTTrainer:
    """Fine-tune a flow-matching diffusers pipeline with DiffusionNFT, training LoRA adapters.

    Args:
        pipeline: A diffusers pipeline of a supported family (`StableDiffusion3Pipeline`, ...) whose scheduler is
            a flow-matching one.
        reward_funcs: A reward name (see `diffusers_nft.rewards.available_rewards()`), a callable
            `(images, prompts, metadata) -> floats`, or a list of them (weighted by `args.reward_weights`).
        args: The `NFTConfig`.
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
            Everything else (pipeline families, rewards, LoRA, checkpoints, logging, card) is shared.

    Example:
        ```py
        trainer = NFTTrainer(pipe, "jpeg_compressibility", NFTConfig(output_dir="out"), ["a cat", "a dog"])
        trainer.train()
        pipe.load_lora_weights("out", weight_name="pytorch_lora_weights.safetensors")
        ```
    """

    def __init__(
        self,
        pipeline,
        reward_funcs,
        args: Optional[NFTConfig] = None,
        train_dataset: PromptSource = None,
        eval_dataset: Optional[PromptSource] = None,
        peft_config: Optional[LoraConfig] = None,
        callbacks: Optional[Sequence] = None,
        eval_reward_funcs=None,
        objective: Optional[str] = None,
    ):
        # Everything that can be wrong with the inputs is checked before any model compute.
        self.args = args = _resolved_config(args, objective)
        self.callbacks = CallbackList(callbacks or [], trainer=self)
        self.pipeline, self.family = pipeline, _adapter(pipeline, args)
        self.max_sequence_length = args.max_sequence_length or self.family.default_max_sequence_length
        self.train_dataset, self.eval_dataset = _prompt_sets(train_dataset, eval_dataset)
        # The Accelerator comes first: it sets up the processes (on CPU too, with ACCELERATE_USE_CPU) that
        # everything below counts. It only reads the environment; no model is touched yet.
        self.accelerator = Accelerator(
            mixed_precision=args.mixed_precision,  # None: accelerate's own setting (launcher flag, config file)
            log_with=args.trackers(),
            project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=args.logging_dir),
        )
        self.family.check_accelerator(self.accelerator)
        self.rewards = self._weighted_rewards(reward_funcs, args.reward_weights, args.normalize_rewards)
        # judges never trained on; None: evaluate() scores with the training rewards
        self.eval_rewards = self._weighted_rewards(eval_reward_funcs) if eval_reward_funcs else None
        self.scorer = RewardScorer(self.rewards, args.reward_scoring, timeout=args.reward_timeout)
        check_output_dir(args.output_dir)
        self.checkpointer = Checkpointer(self.accelerator, args)
        # A corrupt or mismatched checkpoint fails now, not later; read once, applied at the end.
        resume_path, resume_parts = self.checkpointer.read(args.resume_from_checkpoint)
        transformer = self.family.denoiser
        if peft_config is None:
            peft_config = make_lora_config(transformer, default_targets=self.family.default_lora_targets)
        check_lora_targets(transformer, peft_config.target_modules)
        self.plan = IterationPlan.from_config(args, self.accelerator.num_processes)
        self.accelerator.gradient_accumulation_steps = self.plan.accumulation
        zero.prepare(self.accelerator, args, self.plan.accumulation)
        self._probe_rewards()
        self._place_pipeline()
        self._build_training(transformer, peft_config)
        self._init_loop()
        if resume_path:
            self._load(resume_path, resume_parts)

    def _init_loop(self) -> None:
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
                                   latent_shape=self.latent_shape, max_sequence_length=self.max_sequence_length)
        self.prompt_sampler = PromptSampler(len(self.train_dataset), args.seed)
        self.state = TrainerState(max_steps=args.max_steps)  # global_step and log_history live here
        self.control = TrainerControl()
        self.optimizer_step = 0
        self.skipped_steps = 0  # optimizer steps dropped by skip_nonfinite
        self._last_plot = -math.inf

    def _place_pipeline(self) -> None:
        """The frozen base in the low precision on the device; the LoRA stays float32 (NFTPolicy) under accelerate's
        autocast, and the VAE decodes in float32 unless upcast_vae is off (the release)."""
        args, pipeline = self.args, self.pipeline
        device = self.accelerator.device
        if args.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        dtype = weight_dtype(self.accelerator.mixed_precision)
        pipeline.to(device)
        if pipeline.transformer.dtype != dtype:
            pipeline.to(dtype=dtype)
        if args.upcast_vae and getattr(pipeline, "vae", None) is not None:
            pipeline.vae.to(dtype=torch.float32)
        if args.offload_text_encoders:
            for encoder in self.family.text_encoders:
                encoder.to("cpu")
        pipeline.set_progress_bar_config(disable=True)

    def _build_training(self, transformer, peft_config: LoraConfig) -> None:
        """The LoRA policy, optimizer and lr schedule through `accelerator.prepare`."""
        args, num_processes = self.args, self.accelerator.num_processes
        set_seed(args.seed)  # the LoRA init draws from the global generator
        self.policy = NFTPolicy(transformer, peft_config)
        if args.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        optimizer = torch.optim.AdamW(
            self.policy.trainable_parameters(),
            lr=args.learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            weight_decay=args.weight_decay,
            eps=args.adam_epsilon,
        )
        lr_scheduler = get_scheduler(
            args.lr_scheduler_type,
            optimizer=optimizer,
            num_warmup_steps=args.lr_warmup_steps * num_processes,
            num_training_steps=args.max_steps * self.plan.optimizer_steps * num_processes,
        )
        self.model, self.optimizer, self.lr_scheduler = self.accelerator.prepare(transformer, optimizer, lr_scheduler)
        self.policy.bind()  # FSDP2 replaced the parameters with sharded ones
        # Forward passes go through the prepared (and optionally compiled) module; the policy switches adapters
        # on the underlying transformer, which compiled graphs guard on.
        self.family.model = torch.compile(self.model) if args.torch_compile else self.model

    # ------------------------------------------------------------------ public API

    @property
    def global_step(self) -> int:
        """NFT iterations done (TRL's `state.global_step`; an iteration holds several optimizer steps)."""
        return self.state.global_step

    @global_step.setter
    def global_step(self, value: int) -> None:
        self.state.global_step = value

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
        args, accelerator = self.args, self.accelerator
        if resume_from_checkpoint:
            path, parts = self.checkpointer.read(resume_from_checkpoint)
            if path:
                self._load(path, parts)
        if accelerator.is_main_process:
            clean_incomplete(args.output_dir)
            accelerator.init_trackers("diffusers-nft", config=_tracker_config(args))
        logger.info(self.describe())
        if self.global_step == 0 and self._validation_prompts():
            self.log_validation()
        bar = tqdm(
            total=args.max_steps, initial=self.global_step, desc=METHODS[args.objective]["short"], disable=not accelerator.is_local_main_process
        )
        try:
            self.callbacks.call("on_train_begin", args, self.state, self.control)
            with StopSignals() as stop:
                while self.global_step < args.max_steps and not self.control.should_training_stop:
                    metrics = self.step()
                    bar.update(1)
                    bar.set_postfix(reward=f"{metrics[reward_key(TOTAL)]:.4g}", loss=f"{metrics[loss_key('policy')]:.3g}")
                    self._after_step(metrics)
                    self._stop_if_asked(stop)
            bar.close()
            self.save_lora(args.output_dir)
        finally:
            self.scorer.close()  # the reward worker (a process with reward_scoring="process") never outlives train()
        accelerator.wait_for_everyone()
        accelerator.end_training()
        self.callbacks.call("on_train_end", args, self.state, self.control)
        logger.info(self._artifacts())
        return self.history

    def save_model(self, output_dir: Optional[str] = None) -> str:
        """TRL's name: write the LoRA (`save_lora`) to `output_dir` (the run's, by default)."""
        return self.save_lora(output_dir or self.args.output_dir)

    def _artifacts(self) -> str:
        """The end-of-training summary: what `output_dir` holds, and how to look at the curves."""
        out = self.args.output_dir
        names = sorted(os.listdir(out)) if os.path.isdir(out) else []
        checkpoints = [n for n in names if n.startswith("checkpoint-")]
        lines = [f"Done after {self.global_step} iterations. {os.path.abspath(out)} holds:"]
        lines += [f"  {n}" for n in names if not n.startswith(("checkpoint-", "."))]
        if checkpoints:
            lines.append(f"  {len(checkpoints)} checkpoints: {', '.join(checkpoints)}")
        trackers = self.args.trackers()
        if trackers == "all" or "tensorboard" in (trackers or []):
            lines.append(f"Curves: tensorboard --logdir {self.args.logging_dir}")
        return "\n".join(lines)

    def describe(self) -> str:
        """The start-up block: what `train()` will run, and where it writes and logs."""
        args = self.args
        model = getattr(self.pipeline, "name_or_path", None) or type(self.pipeline.transformer).__name__
        iterations = args.max_steps - self.global_step
        rows = {
            "model": f"{model} ({type(self.pipeline).__name__}, {type(self.family).__name__})",
            "iteration": f"{args.prompts_per_iteration} prompts x {args.group_size} images = {args.images_per_iteration} "
                         f"images ({self.plan.local_images} per process, {_count(self.plan.num_processes, 'process')}), "
                         f"{self._sampling_words()}",
            "training": f"{self.plan.levels_per_image} {_TRAINED_ON[args.objective]} per image, {self.plan.optimizer_steps} "
                        f"optimizer steps per iteration, {iterations * self.plan.optimizer_steps} in all",
            "iterations": f"{iterations} (from {self.global_step} to max_steps {args.max_steps})",
            "rewards": ", ".join(f"{name} x {weight:g}" for name, weight in zip(self.rewards.names, self.rewards.weights)),
            "output_dir": os.path.abspath(args.output_dir),
            "trackers": args.report_to if args.report_to != "none" else "none (metrics.jsonl only)",
        }
        return f"Training {METHODS[args.objective]['name']}:\n" + "\n".join(f"  {key:<11} {value}" for key, value in rows.items())

    def _sampling_words(self) -> str:
        """How rollouts sample, in words: `"10 dpm_solver steps, no CFG"`, `"10 SDE steps (a = 0.7), CFG 4.5"`."""
        args, objective = self.args, self.objective
        if args.objective == "flow_grpo":
            steps = f"{args.num_sampling_steps} SDE steps (a = {args.grpo_noise_level:g})"
        else:
            steps = f"{args.num_sampling_steps} {args.sampler} steps"
        cfg = f"CFG {objective.guidance_scale:g}" if objective.guidance_scale > 1 else "no CFG"
        return f"{steps}, {cfg}"

    def _after_step(self, metrics: Dict[str, float]) -> None:
        """Evaluate, log, checkpoint and draw the validation grid when their steps come; tell the callbacks."""
        args, step, hooks = self.args, self.global_step, self.callbacks
        last = step == args.max_steps
        if self.eval_dataset is not None and (step % (args.eval_steps or args.validation_steps) == 0 or last):
            results = self.evaluate()
            metrics.update(results)  # into this iteration's row of metrics.jsonl and the trackers
            hooks.call("on_evaluate", args, self.state, self.control, metrics=results)
        if step % args.logging_steps == 0 or last:
            self._log(metrics)
            hooks.call("on_log", args, self.state, self.control, logs=metrics)
        if step % args.save_steps == 0:
            hooks.call("on_save", args, self.state, self.control, checkpoint=self.save_checkpoint())
        if step % args.validation_steps == 0 and self._validation_prompts():
            self.log_validation()
        hooks.call("on_step_end", args, self.state, self.control, metrics=metrics)

    @torch.no_grad()
    def evaluate(self) -> Dict[str, float]:
        """The judges (`eval_reward_funcs`, else the training rewards) on `eval_dataset`, never trained on: one
        image per prompt with a fixed seed, the saved (EMA) weights, CFG-free, `eval_num_steps` Euler steps.
        Returns `eval/<judge>/mean` values."""
        if self.eval_dataset is None:
            raise ValueError("evaluate() needs prompts: pass eval_dataset to NFTTrainer.")
        prompts, metadata = list(self.eval_dataset["prompt"]), row_metadata(self.eval_dataset)
        images = self.generate(prompts, list(range(len(prompts))), policy=self._saved_adapter)
        judges = self.eval_rewards or self.rewards
        scores = judges(images.to(self.accelerator.device), prompts, metadata)
        return {eval_key(name): values.double().mean().item() for name, values in scores.items()}

    def _stop_if_asked(self, stop: StopSignals) -> None:
        """After a SIGTERM/SIGINT on any process: a checkpoint if `save_on_interrupt`, then `TrainingInterrupted`."""
        accelerator = self.accelerator
        received = torch.tensor([stop.received or 0], device=accelerator.device)
        signum = int(accelerator.gather(received).max())  # every process stops together, or none does
        if not signum:
            return
        if self.args.save_on_interrupt and self.global_step % self.args.save_steps:
            self.save_checkpoint()
        accelerator.end_training()
        raise TrainingInterrupted(signum)

    def step(self) -> Dict[str, float]:
        """One NFT iteration: sample, reward, train, update the old policy. Returns its metrics."""
        args, accelerator = self.args, self.accelerator
        iteration = self.global_step
        timings = {"sampling": 0.0, "reward": 0.0}
        prompt_index = self.prompt_sampler.next(args.prompts_per_iteration)
        rollouts = self.collector.collect(prompt_index, iteration=iteration, objective=self.objective, timings=timings)

        start = time.perf_counter()
        scores = {k: accelerator.gather(v.to(accelerator.device)).cpu() for k, v in rollouts.rewards.items()}
        scores[TOTAL] = self.rewards.combine(scores)
        all_groups = accelerator.gather(rollouts.group_ids.to(accelerator.device)).cpu()
        weights, weight_metrics = self.objective.weights(scores[TOTAL], all_groups)
        weights = weights[self.plan.images_of(accelerator.process_index)]
        timings["reward"] += time.perf_counter() - start

        start = time.perf_counter()
        train_metrics = self._train_on(rollouts, weights, iteration)
        monitors = self._image_monitors(rollouts, all_groups) if args.monitors else {}
        deviation = self.policy.deviation()
        eta = old_policy_decay(self.optimizer_step, args.old_policy_decay, args.old_policy_decay_constant)
        self.policy.update_old(eta)
        timings["training"] = time.perf_counter() - start
        self.global_step += 1

        metrics = {"step": self.global_step, "optimizer_step": self.optimizer_step}
        for name, values in scores.items():
            metrics.update(reward_stats(name, values))
        metrics.update(
            {
                **weight_metrics,
                "sample_x0_norm": rollouts.latents.flatten(1).norm(dim=1).mean().item(),
                "old_theta_deviation": deviation,
                "old_policy_decay": eta,
                "lr": self.lr_scheduler.get_last_lr()[0],
                **train_metrics,
                **monitors,
            }
        )
        total_time = sum(timings.values())
        metrics.update({time_key(k): v for k, v in timings.items()})
        metrics[time_key("iteration")] = total_time
        metrics["images_per_second"] = args.images_per_iteration / max(total_time, 1e-9)
        self.history.append(metrics)
        return metrics

    def _image_monitors(self, rollouts: Rollouts, all_groups: torch.Tensor) -> Dict[str, float]:
        """Brightness, saturation and within-group diversity of the iteration's images (all processes')."""
        images = self.accelerator.gather(rollouts.thumbnails.to(self.accelerator.device)).cpu()
        stats = {**image_stats(images), "diversity": group_diversity(images, all_groups)}
        return {monitor_key(k): v for k, v in stats.items()}

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        policy: str = "ema",
        num_steps: Optional[int] = None,
        sampler: str = "euler",
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """Generate one image per (prompt, seed) pair with a chosen policy, for evaluation.

        Args:
            prompts: Prompts, one per image.
            seeds: Seeds of the starting noise, one per image.
            policy: `"ema"`, `"default"` (the trained weights), `"old"` or `"reference"` (the base model).
            num_steps: Solver steps; `args.eval_num_steps` by default (40, the release's evaluation).
            sampler: Solver name.
            guidance_scale: CFG scale; 1.0 is CFG-free.

        Returns:
            Images `(N, 3, H, W)` in [0, 1] on the CPU.
        """
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds.")
        sigmas = self.family.sampling_sigmas(num_steps or self.args.eval_num_steps, self.latent_shape)
        cond = self.collector.encode(list(prompts))
        noise = torch.stack([torch.randn(self.latent_shape, generator=seeded(s, SEED_STREAMS["eval"])) for s in seeds])
        images = []
        with self.policy.ema_weights(policy == "ema"), self.policy.using(TRAINED if policy == "ema" else policy):
            for start in range(0, len(prompts), self.args.sample_batch_size):
                index = torch.arange(start, min(start + self.args.sample_batch_size, len(prompts)))
                latents = self.collector.rollout(select_conditioning(cond, index), noise[index], sampler=sampler,
                                                 sigmas=sigmas, guidance_scale=guidance_scale)
                images.append(self.family.decode(latents).cpu())
        return torch.cat(images)

    def log_validation(self) -> Optional[str]:
        """Save (and log to the trackers) a fixed-seed grid of the EMA policy on the validation prompts."""
        prompts = self._validation_prompts()
        n = self.args.num_validation_images
        images = self.generate([p for p in prompts for _ in range(n)], list(range(n)) * len(prompts))
        if not self.accelerator.is_main_process:
            return None
        folder = os.path.join(self.args.output_dir, "samples")
        os.makedirs(folder, exist_ok=True)
        scale = max(1, 256 // self.args.resolution)
        path = save_grid(images, os.path.join(folder, f"step_{self.global_step:06d}"), rows=len(prompts),
                         labels=prompts, scale=scale)
        logger.info("Saved sample grid %s", path)
        stills = images[:, images.shape[1] // 2] if images.dim() == 5 else images  # videos: their middle frames
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.add_images("validation", stills.numpy(), self.global_step, dataformats="NCHW")
            elif tracker.name == "wandb":
                import wandb

                tracker.log({"validation": [wandb.Image(path)]}, step=self.global_step)
        return path

    def save_lora(self, output_dir: str) -> str:
        """Write `pytorch_lora_weights.safetensors` (EMA weights unless `save_ema_weights=False`) with its LoRA
        metadata, loadable with `pipe.load_lora_weights(output_dir, weight_name=...)`."""
        self.accelerator.wait_for_everyone()
        weights = self.policy.state_dict(self._saved_adapter)  # every process: a gather
        bad = [name for name, tensor in weights.items() if not torch.isfinite(tensor).all()]
        if bad:
            raise NonFiniteError(f"{len(bad)} of {len(weights)} LoRA tensors are not finite (e.g. {bad[0]}); the LoRA "
                                 f"was not saved to {output_dir}.")
        path = os.path.join(output_dir, LORA_WEIGHT_NAME)
        if self.accelerator.is_main_process:  # written beside, then renamed: a crash never leaves half a file
            os.makedirs(output_dir, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=".tmp-lora-", dir=output_dir)
            for written in write_lora_file(type(self.pipeline), staging, weights, self.policy.lora_config,
                                           self.family.lora_layout()):
                os.replace(written, os.path.join(output_dir, os.path.basename(written)))
                logger.info("Saved LoRA %s", os.path.join(output_dir, os.path.basename(written)))
            shutil.rmtree(staging, ignore_errors=True)
        return path

    def create_model_card(
        self, repo_id: Optional[str] = None, folder: Optional[str] = None, evaluation: Optional[str] = None
    ) -> Optional[str]:
        """Write `README.md` (the model card), the before/after grid, widget images and the reward curve
        (`hub.create_model_card`).

        Every process must call it (they sample together); the main one writes and gets the card's path.

        Args:
            repo_id: The Hub repo the card is for; default: `hub_model_id`, else the name of `output_dir`.
            folder: Where to write; `output_dir` by default.
            evaluation: A markdown table of results to show; default: `output_dir/results.md` when there is one.
        """
        return create_model_card(self, repo_id=self._repo_id(repo_id), folder=folder or self.args.output_dir,
                                 evaluation=evaluation)

    def evaluation_call_kwargs(self) -> Dict[str, object]:
        """The pipeline-call arguments that generate as the evaluation does: CFG-free, `eval_num_steps` Euler steps
        at the trained resolution and text length (SD3 attends over the padding, so the length matters)."""
        args = self.args
        return {"height": args.resolution, "width": args.resolution, "num_inference_steps": args.eval_num_steps,
                "max_sequence_length": self.max_sequence_length, **self.family.cfg_free_call_kwargs()}

    @property
    def _saved_adapter(self) -> str:
        """The weights the run publishes (LoRA file, checkpoint LoRA, card, evaluation): the EMA unless
        `save_ema_weights=False`."""
        return "ema" if self.args.save_ema_weights else TRAINED

    def _repo_id(self, repo_id: Optional[str]) -> str:
        return repo_id or self.args.hub_model_id or os.path.basename(os.path.normpath(self.args.output_dir))

    def push_to_hub(
        self, repo_id: Optional[str] = None, token: Optional[str] = None, private: Optional[bool] = None, api=None
    ) -> Optional[str]:
        """Save the LoRA and its model card, then upload them with `output_dir`'s results (no checkpoints, logs or
        step samples). Everything is staged in a temporary folder first: the card reaches `output_dir` only once
        the upload succeeded.

        Args:
            repo_id: Hub repo; default: `hub_model_id`, else the name of `output_dir`.
            token: Hub token, passed to every Hub call; default: `hub_token`, else the logged-in one.
            private: Create the repo private; default: `hub_private_repo`.
            api: A stand-in for `huggingface_hub.HfApi` (for tests and mirrors).

        Returns:
            The repo URL (None on processes other than the main one).

        Raises:
            RuntimeError: If the upload fails; `output_dir` stays exactly as it was.
        """
        output_dir = self.args.output_dir
        repo_id = self._repo_id(repo_id)
        token = token or self.args.hub_token
        private = self.args.hub_private_repo if private is None else private
        staging = os.path.join(output_dir, UPLOAD_STAGING)  # the same path on every process
        try:
            if self.accelerator.is_main_process:
                stage_upload(output_dir, staging)
            self.save_lora(staging)
            self.create_model_card(repo_id, folder=staging)
            if not self.accelerator.is_main_process:
                return None
            url = upload_folder(staging, repo_id, token=token, private=private, api=api)
            publish_staged(staging, output_dir)
            logger.info("Uploaded the LoRA, its model card and images to %s", url)
            return url
        finally:
            if self.accelerator.is_main_process:
                shutil.rmtree(staging, ignore_errors=True)

    def save_checkpoint(self) -> Optional[str]:
        """Write `output_dir/checkpoint-<step>` atomically with everything an exact resume needs, and the LoRA as
        the final file holds it, so that `load_lora_weights(checkpoint-N)` works. Every process calls it."""
        args, accelerator = self.args, self.accelerator
        state = {
            "global_step": self.global_step,
            "optimizer_step": self.optimizer_step,
            "prompt_sampler": self.prompt_sampler.state_dict(),
            "reward_normalizer": self.rewards.state_dict(),
            "history": self.history,
            "distributed_type": str(accelerator.distributed_type),
            "num_processes": accelerator.num_processes,
            "config": args.to_dict(),
        }
        path = self.checkpointer.save(
            self.global_step, policy=self.policy, model=self.model, optimizer=self.optimizer,
            lr_scheduler=self.lr_scheduler, state=state,
            extra=lambda folder, lora: write_lora_file(type(self.pipeline), folder, lora[self._saved_adapter],
                                                       self.policy.lora_config, self.family.lora_layout()),
        )
        if path:
            logger.info("Saved checkpoint %s", path)
        return path

    # ------------------------------------------------------------------ internals

    def _load(self, path: str, parts: dict) -> None:
        """Restore the state of checkpoint `path`, whose parts the checkpointer read."""
        state = self.checkpointer.restore(path, parts, policy=self.policy, model=self.model, optimizer=self.optimizer,
                                          lr_scheduler=self.lr_scheduler)
        try:
            self.prompt_sampler.load_state_dict(state["prompt_sampler"])
            self.rewards.load_state_dict(state["reward_normalizer"])
            self.global_step, self.optimizer_step = state["global_step"], state["optimizer_step"]
        except (KeyError, ValueError) as error:
            raise CheckpointError(f"Cannot resume from {path!r}: {error}") from error
        self.history = state["history"]
        if self.accelerator.is_main_process:
            _truncate_metrics(os.path.join(self.args.output_dir, "metrics.jsonl"), self.global_step)
            logger.info("Resumed from %s at iteration %d (optimizer step %d).", path, self.global_step, self.optimizer_step)

    def _weighted_rewards(self, funcs, weights=None, normalize: bool = False) -> WeightedRewards:
        args = self.args
        return WeightedRewards(funcs, weights, normalize, device=args.reward_device or self.accelerator.device,
                               dtype=args.reward_dtype, batch_size=args.reward_batch_size,
                               video_frames=args.reward_frames)

    def _probe_rewards(self) -> None:
        """Score two blank images so that a broken reward (or judge) fails before any sampling."""
        rows = self.train_dataset.select([0, min(1, len(self.train_dataset) - 1)])
        frames = self.family.video_frames()
        images = torch.zeros(2, *([frames] if frames else []), 3, self.args.resolution, self.args.resolution)
        self.scorer.wait(self.scorer.submit(images, list(rows["prompt"]), row_metadata(rows)))
        if self.eval_rewards is not None:
            self.eval_rewards(images.to(self.accelerator.device), list(rows["prompt"]), row_metadata(rows))

    def _validation_prompts(self) -> List[str]:
        if self.args.validation_prompts:
            return list(self.args.validation_prompts)
        source = self.eval_dataset if self.eval_dataset is not None else self.train_dataset
        return list(source["prompt"][:4])

    def _train_on(self, rollouts: Rollouts, weights: torch.Tensor, iteration: int) -> Dict[str, float]:
        """Train on the objective's micro-batches of this iteration's rollouts; their mean metrics."""
        args, accelerator = self.args, self.accelerator
        generator = seeded(args.seed, SEED_STREAMS["train"], iteration, accelerator.process_index)
        batches = self.objective.micro_batches(rollouts, weights, batch_size=args.train_batch_size,
                                               levels=self.plan.levels_per_image, generator=generator)
        totals, count, grad_norm, window_finite = {}, 0, float("nan"), True
        params = self.policy.trainable_parameters()
        self.model.train()
        for batch in batches:
            with accelerator.accumulate(self.model):
                # the velocity monitors on the first micro-step: one reference forward per iteration at most
                out = self._micro_step(batch, monitor=args.monitors and count == 0)
                window_finite &= bool(torch.isfinite(out.loss.detach()))
                update = True
                if accelerator.sync_gradients:  # under DeepSpeed the engine clipped already; this reads the norm
                    grad_norm, update = self._end_window(params, window_finite)
                    window_finite = True
                if update:
                    self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                self.optimizer_step += 1
                self.policy.update_ema(ema_decay(self.optimizer_step, args.ema_decay))
            for key, value in self.objective.metrics(out).items():
                totals[key] = totals.get(key, 0.0) + value
            count += 1
        metrics = {k: v / count for k, v in totals.items()}
        metrics["grad_norm"] = grad_norm
        metrics["skipped_steps"] = self.skipped_steps
        metrics.update({monitor_key(k): v for k, v in self.objective.monitors.items()})
        return metrics

    def _micro_step(self, batch: dict, monitor: bool = False):
        """The objective's loss on one micro-batch, and its backward."""
        out = self.objective(**batch, monitor=monitor)
        self.accelerator.backward(out.loss)
        return out

    def _end_window(self, params, loss_finite: bool):
        """Clip at the end of an accumulation window; `(grad_norm, whether to step)`.

        A non-finite loss or gradient norm on any process stops the run (`NonFiniteError`), or with
        `skip_nonfinite` drops this window's gradients. Under fp16 the gradient scaler skips overflowing steps itself.
        """
        accelerator = self.accelerator
        norm = accelerator.clip_grad_norm_(params, self.args.max_grad_norm)
        grad_norm = _as_float(norm)
        grads_checked = norm is not None and getattr(accelerator, "scaler", None) is None
        ok = loss_finite and (not grads_checked or math.isfinite(grad_norm))
        ok = bool(accelerator.gather(torch.tensor([float(ok)], device=accelerator.device)).min() > 0)
        if ok:
            return grad_norm, True
        if not self.args.skip_nonfinite:
            raise NonFiniteError(
                f"Iteration {self.global_step + 1}, optimizer step {self.optimizer_step + 1}: the loss or the gradient "
                f"norm ({grad_norm}) is not finite. Nothing was saved from this step. Lower learning_rate, check the "
                "rewards, or pass --skip_nonfinite to skip such steps."
            )
        self.skipped_steps += 1
        return grad_norm, False

    def _log(self, metrics: Dict[str, float]) -> None:
        accelerator = self.accelerator
        accelerator.log({k: v for k, v in metrics.items() if k != "step"}, step=self.global_step)
        if accelerator.is_main_process:
            with open(os.path.join(self.args.output_dir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(metrics) + "\n")
            # Redrawn at most every 30 s (a plot costs ~0.1 s), and always at the last step.
            if time.monotonic() - self._last_plot >= 30 or self.global_step == self.args.max_steps:
                self._plot_reward_curve()

    def _plot_reward_curve(self) -> None:
        plot_reward_curve(self.history, os.path.join(self.args.output_dir, "reward_curve.png"))
        self._last_plot = time.monotonic()


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss, gradient or LoRA weight."""


def _truncate_metrics(path: str, step: int) -> None:
    """Drop the rows a run logged after the checkpoint it resumes from: they are logged again."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    with open(path + ".tmp", "w") as f:
        f.writelines(rows)
    os.replace(path + ".tmp", path)


def _count(n: int, noun: str) -> str:
    """`"1 process"`, `"2 processes"`."""
    return f"{n} {noun}{'' if n == 1 else 'es' if noun.endswith('s') else 's'}"


def _resolved_config(args: Optional[NFTConfig], objective: Optional[str]) -> NFTConfig:
    """The config (the default one when None), with `objective` when given, validated."""
    args = args if args is not None else NFTConfig()
    if objective is not None:
        args = dataclasses.replace(args, objective=objective)
    args.validate()
    return args


def _prompt_sets(train_dataset: PromptSource, eval_dataset: Optional[PromptSource]):
    if train_dataset is None:
        raise ValueError("train_dataset is required: a datasets.Dataset, a list of prompts or a prompt file.")
    return load_prompts(train_dataset), load_prompts(eval_dataset) if eval_dataset is not None else None


def _adapter(pipeline, args: NFTConfig):
    """The pipeline's family, once its scheduler and the resolution are known to suit it."""
    _check_flow_matching(pipeline)
    family = get_family(pipeline, args.family, distilled_guidance_scale=args.distilled_guidance_scale,
                                   num_frames=args.num_frames)
    family.check_resolution(args.resolution)
    return family


def _check_flow_matching(pipeline) -> None:
    if not is_flow_matching_scheduler(pipeline.scheduler):
        raise ValueError(
            f"The pipeline's scheduler is {type(pipeline.scheduler).__name__}, not a flow-matching scheduler. "
            "DiffusionNFT trains rectified-flow models (SD3/SD3.5, Flux, ...): use a pipeline whose scheduler "
            "is FlowMatchEulerDiscreteScheduler (or one with use_flow_sigmas=True, prediction_type='flow_prediction')."
        )


def _tracker_config(args: NFTConfig) -> dict:
    """Config values that every tracker accepts (no None, no lists)."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in args.to_dict().items()}


def _as_float(value) -> float:
    return float("nan") if value is None else float(value)


class FlowGRPOTrainer(NFTTrainer):
    """`NFTTrainer` with `objective="flow_grpo"`: Flow-GRPO (arXiv 2505.05470) on the same pipeline families, rewards, LoRA,
    checkpoints and card. The `grpo_*` settings of `NFTConfig` apply (SDE noise level 0.7, clip 1e-4, KL 0.04,
    CFG 4.5).

    Example:
        ```py
        trainer = FlowGRPOTrainer(pipe, "jpeg_compressibility", NFTConfig(output_dir="grpo"), ["a cat", "a dog"])
        trainer.train()
        ```
    """

    def __init__(self, pipeline, reward_funcs, args: Optional[NFTConfig] = None, train_dataset: PromptSource = None,
                 **kwargs):
        super().__init__(pipeline, reward_funcs, args, train_dataset, objective="flow_grpo", **kwargs)
