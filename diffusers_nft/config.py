"""`NFTConfig`: every setting of a DiffusionNFT run, with the defaults of the public SD3.5-Medium release."""

import importlib.util
import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar, List, Optional

import torch

from .advantages import ADV_MODES, STD_SCOPES
from .loss import WEIGHTINGS
from .rewards.scoring import SCORING_MODES
from .schedules import OLD_POLICY_DECAYS
from .solvers import SAMPLERS
from .timesteps import TRAIN_TIMESTEPS


_INF = math.inf
# Float settings: (low, low included), (high, high included), and a hint for the message.
FLOAT_RANGES = {
    "learning_rate": ((0, False), (1, True), "The release uses 3e-4."),
    "adam_beta1": ((0, True), (1, False), ""),
    "adam_beta2": ((0, True), (1, False), ""),
    "adam_epsilon": ((0, False), (1, True), ""),
    "weight_decay": ((0, True), (_INF, False), ""),
    "max_grad_norm": ((0, False), (_INF, False), "The release clips at 1.0."),
    "guidance_scale": ((1, True), (_INF, False), "1.0 is CFG-free (NFT)."),
    "distilled_guidance_scale": ((0, True), (_INF, False), ""),
    "adv_clip_max": ((0, False), (_INF, False), "The release uses 5."),
    "nft_beta": ((0, False), (_INF, False), "The release uses 1.0 (0.1 for OCR)."),
    "kl_beta": ((0, True), (_INF, False), "The release uses 1e-4; 0 skips the reference forward."),
    "kl_reference_guidance_scale": ((1, True), (_INF, False), "1.0 (the release): the unguided base model."),
    "norm_guard_weight": ((0, True), (_INF, False), "0 (the release) turns the norm guard off."),
    "norm_guard_margin": ((0, True), (_INF, False), ""),
    "timestep_fraction": ((0, False), (1, True), ""),
    "timestep_shift": ((0, False), (_INF, False), ""),
    "logit_mean": ((-_INF, False), (_INF, False), ""),
    "logit_std": ((0, False), (_INF, False), ""),
    "old_policy_decay_constant": ((0, True), (1, False), ""),
    "ema_decay": ((0, True), (1, False), ""),
}
GRPO_FLOAT_RANGES = {
    "grpo_noise_level": ((0, False), (_INF, False), "Flow-GRPO uses 0.7."),
    "grpo_clip_range": ((0, False), (1, False), "Flow-GRPO uses 1e-4."),
    "grpo_kl_beta": ((0, True), (_INF, False), "Flow-GRPO uses 0.04; 0 skips the reference forward."),
    "grpo_guidance_scale": ((1, True), (_INF, False), "Flow-GRPO samples with CFG 4.5; 1.0 is CFG-free."),
}
MIXED_PRECISIONS = ("no", "fp16", "bf16")
TRACKERS = ("tensorboard", "wandb", "comet_ml", "mlflow", "aim", "clearml", "dvclive", "swanlab", "trackio")


MAX_IMAGES_PER_ITERATION = 65_536  # a bound before any compute: 57 times the release's 1,152


@dataclass
class NFTConfig:
    """Configuration of `NFTTrainer`. Usable with `transformers.HfArgumentParser`.

    One *step* is one NFT iteration: sample `prompts_per_iteration * group_size` images with the old policy,
    score them, and train on them. `max_steps`, `logging_steps`, `save_steps` and `validation_steps` count
    iterations; the decay schedules count optimizer steps.
    """

    # Run
    output_dir: str = field(default="nft-output", metadata={"help": "Where the LoRA, checkpoints and logs go."})
    seed: int = field(default=42, metadata={"help": "Seed of prompts, noise and training timesteps."})
    max_steps: int = field(
        default=1000, metadata={"help": "Number of NFT iterations.", "aliases": ["--max_train_steps"]}
    )
    logging_steps: int = field(default=1, metadata={"help": "Log metrics every this many iterations."})
    save_steps: int = field(
        default=50,
        metadata={"help": "Write a checkpoint every this many iterations.", "aliases": ["--checkpointing_steps"]},
    )
    save_total_limit: Optional[int] = field(
        default=None,
        metadata={"help": "Keep at most this many checkpoints.", "aliases": ["--checkpoints_total_limit"]},
    )
    resume_from_checkpoint: Optional[str] = field(
        default=None, metadata={"help": "A checkpoint-<step> folder, or 'latest' in output_dir."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start over in an output_dir that holds another run: its checkpoints, LoRA, metrics, "
                  "samples and logs are removed first. Without it such a folder is refused (unless resuming)."},
    )
    report_to: str = field(
        default="tensorboard",
        metadata={"help": f"Trackers, comma-separated, of {TRACKERS}; or 'all' or 'none'. Default: tensorboard."},
    )
    mixed_precision: Optional[str] = field(
        default=None,
        metadata={"help": f"One of {MIXED_PRECISIONS}. Default: what `accelerate launch --mixed_precision` or the "
                  "accelerate config says, else 'no'."},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})
    allow_tf32: bool = field(default=True, metadata={"help": "Allow TF32 matmuls on Ampere and newer GPUs."})
    torch_compile: bool = field(default=False, metadata={"help": "torch.compile the transformer's forward."})
    fused_adamw: Optional[bool] = field(
        default=None,
        metadata={"help": "AdamW's fused kernel (one kernel for all LoRA tensors). Default: on CUDA devices, except "
                  "under DeepSpeed (which steps its own optimizer); off elsewhere."},
    )
    batch_frozen_forwards: bool = field(
        default=True,
        metadata={"help": "Run a micro-step's old-policy and reference predictions as one forward of twice the batch "
                  "(PEFT mixed adapter batches), once checked to give the two forwards' numbers; False: two."},
    )
    save_on_interrupt: bool = field(
        default=False,
        metadata={"help": "On SIGTERM/SIGINT, write a checkpoint after the current iteration before exiting."},
    )
    reward_timeout: Optional[float] = field(
        default=3600.0,
        metadata={"help": "Seconds to wait for a batch's rewards (thread/process scoring) before failing: a hung "
                  "reward (or reward server) stops the run instead of stalling it. None for no limit."},
    )
    skip_nonfinite: bool = field(
        default=False,
        metadata={"help": "Skip an optimizer step whose loss or gradient norm is not finite, instead of stopping "
                  "with an error (not under DeepSpeed, whose engine steps inside backward)."},
    )
    # The Hub (TRL's names)
    push_to_hub: bool = field(
        default=False, metadata={"help": "After training, upload the LoRA, model card and images (the script)."}
    )
    hub_model_id: Optional[str] = field(default=None, metadata={"help": "Hub repo. Default: the output_dir name."})
    hub_private_repo: Optional[bool] = field(default=None, metadata={"help": "Create the repo private."})
    hub_token: Optional[str] = field(
        default=None,
        metadata={"help": "Hub token. Prefer $HF_TOKEN or `hf auth login`: a flag shows in `ps` and in the "
                  "launcher's error messages. Never saved in checkpoints or trackers. Default: the logged-in token."},
    )
    base_model_id: Optional[str] = field(
        default=None,
        metadata={"help": "The base model's Hub id for the model card, when the pipeline came from a local folder. "
                  "Default: the id the pipeline was loaded from, else none (the card then has no base_model)."},
    )
    license: Optional[str] = field(
        default=None, metadata={"help": "The model card's license. Default: the base model's, read from the Hub."}
    )
    save_ema_weights: bool = field(
        default=True, metadata={"help": "Save the EMA of the LoRA (release) rather than the raw trained weights."}
    )

    # Optimizer (release: AdamW 3e-4, betas (0.9, 0.999), wd 1e-4, eps 1e-8, constant lr, clip 1.0)
    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate of the LoRA."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip of the gradient norm, per optimizer step."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "A diffusers.optimization scheduler name."})
    lr_warmup_steps: int = field(
        default=0, metadata={"help": "Warm-up length in optimizer steps (not iterations; see the start-up block)."}
    )
    optimizer_steps_per_iteration: int = field(
        default=1,
        metadata={"help": "Optimizer steps per iteration when gradient_accumulation_steps is not set (release: 1; "
                  "2 for OCR). The iteration's micro-batches are split evenly between them."},
    )
    gradient_accumulation_steps: Optional[int] = field(
        default=None,
        metadata={
            "help": "Micro-batches (train_batch_size samples at one timestep) per optimizer step. Default: split "
            "the micro-batches of an iteration into optimizer_steps_per_iteration steps (the release)."
        },
    )

    # Sampling
    prompts_per_iteration: int = field(default=48, metadata={"help": "Prompt groups per iteration (all processes)."})
    group_size: int = field(
        default=24, metadata={"help": "Images per prompt (K); at least 2. TRL's name: num_generations."}
    )
    num_sampling_steps: int = field(default=10, metadata={"help": "Solver steps of each rollout."})
    sampler: str = field(default="dpm_solver", metadata={"help": f"Data-collection solver, one of {SAMPLERS}."})
    guidance_scale: float = field(default=1.0, metadata={"help": "CFG scale of rollouts; 1.0 is CFG-free (NFT)."})
    distilled_guidance_scale: float = field(
        default=3.5, metadata={"help": "Guidance-embedding value of guidance-distilled models (FLUX.1-dev)."}
    )
    family: str = field(
        default="auto",
        metadata={"help": "'auto' uses the family's family file, else traces the pipeline; 'traced' always traces "
                          "it (diffusers_nft.pipelines.FAMILY_MODES)."},
    )
    resolution: int = field(default=512, metadata={"help": "Image side in pixels (square)."})
    image_column: Optional[str] = field(
        default=None,
        metadata={"help": "Image-conditioned pipelines (editing: FluxKontext, ...): the prompt dataset's column of each "
                  "row's source image(s), fed to the call's `image` (paths, PIL images or a datasets.Image column)."},
    )
    mask_column: Optional[str] = field(
        default=None, metadata={"help": "Inpainting pipelines: the column of each row's mask (`mask_image`)."}
    )
    control_column: Optional[str] = field(
        default=None, metadata={"help": "Control pipelines: the column of each row's control image (`control_image`)."}
    )
    video_column: Optional[str] = field(
        default=None, metadata={"help": "Video-conditioned pipelines (Wan VACE): the column of each row's conditioning "
                                "video, as a list of frame images (`video`), one per generated frame."}
    )
    num_frames: Optional[int] = field(
        default=None, metadata={"help": "Frames per video for video pipelines (Wan: 4 k + 1). Default: the family's."}
    )
    monitors: bool = field(
        default=True,
        metadata={"help": "Drift monitors every iteration (monitor/*: brightness, saturation, within-group diversity, "
                          "theta/reference velocity-norm ratio, KL estimate); off saves one reference forward."},
    )
    reward_frames: int = field(
        default=3, metadata={"help": "Frames of each video an image reward scores (evenly spaced; their mean counts)."}
    )
    max_sequence_length: Optional[int] = field(
        default=None,
        metadata={"help": "Text tokens per prompt (T5 and the like). Default: the family's (SD3: 128, the release)."},
    )
    sample_batch_size: Optional[int] = field(
        default=None,
        metadata={"help": "Images per rollout batch per process. Default: on a CUDA device, the most that fit in its "
                          "free memory, measured at start-up (memory_fit.py); elsewhere 8."},
    )
    upcast_vae: bool = field(
        default=True, metadata={"help": "Decode in float32 under fp16/bf16 mixed precision (the release)."}
    )
    offload_text_encoders: bool = field(
        default=False, metadata={"help": "Keep text encoders on the CPU except while encoding prompts."}
    )

    # Rewards and advantages
    reward_weights: Optional[List[float]] = field(default=None, metadata={"help": "One weight per reward."})
    normalize_rewards: bool = field(
        default=False, metadata={"help": "Divide each reward by its running std before the weighted sum."}
    )
    reward_scoring: str = field(
        default="thread",
        metadata={"help": f"One of {SCORING_MODES}: 'thread' and 'process' score a batch while the next one samples."},
    )
    reward_device: Optional[str] = field(default=None, metadata={"help": "Device of reward models (default: ours)."})
    reward_dtype: str = field(default="float32", metadata={"help": "dtype of reward models."})
    reward_batch_size: int = field(default=32, metadata={"help": "Images per reward-model forward."})
    adv_clip_max: float = field(default=5.0, metadata={"help": "Clip of the normalised advantage (c)."})
    advantage_std: str = field(default="global", metadata={"help": f"Std of the advantage, one of {STD_SCOPES}."})

    # Loss
    nft_beta: float = field(default=1.0, metadata={"help": "Guidance strength of the implicit policies."})
    kl_beta: float = field(default=1e-4, metadata={"help": "Weight of the KL to the base model; 0 skips it."})
    kl_reference_guidance_scale: float = field(
        default=1.0,
        metadata={"help": "Not the release's: the KL's reference velocity is the base model's CFG-guided one at this "
                  "scale (Flow-Factory's CRD, e.g. 4.5), pulling the CFG-free policy toward what guidance draws; "
                  "1.0 (the release): the unguided base."},
    )
    reward_adaptive_kl: bool = field(
        default=False,
        metadata={"help": "Not the release's: weight each sample's KL by its r, from min(kl_beta, 1e-4) at r = 0 to "
                  "kl_beta at r = 1 (CRD's reward-adaptive KL)."},
    )
    norm_guard_weight: float = field(
        default=0.0,
        metadata={"help": "Not the release's: weight of a hinge on |v_theta| / |v_ref| above 1 + norm_guard_margin "
                  "(NormGuard); 0 turns it off."},
    )
    norm_guard_margin: float = field(default=0.05, metadata={"help": "The norm guard's free margin above a ratio of 1."})
    loss_weighting: str = field(default="x0_adaptive", metadata={"help": f"One of {WEIGHTINGS}."})
    adv_mode: str = field(
        default="all",
        metadata={"help": f"Advantage mode of the release, one of {ADV_MODES}, applied to the clipped A before "
                  "r = 0.5 + 0.5 A / c: 'positive_only' clamps it at >= 0, 'negative_only' at <= 0 (both loss terms "
                  "stay); 'one_only' makes it 1 where A > 0, else 0 (r 0.6 or 0.5); 'binary' its sign (r 0.4, 0.5, 0.6)."},
    )
    drop_negative_term: bool = field(
        default=False,
        metadata={"help": "Ablation (not the release's): drop the negative loss term, keeping only r-weighted "
                  "positive fitting."},
    )
    train_batch_size: int = field(default=8, metadata={"help": "Samples per training micro-batch per process."})
    train_timesteps: str = field(default="sampler_grid", metadata={"help": f"One of {TRAIN_TIMESTEPS}."})
    timestep_fraction: float = field(
        default=0.99, metadata={"help": "Each sample trains at int(fraction * num_sampling_steps) noise levels."}
    )
    timestep_shift: float = field(default=3.0, metadata={"help": "Shift of 'uniform'/'logit_normal' draws."})
    logit_mean: float = field(default=0.0, metadata={"help": "Mean of train_timesteps='logit_normal'."})
    logit_std: float = field(default=1.0, metadata={"help": "Std of train_timesteps='logit_normal'."})

    # The objective: DiffusionNFT, or Flow-GRPO on the same families, rewards, LoRA and checkpoints
    objective: str = field(
        default="nft",
        metadata={"help": "'nft' (DiffusionNFT) or 'flow_grpo' (Flow-GRPO, arXiv 2505.05470, with the settings of "
                          "FlowGRPOConfig) (diffusers_nft.objectives.OBJECTIVES)."},
    )

    # Old policy and EMA
    old_policy_decay: str = field(default="linear", metadata={"help": f"Schedule, one of {OLD_POLICY_DECAYS}."})
    old_policy_decay_constant: float = field(default=0.0, metadata={"help": "eta of the 'constant' schedule."})
    ema_decay: float = field(default=0.9, metadata={"help": "Largest decay of the evaluation EMA."})

    # Validation
    validation_prompts: Optional[List[str]] = field(
        default=None,
        metadata={"help": "Prompts of the sample grid; repeat the flag or give several. Default: the first 4 "
                  "training prompts.", "aliases": ["--validation_prompt"], "action": "extend"},
    )
    validation_steps: int = field(default=10, metadata={"help": "Save a sample grid every this many iterations."})
    num_validation_images: int = field(default=4, metadata={"help": "Fixed-seed images per validation prompt."})
    eval_num_steps: int = field(default=40, metadata={"help": "Euler steps of evaluation samples."})
    eval_steps: Optional[int] = field(
        default=None,
        metadata={"help": "Score eval_dataset every this many iterations, and at the last one. Default: "
                  "validation_steps."},
    )
    metric_for_best_model: Optional[str] = field(
        default=None,
        metadata={"help": "A judge whose held-out score is tracked as the best so far (transformers' name; "
                  "EarlyStoppingCallback reads it), e.g. 'digit_judge' for eval/digit_judge/mean."},
    )
    greater_is_better: Optional[bool] = field(
        default=None, metadata={"help": "Whether a higher metric_for_best_model is better. Default: True."}
    )

    num_generations: Optional[int] = field(
        default=None, metadata={"help": "TRL's name for group_size; sets it when given."}
    )
    scale_rewards: Optional[str] = field(
        default=None,
        metadata={"help": "TRL's name: 'group' or 'batch' set advantage_std to 'group' or 'global'."},
    )

    float_ranges: ClassVar[dict] = FLOAT_RANGES  # the float settings and their ranges (`_validate_floats`)
    # What transformers' callbacks read of their TrainingArguments: evaluation runs every eval_steps (with an
    # eval_dataset), and no "best model" is loaded at the end (the guard's best/ folder keeps it).
    eval_strategy: ClassVar[str] = "steps"
    load_best_model_at_end: ClassVar[bool] = False

    def __post_init__(self):
        defaults = {f.name: f.default for f in fields(self)}
        if self.metric_for_best_model and self.greater_is_better is None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")  # transformers' rule
        if self.num_generations is not None:
            _check(self.group_size in (self.num_generations, defaults["group_size"]),
                   f"num_generations={self.num_generations} and group_size={self.group_size} set the same thing "
                   "(num_generations is TRL's name for group_size); give one of them.")
            self.group_size = self.num_generations
        if self.scale_rewards is not None:
            scopes = {"group": "group", "batch": "global"}
            _check(self.scale_rewards in scopes, f"scale_rewards must be 'group' or 'batch' (got {self.scale_rewards!r}); "
                   "DiffusionNFT always divides by a std, so TRL's 'none' has no counterpart (see advantage_std).")
            _check(self.advantage_std in (scopes[self.scale_rewards], defaults["advantage_std"]),
                   f"scale_rewards={self.scale_rewards!r} and advantage_std={self.advantage_std!r} set the same thing "
                   "(scale_rewards is TRL's name for advantage_std); give one of them.")
            self.advantage_std = scopes[self.scale_rewards]
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` with the fix for any bad value, before any compute is spent."""
        _check(self.group_size >= 2, f"group_size must be >= 2 (got {self.group_size}): NFT compares images of one prompt.")
        _check(self.prompts_per_iteration * self.group_size <= MAX_IMAGES_PER_ITERATION,
               f"prompts_per_iteration x group_size = {self.prompts_per_iteration * self.group_size} images per "
               f"iteration, more than {MAX_IMAGES_PER_ITERATION:,} (the release samples 48 x 24 = 1,152): lower them.")
        _check(0 <= self.seed < 2**32, f"seed must be in [0, 2**32) (got {self.seed}): numpy's generator takes no other.")
        self._validate_floats()
        for name in ("max_steps", "prompts_per_iteration", "num_sampling_steps", "train_batch_size", "logging_steps",
                     "save_steps", "validation_steps", "eval_num_steps", "resolution", "num_validation_images",
                     "optimizer_steps_per_iteration"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1 (got {getattr(self, name)}).")
        _check(self.sample_batch_size is None or self.sample_batch_size >= 1,
               f"sample_batch_size must be >= 1 or None (chosen from the device's memory), got {self.sample_batch_size}.")
        _check(self.max_sequence_length is None or self.max_sequence_length >= 1,
               f"max_sequence_length must be >= 1 or None (the family's default), got {self.max_sequence_length}.")
        _check(self.adv_mode in ADV_MODES, f"adv_mode must be one of {ADV_MODES} (got {self.adv_mode!r}).")
        _check(self.sampler in SAMPLERS, f"sampler must be one of {SAMPLERS} (got {self.sampler!r}).")
        from .objectives import OBJECTIVES  # here, not at the top: NFTConfig imports without diffusers
        from .pipelines import FAMILY_MODES

        _check(self.family in FAMILY_MODES, f"family must be one of {FAMILY_MODES} (got {self.family!r}).")
        _check(self.objective in OBJECTIVES, f"objective must be one of {tuple(OBJECTIVES)} (got {self.objective!r}).")
        _check(self.reward_scoring in SCORING_MODES, f"reward_scoring must be one of {SCORING_MODES}.")
        _check(self.reward_batch_size >= 1, "reward_batch_size must be >= 1.")
        _check(self.reward_frames >= 1, "reward_frames must be >= 1.")
        _check(self.num_frames is None or self.num_frames >= 1, "num_frames must be >= 1.")
        _check(self.mixed_precision in (None, *MIXED_PRECISIONS),
               f"mixed_precision must be one of {MIXED_PRECISIONS} or None (accelerate's setting).")
        self.trackers()
        _check(self.advantage_std in STD_SCOPES, f"advantage_std must be one of {STD_SCOPES} (got {self.advantage_std!r}).")
        _check(self.loss_weighting in WEIGHTINGS, f"loss_weighting must be one of {WEIGHTINGS} (got {self.loss_weighting!r}).")
        _check(self.train_timesteps in TRAIN_TIMESTEPS, f"train_timesteps must be one of {TRAIN_TIMESTEPS}.")
        _check(self.old_policy_decay in OLD_POLICY_DECAYS, f"old_policy_decay must be one of {OLD_POLICY_DECAYS}.")
        _check(self.save_total_limit is None or self.save_total_limit >= 1, "save_total_limit must be >= 1 or None.")
        _check(self.eval_steps is None or self.eval_steps >= 1, "eval_steps must be >= 1 or None (validation_steps).")
        _check(
            self.gradient_accumulation_steps is None or self.gradient_accumulation_steps >= 1,
            "gradient_accumulation_steps must be >= 1 or None (one optimizer step per iteration).",
        )
        _check(self.resolution % 8 == 0, f"resolution must be a multiple of 8 (got {self.resolution}).")

    def _validate_floats(self) -> None:
        """Every float setting is a finite number in its range (a NaN or inf would train a NaN LoRA)."""
        for name, (low, high, hint) in self.float_ranges.items():
            value = getattr(self, name)
            inside = math.isfinite(value) and _above(value, low) and _below(value, high)
            _check(inside, f"{name} must be a finite number in {_interval(low, high)} (got {value}). {hint}".strip())
        _check(self.reward_timeout is None or (math.isfinite(self.reward_timeout) and self.reward_timeout > 0),
               f"reward_timeout must be a finite number of seconds > 0, or None (got {self.reward_timeout}).")
        weights = self.reward_weights or []
        _check(all(math.isfinite(w) for w in weights), f"reward_weights must be finite numbers (got {weights}).")

    @classmethod
    def from_recipe(cls, name: str, **overrides) -> "NFTConfig":
        """The release's configuration `name` (see `diffusers_nft.recipes`), with `overrides` on top, as its
        objective's config class (`FlowGRPOConfig` for `flow_grpo_nocfg`)."""
        from .objectives import config_from_values
        from .recipes import recipe

        return config_from_values({**recipe(name)["config"], **overrides})

    def trackers(self) -> Optional[List[str]]:
        """`report_to` as accelerate's `log_with`: a list of tracker names, "all", or None for no tracker.

        Raises:
            ValueError: If a name is unknown or its package is not installed.
        """
        names = [name.strip() for name in self.report_to.split(",") if name.strip()]
        if names in ([], ["none"]):
            return None
        if names == ["all"]:
            return "all"
        unknown = [name for name in names if name not in TRACKERS]
        if unknown:
            raise ValueError(f"report_to: unknown tracker {unknown[0]!r}; use a comma-separated list of {TRACKERS}, "
                             "'all' or 'none'.")
        missing = [name for name in names if importlib.util.find_spec(name) is None]  # each package is its name
        if missing:
            raise ValueError(f"report_to={self.report_to!r}: {missing[0]} is not installed (pip install {missing[0]}), "
                             "or drop it from report_to.")
        return names

    @property
    def images_per_iteration(self) -> int:
        return self.prompts_per_iteration * self.group_size

    @property
    def logging_dir(self) -> str:
        return os.path.join(self.output_dir, "logs")

    def to_dict(self) -> dict:
        """Every setting but the Hub token: what checkpoints, trackers and the card record."""
        values = asdict(self)
        values.pop("hub_token")
        return values


@dataclass
class FlowGRPOConfig(NFTConfig):
    """Configuration of `FlowGRPOTrainer` (or `NFTTrainer(objective="flow_grpo")`): `NFTConfig` plus Flow-GRPO's
    own settings, with the defaults of its reference SD3 configuration. The settings of the DiffusionNFT loss
    (`nft_beta`, `kl_beta`, `loss_weighting`, `sampler`, `train_timesteps`, the old-policy decay) do not apply."""

    objective: str = field(default="flow_grpo", metadata={"help": "'flow_grpo' (the settings below)."})
    grpo_noise_level: float = field(default=0.7, metadata={"help": "Flow-GRPO: noise level a of the SDE sampler."})
    grpo_clip_range: float = field(default=1e-4, metadata={"help": "Flow-GRPO: PPO clip range of the ratio."})
    grpo_kl_beta: float = field(
        default=0.04, metadata={"help": "Flow-GRPO: weight of the KL to the base model on the SDE means; 0 skips it."}
    )
    grpo_guidance_scale: float = field(
        default=4.5, metadata={"help": "Flow-GRPO: CFG scale while sampling and training (1.0: none)."}
    )
    grpo_eval_guidance_scale: Optional[float] = field(
        default=None,
        metadata={"help": "Flow-GRPO: CFG scale of evaluation images, grids and the card (None: grpo_guidance_scale, "
                  "as the reference evaluates)."},
    )
    grpo_drop_zero_advantage: bool = field(
        default=True,
        metadata={"help": "Flow-GRPO: leave out samples whose advantage is 0 (the reference), spreading the others "
                  "over the same number of micro-batches."},
    )
    grpo_ema_interval: int = field(
        default=8,
        metadata={"help": "Flow-GRPO: update the EMA after each sample batch when (optimizer step + 1) is a multiple "
                  "of this (the reference: 8); 1 after every batch."},
    )
    optimizer_steps_per_iteration: int = field(
        default=2,
        metadata={"help": "Optimizer steps per iteration when gradient_accumulation_steps is not set (Flow-GRPO's "
                  "reference: 2, each accumulating every trained transition of half the samples)."},
    )

    float_ranges: ClassVar[dict] = {**FLOAT_RANGES, **GRPO_FLOAT_RANGES}

    def validate(self) -> None:
        super().validate()
        _check(self.objective == "flow_grpo", f"FlowGRPOConfig is for objective='flow_grpo' (got {self.objective!r}); "
               "use NFTConfig for DiffusionNFT.")
        _check(self.grpo_ema_interval >= 1, f"grpo_ema_interval must be >= 1 (got {self.grpo_ema_interval}).")
        _check(self.grpo_eval_guidance_scale is None or self.grpo_eval_guidance_scale >= 1,
               f"grpo_eval_guidance_scale must be >= 1 or None (got {self.grpo_eval_guidance_scale}); 1.0 is CFG-free.")


def config_for(config: NFTConfig, config_class: type, objective: str) -> NFTConfig:
    """`config` as an instance of `config_class` (an objective's config) for `objective`: every field both classes
    have keeps its value, the others take `config_class`'s defaults. `FlowGRPOConfig` from an `NFTConfig` gets
    Flow-GRPO's own settings at their defaults, and keeps the `NFTConfig`'s shared ones (its 1 optimizer step per
    iteration where `FlowGRPOConfig` takes the reference's 2): pass a `FlowGRPOConfig` for the reference's."""
    if type(config) is config_class and config.objective == objective:
        return config
    names = {f.name for f in fields(config_class)}
    values = {k: v for k, v in asdict(config).items() if k in names}
    for alias in ("num_generations", "scale_rewards"):  # TRL's names, already applied to the fields they set
        values.pop(alias, None)
    return config_class(**{**values, "objective": objective})


# Settings that shape an iteration: an exact resume needs the values the checkpoint was written with.
RESUME_MUST_MATCH = (
    "seed", "prompts_per_iteration", "group_size", "num_sampling_steps", "sampler", "train_batch_size",
    "timestep_fraction", "train_timesteps", "gradient_accumulation_steps", "optimizer_steps_per_iteration",
    "lr_scheduler_type", "lr_warmup_steps", "old_policy_decay", "objective",
)
# Settings that say how a run is driven rather than what it trains: free to change on resume.
RESUME_FREE = (
    "output_dir", "max_steps", "logging_steps", "save_steps", "save_total_limit", "resume_from_checkpoint",
    "report_to", "validation_prompts", "validation_steps", "num_validation_images", "save_on_interrupt",
    "reward_timeout", "reward_scoring", "reward_device", "reward_batch_size", "sample_batch_size", "eval_num_steps",
    "eval_steps", "num_generations", "scale_rewards", "overwrite_output_dir", "metric_for_best_model",
    "greater_is_better",
    "push_to_hub", "hub_model_id", "hub_private_repo", "base_model_id", "license",
)


def resume_differences(saved: dict, current: dict):
    """The settings of a resumed run that differ from its checkpoint's: `(must_match, others)`, each a list of
    `"name: saved -> current"` lines."""
    free = set(RESUME_FREE)
    if current.get("lr_scheduler_type") not in ("constant", "constant_with_warmup"):
        free.discard("max_steps")  # a decaying schedule is stretched to the new length: worth a warning
    differ = [k for k in current if k in saved and saved[k] != current[k] and k not in free]
    lines = {k: f"{k}: {saved[k]!r} -> {current[k]!r}" for k in differ}
    return [lines[k] for k in differ if k in RESUME_MUST_MATCH], [lines[k] for k in differ if k not in RESUME_MUST_MATCH]


def _above(value: float, low) -> bool:
    return value >= low[0] if low[1] else value > low[0]


def _below(value: float, high) -> bool:
    return value <= high[0] if high[1] else value < high[0]


def _interval(low, high) -> str:
    return f"{'[' if low[1] else '('}{low[0]:g}, {high[0]:g}{']' if high[1] else ')'}"


def resolved_mixed_precision(value: Optional[str]) -> str:
    """`mixed_precision` as accelerate will apply it: the value, else `accelerate launch`'s (its environment)."""
    return value or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")


def weight_dtype(mixed_precision: Optional[str]) -> torch.dtype:
    """The dtype of the frozen weights under `mixed_precision` (None: accelerate's setting)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(resolved_mixed_precision(mixed_precision), torch.float32)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
