"""What training runs on: the pipeline placed on the device in its precision, the LoRA policy, the optimizer and lr
schedule prepared by accelerate (DDP, FSDP2 or DeepSpeed wrap the transformer there), and how micro-batches step
them (`Engine`); and the reward check that fails a broken reward before any sampling."""

import math
from typing import Dict, Iterable

import torch
from accelerate.utils import DistributedType, set_seed
from diffusers.optimization import get_scheduler

from .conditioning import read_conditioning, reward_metadata
from .config import weight_dtype
from .data import row_metadata
from .lora_file import denoiser_of
from .metrics import monitor_key
from .policy import NFTPolicy


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss, gradient or LoRA weight."""


class Engine:
    """The trainable parts and how one iteration's micro-batches step them.

    Args:
        policy: The `NFTPolicy` that switches adapters on the transformer.
        model: The prepared transformer that backward and `accumulate` see.
        optimizer, lr_scheduler: They step it (accelerate-prepared).
        accelerator: The run's `Accelerator` (accumulation windows, clipping, the gather of the finite check).
        args: The `NFTConfig` (clip, EMA decay, `skip_nonfinite`, `monitors`).
    """

    def __init__(self, policy: NFTPolicy, model, optimizer, lr_scheduler, accelerator, args):
        self.policy, self.model, self.optimizer, self.lr_scheduler = policy, model, optimizer, lr_scheduler
        self.accelerator, self.args = accelerator, args
        self.optimizer_step = 0
        self.skipped_steps = 0  # optimizer steps dropped by skip_nonfinite

    def train_on(self, batches: Iterable[dict], objective, iteration: int) -> Dict[str, float]:
        """Backward through `objective` on each micro-batch, an optimizer step at the end of each accumulation window,
        an EMA update where the objective says (`Objective.ema_decay_after`); the mean of the objective's metrics,
        the gradient norm and its monitors."""
        accelerator, totals, micro_steps, grad_norm, finite = self.accelerator, {}, 0, float("nan"), True
        self.model.train()
        for batch in batches:
            with accelerator.accumulate(self.model):
                # the velocity monitors on the first micro-step: one reference forward per iteration at most
                out = objective(**batch, monitor=self.args.monitors and micro_steps == 0)
                accelerator.backward(out.loss)
                finite &= bool(torch.isfinite(out.loss.detach()))
                update = True
                if accelerator.sync_gradients:  # under DeepSpeed the engine clipped already; this reads the norm
                    grad_norm, update = self._end_window(finite, iteration)
                    finite = True
                if update:
                    self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                self.optimizer_step += 1
            decay = objective.ema_decay_after(micro_steps, self.optimizer_step, accelerator.sync_gradients,
                                              self.args.ema_decay)
            if decay is not None:
                self.policy.update_ema(decay)
            for key, value in objective.metrics(out).items():
                totals[key] = totals.get(key, 0.0) + value
            micro_steps += 1
        self.model.eval()  # sampling and generation run as the pipeline does (dropout off, MoE routing at inference)
        metrics = {k: v / micro_steps for k, v in totals.items()}
        metrics.update(grad_norm=grad_norm, skipped_steps=self.skipped_steps)
        metrics.update({monitor_key(k): v for k, v in objective.monitors.items()})
        return metrics

    def _end_window(self, loss_finite: bool, iteration: int):
        """Clip at the end of an accumulation window; `(grad_norm, whether to step)`.

        A non-finite loss or gradient norm on any process stops the run (`NonFiniteError`), or with
        `skip_nonfinite` drops this window's gradients. Under fp16 the gradient scaler skips overflowing steps itself.
        """
        accelerator = self.accelerator
        norm = accelerator.clip_grad_norm_(self.policy.trainable_parameters(), self.args.max_grad_norm)
        grad_norm = float("nan") if norm is None else float(norm)
        grads_checked = norm is not None and getattr(accelerator, "scaler", None) is None
        ok = loss_finite and (not grads_checked or math.isfinite(grad_norm))
        if bool(accelerator.gather(torch.tensor([float(ok)], device=accelerator.device)).min() > 0):
            return grad_norm, True
        if not self.args.skip_nonfinite:
            raise NonFiniteError(
                f"Iteration {iteration + 1}, optimizer step {self.optimizer_step + 1}: the loss or the gradient norm "
                f"({grad_norm}) is not finite. Nothing was saved from this step. Lower learning_rate, check the "
                "rewards, or pass --skip_nonfinite to skip such steps."
            )
        self.skipped_steps += 1
        return grad_norm, False


def use_tf32(allow: bool) -> None:
    """TF32 matmuls and convolutions on CUDA when `allow` (`NFTConfig.allow_tf32`, on by default); else as they are."""
    if allow and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def place_pipeline(pipeline, family, accelerator, args) -> None:
    """The frozen base in the low precision on the device; the LoRA stays float32 (`NFTPolicy`) under accelerate's
    autocast, and the VAE decodes in float32 unless `upcast_vae` is off (the release)."""
    use_tf32(args.allow_tf32)
    dtype = weight_dtype(accelerator.mixed_precision)
    pipeline.to(accelerator.device)
    if denoiser_of(pipeline).dtype != dtype:
        pipeline.to(dtype=dtype)
    if args.upcast_vae and getattr(pipeline, "vae", None) is not None:
        pipeline.vae.to(dtype=torch.float32)
    if args.offload_text_encoders:
        for encoder in family.text_encoders:
            encoder.to("cpu")
    pipeline.set_progress_bar_config(disable=True)
    family.denoiser.eval()  # a model built from a config starts in train mode; sampling runs in eval mode


def uses_fused_adamw(args, accelerator) -> bool:
    """`fused_adamw`, or by default: on CUDA devices, where the fused kernel exists and is fastest, except under
    DeepSpeed, whose engine steps the optimizer on its own flat partitions."""
    if args.fused_adamw is not None:
        return args.fused_adamw
    return accelerator.device.type == "cuda" and accelerator.distributed_type != DistributedType.DEEPSPEED


def build_engine(family, peft_config, accelerator, args, plan) -> Engine:
    """The LoRA policy on the family's denoiser, AdamW and the lr schedule, through `accelerator.prepare`."""
    num_processes = accelerator.num_processes
    transformer = family.denoiser
    set_seed(args.seed)  # the LoRA init draws from the global generator
    policy = NFTPolicy(transformer, peft_config)
    if args.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=args.learning_rate,
                                  betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.weight_decay,
                                  eps=args.adam_epsilon, fused=uses_fused_adamw(args, accelerator) or None)
    lr_scheduler = get_scheduler(  # accelerate steps a prepared scheduler once per process
        args.lr_scheduler_type, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps * num_processes,
        num_training_steps=args.max_steps * plan.optimizer_steps * num_processes,
    )
    model, optimizer, lr_scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)
    policy.bind()  # FSDP2 replaced the parameters with sharded ones
    # Forward passes go through the prepared (and optionally compiled) module; the policy switches adapters on the
    # underlying transformer, which compiled graphs guard on.
    family.model = torch.compile(model) if args.torch_compile else model
    return Engine(policy, model, optimizer, lr_scheduler, accelerator, args)


def probe_rewards(scorer, eval_rewards, dataset, family, resolution: int, device, columns=None) -> None:
    """Score two blank images (with the first rows' metadata and sources) so that a broken reward (or judge)
    fails before any sampling."""
    rows = dataset.select([0, min(1, len(dataset) - 1)])
    frames = family.video_frames()
    images = torch.zeros(2, *([frames] if frames else []), 3, resolution, resolution)
    metadata = row_metadata(rows)
    if columns:
        sources = reward_metadata(read_conditioning(rows, columns, resolution))
        metadata = [{**m, **s} for m, s in zip(metadata, sources)]
    scorer.wait(scorer.submit(images, list(rows["prompt"]), metadata))
    if eval_rewards is not None:
        eval_rewards(images.to(device), list(rows["prompt"]), metadata)
