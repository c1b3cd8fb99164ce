"""The one-line bugs `mutation_check.py` applies, each with the tests that must catch it.

A mutant names a file under `diffusers_nft/`, a fragment that occurs there exactly once, its replacement, and the
tests (pytest node ids) that should fail. Three groups: `SURVIVORS`, the bugs an audit found surviving the suite
(each now has a test that catches it); `CAUGHT_BEFORE`, bugs the suite caught already, listed so that they stay
caught; `WIDER`, the rest of the core and safety code, one bug per line that matters (8 of its first 49 survived when
they were written, and each got a test; the last 4 came with their tests). `tests/test_mutation_check.py` runs them
all in CI.
"""

from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: Tuple[str, ...]
    why: str


LOSS, SAMPLING, TIMESTEPS = "tests/test_loss.py", "tests/test_sampling.py", "tests/test_schedules_timesteps.py"
ADV, GRPO, GUARD = "tests/test_advantages.py", "tests/test_flow_grpo.py", "tests/test_guard.py"
ROLLOUTS = "tests/test_trainer.py::test_rollouts_come_from_the_old_policy_and_each_micro_step_sees_its_own_x_t"
RELEASE_LOSS = "tests/test_loss.py::test_x0_adaptive_loss_and_gradient_match_the_release_at_every_noise_level"
X_T = "tests/test_loss.py::test_the_x0_prediction_uses_x_t_built_from_one_minus_sigma_x0_plus_sigma_noise"
ORDER = "tests/test_sampling.py::test_the_order_of_convergence_is_the_solvers"
GRID = "tests/test_schedules_timesteps.py::test_sampler_grid_draws_every_level_equally_often"
GRPO_ADV = "tests/test_flow_grpo.py::test_flow_grpos_advantages_use_the_global_or_each_groups_std_and_are_clipped"
GRPO_KL = "tests/test_flow_grpo.py::test_flow_grpos_kl_and_clip_fraction_are_the_release_formulas"
GRPO_CONFIG = "tests/test_flow_grpo.py::test_flow_grpo_config_reaches_its_objective_with_the_reference_defaults"
GRPO_BATCHES = "tests/test_flow_grpo.py::test_zero_advantage_samples_are_left_out_and_the_batch_count_kept"
GRPO_EMA = "tests/test_flow_grpo.py::test_the_ema_updates_after_each_sample_batch_on_the_reference_cadence"
GUARD_DEFAULTS = "tests/test_guard.py::test_the_documented_default_thresholds_fire_just_past_their_edges"
SAME_NOISE = "tests/test_recipes_evaluate.py::test_every_model_is_evaluated_on_the_same_noise_seeded_1000_s_plus_i"
CHUNKED = "tests/test_serve_limits.py::test_a_chunked_body_without_content_length_is_bounded_too"
CARD = "tests/test_model_card.py::test_a_relative_local_path_never_reaches_the_card"
SIGNALS = "tests/test_interrupts.py::test_one_signal_is_noted_and_a_second_stops_at_once"
RNG = "tests/test_checkpoint.py::test_a_resumed_run_continues_the_global_rngs_where_the_checkpoint_left_them"
OLD_RNG = "tests/test_security.py::test_rng_states_written_before_0_2_still_load_and_restore"
OCR = "tests/test_ocr_geneval.py::test_ocr_compares_both_texts_lower_cased_and_without_spaces"
EPOCHS = "tests/test_data.py::test_each_epoch_is_a_new_permutation_of_the_seed"
SHARES = "tests/test_recipes_evaluate.py::test_geneval_prompt_sets_are_seeded_disjoint_and_scorable"
LICENSE = "tests/test_model_card.py::test_the_license_is_the_base_models_unless_one_is_named"
SERVER_DEFAULTS = "tests/test_serve_limits.py::test_the_default_limits_are_the_documented_ones"
TF32 = "tests/test_config.py::test_tf32_is_on_by_default_and_the_flag_turns_it_off"

SURVIVORS = [
    Mutant("nft-fresh-noise-in-loss", "objectives/nft.py", "x0=x0, noise=noise, r=r,\n",
           "x0=x0, noise=torch.randn_like(noise), r=r,\n", (ROLLOUTS,), "the loss sees noise other than x_t's"),
    Mutant("collect-samples-from-theta", "collect.py", "self.policy.using(objective.sampling_policy):\n            for lo",
           'self.policy.using("default"):\n            for lo', (ROLLOUTS,), "rollouts from theta, not the old policy"),
    Mutant("nft-reference-is-old", "frozen_pair.py", "with self.policy.using(REFERENCE):",
           "with self.policy.using(OLD):", (ROLLOUTS,), "the KL reference is the old policy"),
    Mutant("nft-x-t-swapped-in-micro-batches", "objectives/nft.py", "x_t=(1 - s) * x0 + s * noise",
           "x_t=s * x0 + (1 - s) * noise", (ROLLOUTS,), "micro-batch x_t = s x0 + (1 - s) noise"),
    Mutant("loss-x0-weight-not-detached", "loss.py", "        with torch.no_grad():\n            weight =",
           "        if True:\n            weight =", (RELEASE_LOSS,), "the x0_adaptive weight carries gradient"),
    Mutant("loss-x-t-swapped", "loss.py", "x_t = (1 - sigma_b) * x0 + sigma_b * noise",
           "x_t = sigma_b * x0 + (1 - sigma_b) * noise", (X_T,), "the loss builds x_t = sigma x0 + (1 - sigma) noise"),
    Mutant("heun-first-order", "solvers.py", "(t - s) * 0.5 * (v + call(x_euler, t))",
           "(t - s) * (0.25 * v + 0.75 * call(x_euler, t))", (ORDER,), "Heun's weights 0.25 / 0.75"),
    Mutant("grid-never-last-level", "timesteps.py",
           "keys = torch.rand(num_samples, len(sampler_sigmas), generator=generator)",
           "keys = torch.rand(num_samples, len(sampler_sigmas), generator=generator); keys[:, -1] = 2.0",
           (GRID,), "the grid never draws its last level"),
    Mutant("grid-never-first-level", "timesteps.py",
           "keys = torch.rand(num_samples, len(sampler_sigmas), generator=generator)",
           "keys = torch.rand(num_samples, len(sampler_sigmas), generator=generator); keys[:, 0] = 2.0",
           (GRID,), "the grid never draws its first level"),
    Mutant("grpo-group-std", "objectives/flow_grpo.py", "std_scope=self.advantage_std", 'std_scope="group"',
           (GRPO_ADV,), "Flow-GRPO divides by the group's std whatever advantage_std says"),
    Mutant("grpo-no-advantage-clip", "objectives/flow_grpo.py",
           "advantages = optimality.advantages.clamp(-self.adv_clip_max, self.adv_clip_max)",
           "advantages = optimality.advantages", (GRPO_ADV,), "Flow-GRPO's advantages unclipped"),
    Mutant("grpo-kl-without-the-2", "objectives/flow_grpo.py", "/ (2 * current.std.flatten() ** 2)",
           "/ (current.std.flatten() ** 2)", (GRPO_KL,), "KL divided by std^2, not 2 std^2"),
    Mutant("grpo-clip-fraction-inverted", "objectives/flow_grpo.py", "(ratio - 1).abs() > self.clip_range",
           "(ratio - 1).abs() <= self.clip_range", (GRPO_KL,), "clip fraction counts the unclipped"),
    Mutant("guard-ignores-the-training-reward", "guard.py", 'and reward > self.best["reward"]:', ":",
           (GUARD_DEFAULTS,), "judge_drop fires without the reward rising"),
    Mutant("guard-brightness-one-sided", "guard.py", "abs(brightness - start) > self.brightness_drift",
           "brightness - start > self.brightness_drift", (GUARD_DEFAULTS,), "only brightening fires"),
    Mutant("guard-judge-drop-default-x10", "guard.py", "judge_drop: float = 0.05", "judge_drop: float = 0.5",
           (GUARD_DEFAULTS,), "default judge_drop 0.5"),
    Mutant("guard-diversity-default-div10", "guard.py", "diversity_floor: float = 0.5", "diversity_floor: float = 0.05",
           (GUARD_DEFAULTS,), "default diversity_floor 0.05"),
    Mutant("guard-brightness-default-x10", "guard.py", "brightness_drift: float = 0.15", "brightness_drift: float = 1.5",
           (GUARD_DEFAULTS,), "default brightness_drift 1.5"),
    Mutant("evaluate-noise-per-model", "evaluate.py", "noise_seeds, call_kwargs=kwargs,",
           "[n + len(results) for n in noise_seeds], call_kwargs=kwargs,", (SAME_NOISE,),
           "each model drawn on other noise"),
    Mutant("evaluate-seeds-s-plus-i", "generation.py", "return [1000 * s + i for", "return [s + i for",
           (SAME_NOISE,), "prompt i at seed s uses s + i"),
    Mutant("serve-chunked-body-unbounded", "rewards/serve.py", "            if held[0] > self.max_body_bytes:",
           "            if False:", (CHUNKED,), "a chunked body bypasses max_body_bytes"),
    Mutant("card-relative-path-is-a-hub-id", "hub.py", "if os.path.exists(name_or_path):  # a local folder",
           "if os.path.isabs(name_or_path):  # a local folder", (CARD,), "a relative local path reaches the card"),
    Mutant("card-model-index-path-trusted", "hub.py", "if not name_or_path or os.path.exists(name_or_path):",
           "if not name_or_path:", (CARD,), "model_index.json's local path reaches the card"),
    Mutant("signals-second-is-ignored", "interrupts.py", "if self.received == signum:  # asked twice: stop now",
           "if False:", (SIGNALS,), "a second signal does not stop at once"),
    Mutant("resume-skips-rng-states", "checkpoints/checkpointer.py", "        set_rng_states(parts.get(RNG_PART))",
           "        pass", (RNG,), "resume leaves the global RNGs as they are"),
    Mutant("resume-skips-torch-rng", "checkpoints/checkpointer.py", '    torch.set_rng_state(states["torch"])',
           "    pass", (RNG,), "torch's global RNG not restored"),
    Mutant("checkpoint-numpy-allow-list-empty", "checkpoints/folder.py", "safe_globals(_NUMPY_ARRAY_GLOBALS)",
           "safe_globals([])", (OLD_RNG,), "old checkpoints' numpy states fail to load"),
    Mutant("ocr-reading-keeps-spaces", "rewards/ocr.py", 'recognised = recognised.replace(" ", "").lower()',
           "recognised = recognised.lower()", (OCR,), "the OCR reading keeps its spaces"),
    Mutant("prompts-same-order-every-epoch", "data.py", "manual_seed(self.seed * 100_003 + self.epoch)",
           "manual_seed(self.seed * 100_003)", (EPOCHS,), "no per-epoch reshuffle"),
    Mutant("advantages-constant-group-not-zeroed", "advantages.py",
           "centered = torch.where(constant[inverse], torch.zeros_like(centered), centered)", "pass", (ADV,),
           "equal rewards keep their mean's rounding error (binary mode then gives r = 0)"),
    Mutant("prompts-ignore-the-seed", "data.py", "manual_seed(self.seed * 100_003 + self.epoch)",
           "manual_seed(self.epoch)", (EPOCHS,), "the prompt order ignores the seed"),
    Mutant("geneval-shares-split-after-shuffle", "geneval_prompts.py", 'splits["test"] += records[: quota[task]]',
           'splits["test"] += records[: quota[task] + (task == tasks[0])]', (SHARES,),
           "one task over-represented in the test split"),
    Mutant("card-license-not-the-base-models", "hub.py", "license=license or base_model_license(base_model),",
           "license=license,", (LICENSE,), "the card names no license unless given one"),
    Mutant("server-default-images-x10", "rewards/serve.py", "max_images=256,", "max_images=2560,",
           (SERVER_DEFAULTS,), "default max_images 2560"),
    Mutant("server-default-pixels-x2", "rewards/serve.py", "max_pixels=2048 * 2048,", "max_pixels=4096 * 2048,",
           (SERVER_DEFAULTS,), "default max_pixels twice the documented"),
    Mutant("server-default-timeout-x10", "rewards/serve.py", "body_timeout=30.0,", "body_timeout=300.0,",
           (SERVER_DEFAULTS,), "default body_timeout 300 s"),
    Mutant("tf32-off-by-default", "config.py", "allow_tf32: bool = field(default=True,",
           "allow_tf32: bool = field(default=False,", (TF32,), "--allow_tf32 off by default"),
    Mutant("tf32-never-set", "engine.py", "    if allow and torch.cuda.is_available():", "    if False:", (TF32,),
           "--allow_tf32 changes nothing"),
]

CAUGHT_BEFORE = [
    Mutant("loss-negative-policy-sign", "loss.py", "        v_neg = (1 + beta) * v_old - beta * v_theta",
           "        v_neg = (1 - beta) * v_old + beta * v_theta", (LOSS,), "v_neg on the positive side"),
    Mutant("loss-negative-weight-r", "loss.py", "r * pos_err + (1 - r) * neg_err", "r * pos_err + r * neg_err",
           (LOSS,), "the negative term weighted by r"),
    Mutant("loss-no-clip-over-beta-scale", "loss.py", "per_sample.mean() * (self.adv_clip_max / beta)",
           "per_sample.mean() * self.adv_clip_max", (LOSS,), "the loss not scaled by 1 / beta"),
    Mutant("loss-old-not-detached", "loss.py", "v_old = v_old.detach()", "v_old = v_old", (LOSS,),
           "v_old receives gradient"),
    Mutant("loss-target-sign", "loss.py", "target = noise - x0", "target = x0 - noise", (LOSS,),
           "velocity target x0 - noise"),
    Mutant("loss-kl-unweighted", "loss.py", "else self.kl_beta * kl)", "else kl)", (LOSS,),
           "KL without kl_beta"),
    Mutant("advantages-unbiased-std", "advantages.py", "std = rewards.std(unbiased=False)", "std = rewards.std()",
           (ADV,), "the release's biased std replaced"),
    Mutant("advantages-r-scale", "advantages.py", "return (0.5 + 0.5 * clipped / adv_clip_max).clamp(0.0, 1.0)",
           "return (0.5 + clipped / adv_clip_max).clamp(0.0, 1.0)", (ADV,), "r = 0.5 + clip(A) / c"),
    Mutant("advantages-positive-only-clamp", "advantages.py", "clipped = clipped.clamp(min=0.0)",
           "clipped = clipped", (ADV,), "positive_only keeps negative advantages"),
    Mutant("schedule-linear-slope", "schedules.py", "return min(0.001 * step, 0.5)", "return min(0.01 * step, 0.5)",
           (TIMESTEPS,), "old-policy decay 10x faster"),
    Mutant("schedule-linear-cap", "schedules.py", "return min(0.001 * step, 0.5)", "return min(0.001 * step, 0.9)",
           (TIMESTEPS,), "old-policy decay capped at 0.9"),
    Mutant("schedule-delayed-start", "schedules.py", "return 0.0 if step < 75 else", "return 0.0 if step < 50 else",
           (TIMESTEPS,), "delayed decay from step 50"),
    Mutant("schedule-ema", "schedules.py", "return min((1 + step) / (10 + step), max_decay)",
           "return min(step / (10 + step), max_decay)", (TIMESTEPS,), "EMA decay step / (10 + step)"),
    Mutant("timesteps-shift", "timesteps.py", "return shift * t / (1 + (shift - 1) * t)",
           "return shift * t / (1 + shift * t)", (TIMESTEPS,), "SD3's time shift miswritten"),
    Mutant("timesteps-count-rounds", "timesteps.py", "max(1, int(timestep_fraction * num_sampling_steps))",
           "max(1, round(timestep_fraction * num_sampling_steps + 0.5))", (TIMESTEPS,), "one level too many"),
    Mutant("euler-evaluates-at-the-end", "solvers.py", "x = x + (t - s) * call(x, s)", "x = x + (t - s) * call(x, t)",
           (SAMPLING,), "Euler's velocity at the step's end"),
    Mutant("grpo-sde-mean-drift", "grpo.py", "mean = x * (1 + std**2 / (2 * s) * dt)", "mean = x * (1 + std**2 / s * dt)",
           (GRPO,), "the SDE's drift doubled"),
    Mutant("grpo-log-prob-constant", "grpo.py", "- torch.log(scale) - 0.5 * math.log(2 * math.pi)",
           "- torch.log(scale)", (GRPO,), "the Gaussian's normaliser dropped"),
    Mutant("grpo-surrogate-min", "grpo.py", "return torch.maximum(unclipped, clipped).mean(), ratio",
           "return torch.minimum(unclipped, clipped).mean(), ratio", (GRPO,), "PPO's pessimistic max taken as min"),
    Mutant("checkpoint-pickles-run", "checkpoints/folder.py", 'map_location="cpu", weights_only=True)',
           'map_location="cpu", weights_only=False)', ("tests/test_security.py",), "checkpoints unpickled in full"),
    Mutant("serve-declared-length-unchecked", "rewards/serve.py",
           "if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:", "if False:",
           ("tests/test_serve_limits.py::test_the_default_limits_are_the_documented_ones",),
           "an oversize body is read before it is refused"),
    Mutant("serve-no-key-check", "rewards/serve.py",
           "if self.api_key is not None and not _authorized(", "if False and not _authorized(",
           ("tests/test_serve_limits.py::test_server_limits_and_key",), "the API key never checked"),
    Mutant("card-base-model-id-unchecked", "hub.py",
           "if not _HUB_ID.match(base_model_id) or os.path.exists(base_model_id):", "if False:",
           ("tests/test_model_card.py::test_base_model_is_a_hub_id_or_nothing",), "a local base_model_id accepted"),
]

POLICY, NONFINITE, CHECKPOINT = "tests/test_policy.py", "tests/test_nonfinite.py", "tests/test_checkpoint.py"
SCORING, PLAN = "tests/test_scoring_remote.py", "tests/test_plan.py"
PAIR = "tests/test_frozen_pair.py"
SAVED = "tests/test_trainer.py::test_saved_lora_loads_into_a_fresh_pipeline"
ALONE = "tests/test_trainer.py::test_after_training_the_pipeline_is_the_saved_lora_alone"
BF16 = "tests/test_release_fidelity.py::test_bf16_keeps_lora_and_vae_in_float32_and_feeds_a_float32_timestep"
ROTATION = "tests/test_checkpoint.py::test_rotation_and_latest_ignore_incomplete_folders"
TWO_PROCESSES = "tests/test_multiprocess.py::test_two_processes_match_one_and_resume_exactly"
OPTIONS = "tests/test_options_end_to_end.py::test_each_option_changes_what_is_trained"
IN_FLIGHT = "tests/test_serve_limits.py::test_the_bytes_of_all_requests_in_flight_are_bounded"
SIXTEEN_BIT = "tests/test_serve_limits.py::test_a_16_bit_png_is_refused_not_clipped"
DEADLINE = "tests/test_serve_limits.py::test_the_client_timeout_is_a_deadline_for_the_whole_request"
LOCK = "tests/test_output_dir.py::test_two_runs_in_one_folder_at_once_are_refused_naming_the_other"
WINDOWS = "tests/test_trainer.py::test_each_accumulation_window_starts_without_gradients"
OLD_DECAY = "tests/test_trainer.py::test_the_old_policy_follows_theta_by_the_decay_of_the_optimizer_steps_taken"
INF_LOSS = "tests/test_nonfinite.py::test_a_non_finite_loss_stops_the_run_even_when_its_gradient_is_finite"
FLOOR = "tests/test_loss.py::test_the_x0_weight_is_the_mean_absolute_error_floored_at_1e_minus_5"
CONTINUOUS = ("tests/test_schedules_timesteps.py::"
              "test_continuous_levels_are_floored_at_1e_minus_3_and_logit_normal_has_its_mean_and_std")

# The rest of the core and of the safety code, one bug per line that matters (added after the audit, so that the
# list covers at least as much as its 88).
WIDER = [
    Mutant("loss-positive-policy-is-theta", "loss.py", "        v_pos = beta * v_theta + (1 - beta) * v_old",
           "        v_pos = v_theta", (LOSS,), "v_pos without the old policy's share"),
    Mutant("loss-kl-against-old", "loss.py", "per_sample_kl = _per_sample_mean((v_theta - v_ref).float() ** 2)",
           "per_sample_kl = _per_sample_mean((v_theta - v_old).float() ** 2)", (LOSS,), "the KL measured to the old policy"),
    Mutant("loss-x0-negative-from-positive", "loss.py", "neg_err = self._adaptive_x0_error(x_t - sigma_b * v_neg, x0)",
           "neg_err = self._adaptive_x0_error(x_t - sigma_b * v_pos, x0)", (LOSS,), "x0 loss: v_neg replaced by v_pos"),
    Mutant("loss-velocity-negative-from-positive", "loss.py", "neg_err = _per_sample_mean((v_neg - target).float() ** 2)",
           "neg_err = _per_sample_mean((v_pos - target).float() ** 2)", (LOSS,), "velocity loss: v_neg replaced by v_pos"),
    Mutant("loss-drop-negative-ignored", "loss.py", "per_sample = r * pos_err if self.drop_negative_term else",
           "per_sample = r * pos_err if False else", (LOSS,), "drop_negative_term does nothing"),
    Mutant("loss-adaptive-weight-floor", "loss.py", ".clamp(min=1e-5)", ".clamp(min=1e-2)", (FLOOR,),
           "the x0 weight floored at 1e-2, not the release's 1e-5"),
    Mutant("loss-negative-kl-beta-accepted", "loss.py", 'if not (0 <= kl_beta < float("inf")):', "if False:", (LOSS,),
           "a negative kl_beta accepted"),
    Mutant("loss-deviation-to-the-reference", "loss.py", "deviation = _per_sample_norm((v_theta - v_old).float()).mean()",
           "deviation = _per_sample_norm((v_theta - x0).float()).mean()", (LOSS,), "v_deviation not |v_theta - v_old|"),
    Mutant("loss-x0-norm-of-the-target", "loss.py", "x0_norm = _per_sample_norm((x_t - sigma_b * v_theta).float()).mean()",
           "x0_norm = _per_sample_norm(x0.float()).mean()", (LOSS,), "x0_norm of the sample, not of theta's prediction"),
    Mutant("advantages-global-mean", "advantages.py", "centered = rewards - means[inverse]",
           "centered = rewards - rewards.mean()", (ADV,), "the batch's mean, not the group's"),
    Mutant("advantages-no-eps", "advantages.py", "advantages = centered / (std + eps)", "advantages = centered / std",
           (ADV,), "no eps beside the std"),
    Mutant("advantages-binary-inverted", "advantages.py", "clipped = clipped.sign()",
           "clipped = -clipped.sign()", (ADV,), "binary mode: r above 0.5 for the worse samples"),
    Mutant("advantages-binary-unscaled", "advantages.py", "clipped = clipped.sign()",
           "clipped = clipped.sign() * adv_clip_max", (ADV,), "binary mode: r = 0 or 1 (not the release's map)"),
    Mutant("advantages-one-only-ones", "advantages.py", "clipped = (clipped > 0).to(clipped.dtype)",
           "clipped = torch.full_like(clipped, adv_clip_max)", (ADV,), "one_only mode gives r = 1 everywhere"),
    Mutant("advantages-negative-only-clamp", "advantages.py", "clipped = clipped.clamp(max=0.0)",
           "clipped = clipped", (ADV,), "negative_only keeps positive advantages"),
    Mutant("advantages-group-std-unbiased", "advantages.py", "index_add_(0, inverse, centered**2) / counts",
           "index_add_(0, inverse, centered**2) / (counts - 1)", (ADV,), "the group std unbiased"),
    Mutant("advantages-zero-variance-inverted", "advantages.py", "constant.double().mean().item()",
           "(~constant).double().mean().item()", (ADV,), "zero_variance_fraction counts the other groups"),
    Mutant("schedule-delayed-slope", "schedules.py", "return 0.0 if step < 75 else min(0.0075 * (step - 75), 0.999)",
           "return 0.0 if step < 75 else min(0.075 * (step - 75), 0.999)", (TIMESTEPS,), "delayed decay 10x faster"),
    Mutant("schedule-delayed-cap", "schedules.py", "return 0.0 if step < 75 else min(0.0075 * (step - 75), 0.999)",
           "return 0.0 if step < 75 else min(0.0075 * (step - 75), 0.5)", (TIMESTEPS,), "delayed decay capped at 0.5"),
    Mutant("schedule-ema-max-default", "schedules.py", "def ema_decay(step: int, max_decay: float = 0.9)",
           "def ema_decay(step: int, max_decay: float = 0.99)", (TIMESTEPS,), "EMA decay up to 0.99 by default"),
    Mutant("timesteps-no-floor", "timesteps.py", ".clamp(min=1e-3, max=1.0)", ".clamp(min=0.0, max=1.0)",
           (CONTINUOUS,), "continuous levels may reach sigma = 0"),
    Mutant("timesteps-logit-mean-ignored", "timesteps.py", "torch.sigmoid(logit_mean + logit_std *",
           "torch.sigmoid(logit_std *", (CONTINUOUS,), "logit_normal ignores its mean"),
    Mutant("timesteps-grid-with-replacement", "timesteps.py", "index = keys.argsort(dim=1)[:, :num_timesteps]",
           "index = torch.randint(len(sampler_sigmas), (num_samples, num_timesteps), generator=generator)",
           (TIMESTEPS,), "grid levels drawn with replacement"),
    Mutant("timesteps-continuous-unshifted", "timesteps.py", "return shift_sigmas(t, shift)", "return (t)",
           (TIMESTEPS,), "continuous draws not shifted"),
    Mutant("dpm-first-order", "solvers.py", "d = m0 + (0.5 / r) * (m0 - m1)", "d = m0", (SAMPLING,),
           "DPM-Solver++ without its second-order term"),
    Mutant("dpm-second-order-on-the-last-step", "solvers.py", "if previous is not None and i != last:",
           "if previous is not None:", (SAMPLING,), "DPM-Solver++ second order on the last step"),
    Mutant("unipc-first-corrector-dropped", "solvers.py", "x = base + coeff * 0.5 * (m - m0)", "x = base", (SAMPLING,),
           "UniPC's first-order corrector dropped"),
    Mutant("unipc-predictor-first-order", "solvers.py", "d = m + 0.5 * (m1 - m) / rk", "d = m", (SAMPLING,),
           "UniPC's predictor first order"),
    Mutant("solver-first-order-step", "solvers.py", "return (t / s) * x + ((1 - t) - (1 - s) * t / s) * x0",
           "return (t / s) * x + (1 - t) * x0", (SAMPLING,), "the DDIM step's x0 coefficient"),
    Mutant("unipc-order-two-on-the-last-step", "solvers.py", "order = 1 if i == last or len(history) < 2 else 2",
           "order = 1 if len(history) < 2 else 2", (SAMPLING,), "UniPC second order on the last step"),
    Mutant("old-update-keeps-theta-share", "policy.py",
           "self.old[name].mul_(decay).add_(theta.detach().float(), alpha=1 - decay)",
           "self.old[name].mul_(decay).add_(theta.detach().float(), alpha=decay)", (POLICY,),
           "old <- decay old + decay theta"),
    Mutant("ema-update-keeps-theta-share", "policy.py",
           "ema.mul_(decay).add_(theta.detach().to(ema.device, ema.dtype), alpha=1 - decay)",
           "ema.mul_(decay).add_(theta.detach().to(ema.device, ema.dtype), alpha=decay)", (POLICY,),
           "ema <- decay ema + decay theta"),
    Mutant("reference-keeps-the-adapters", "policy.py", "layer.enable_adapters(False)", "layer.enable_adapters(True)",
           (POLICY,), "the reference is the last adapter, not the base"),
    Mutant("finish-publishes-theta", "policy.py", 'if published == "ema":', "if False:", (ALONE,),
           "after training the pipeline holds theta, not the EMA it saved"),
    Mutant("lora-in-the-base-precision", "policy.py", "p.data = p.data.float()", "p.data = p.data", (BF16,),
           "the LoRA trains in bf16"),
    Mutant("combine-normalize-ignored", "rewards/combine.py", "values = values / max(self.running[name].std, 1e-8)",
           "values = values", (SCORING,), "normalize_rewards does nothing"),
    Mutant("combine-weights-ignored", "rewards/combine.py", "total = total + weight * values",
           "total = total + values", (SCORING, "tests/test_rewards.py"), "reward weights ignored"),
    Mutant("running-std-not-welford", "rewards/combine.py", "self.m2 += delta * (value - self.mean)",
           "self.m2 += delta * delta", (SCORING,), "Welford's update with the old mean twice"),
    Mutant("ema-never-updated", "engine.py", "                self.policy.update_ema(decay)",
           "                pass", (SAVED, ALONE), "the EMA never follows theta"),
    Mutant("crd-unguided-reference", "objectives/nft.py", "                                            self.reference_guidance_scale)",
           "                                            1.0)", ("tests/test_cfg_free_mitigations.py",),
           "the KL's reference stays unguided whatever kl_reference_guidance_scale says"),
    Mutant("crd-adaptive-kl-flat", "loss.py", "return ((floor + r * (self.kl_beta - floor)) * per_sample_kl).mean()",
           "return (self.kl_beta * per_sample_kl).mean()", (LOSS,), "the reward-adaptive KL ignores r"),
    Mutant("normguard-no-margin", "loss.py", "penalty = (ratio - 1 - self.norm_guard_margin).clamp(min=0).mean()",
           "penalty = (ratio - 1).clamp(min=0).mean()", (LOSS,), "the norm guard ignores its margin"),
    Mutant("grpo-std-option-ignored", "objectives/flow_grpo.py", "advantage_std=config.advantage_std, ", "",
           (GRPO_CONFIG,), "Flow-GRPO's config never reaches its objective's advantage std"),
    Mutant("grpo-ema-every-batch", "objectives/flow_grpo.py",
           "if (micro_step + 1) % self.levels or (optimizer_step + 1) % self.ema_interval:",
           "if (micro_step + 1) % self.levels:", (GRPO_EMA,), "Flow-GRPO's EMA after every batch, not every 8 steps"),
    Mutant("grpo-zero-advantage-kept", "objectives/flow_grpo.py", "        if not self.drop_zero_advantage:",
           "        if True:", (GRPO_BATCHES,), "Flow-GRPO trains on samples of advantage 0"),
    Mutant("grpo-eval-without-cfg", "objectives/flow_grpo.py",
           "return config.grpo_guidance_scale if scale is None else scale", "return 1.0 if scale is None else scale",
           ("tests/test_flow_grpo.py::test_flow_grpo_evaluates_and_publishes_with_its_training_cfg_unless_told",),
           "Flow-GRPO evaluates CFG-free by default"),
    Mutant("nonfinite-not-gathered", "engine.py",
           "if bool(accelerator.gather(torch.tensor([float(ok)], device=accelerator.device)).min() > 0):", "if True:",
           (NONFINITE,), "a non-finite step is taken"),
    Mutant("nonfinite-loss-unchecked", "engine.py", "finite &= bool(torch.isfinite(out.loss.detach()))",
           "finite &= True", (INF_LOSS,), "a non-finite loss is not noticed"),
    Mutant("gradients-never-cleared", "engine.py", "self.optimizer.zero_grad(set_to_none=True)", "pass",
           (WINDOWS,), "gradients accumulate across optimizer steps"),
    Mutant("old-decay-counts-iterations", "trainer.py", 'metrics["old_policy_decay"] = old_policy_decay(self.optimizer_step,',
           'metrics["old_policy_decay"] = old_policy_decay(self.global_step,', (OLD_DECAY,),
           "the old policy's decay counts iterations, not optimizer steps"),
    Mutant("old-never-updated", "trainer.py", 'self.policy.update_old(metrics["old_policy_decay"])', "pass",
           (OLD_DECAY,), "the old policy never follows theta"),
    Mutant("nonfinite-lora-saved", "publisher.py",
           "bad = [name for name, tensor in weights.items() if not torch.isfinite(tensor).all()]", "bad = []",
           (NONFINITE,), "a non-finite LoRA is saved"),
    Mutant("rotation-keeps-one-more", "checkpoints/folder.py", "for old in list_checkpoints(output_dir)[:-total_limit]:",
           "for old in list_checkpoints(output_dir)[:-total_limit - 1]:", (ROTATION,), "one checkpoint too many kept"),
    Mutant("latest-counts-incomplete-folders", "checkpoints/folder.py",
           "found = [(step, name) for step, name in found if os.path.isfile(os.path.join(output_dir, name, STATE_FILE))]",
           "found = found", (ROTATION,), "a half-written checkpoint counts as the latest"),
    Mutant("nft-kl-reference-skipped", "objectives/nft.py", "wants_reference = self.loss.needs_reference or monitor",
           "wants_reference = monitor", (ROLLOUTS,), "kl_beta > 0 trains without the KL term"),
    Mutant("pair-reference-is-old", "frozen_pair.py", "[OLD] * rows + [REFERENCE] * rows", "[OLD] * rows + [OLD] * rows",
           (PAIR,), "the pair's reference rows take the old adapter"),
    Mutant("pair-probe-accepts-anything", "frozen_pair.py", "if (change[1:] > LEAK * change.max()).any():",
           "if False:", (PAIR,), "the pair is used on a model whose rows are not samples"),
    Mutant("pair-halves-swapped", "frozen_pair.py", "return v[:rows], v[rows:]", "return v[rows:], v[:rows]",
           (PAIR,), "the pair hands back the reference as the old policy's prediction"),
    Mutant("option-advantage-std-ignored", "objectives/nft.py", "advantage_std=config.advantage_std,",
           'advantage_std="global",', (OPTIONS,), "--advantage_std never reaches the objective"),
    Mutant("option-loss-weighting-ignored", "objectives/nft.py", "weighting=config.loss_weighting,",
           'weighting="x0_adaptive",', (OPTIONS,), "--loss_weighting never reaches the loss"),
    Mutant("option-sampler-ignored", "objectives/nft.py", "sampling_sigmas=sampling_sigmas, sampler=config.sampler,",
           'sampling_sigmas=sampling_sigmas, sampler="dpm_solver",', (OPTIONS,), "--sampler never reaches the rollouts"),
    Mutant("serve-in-flight-unbounded", "rewards/serve.py", "            if self.in_flight > self.max_bytes_in_flight:",
           "            if False:", (IN_FLIGHT,), "the bytes of concurrent requests unbounded"),
    Mutant("wire-16-bit-png-clipped", "rewards/wire.py", "        if depth > 8:", "        if False:", (SIXTEEN_BIT,),
           "a 16-bit PNG accepted and clipped"),
    Mutant("remote-timeout-per-read", "rewards/remote.py", "        worker.join(self.timeout)", "        worker.join()",
           (DEADLINE,), "the client's timeout bounds each read, not the request"),
    Mutant("output-dir-not-locked", "checkpoints/checkpointer.py", "            lock_output_dir(config.output_dir)",
           "            pass", (LOCK,), "two runs may share a folder at once"),
    Mutant("plan-levels-ignored", "plan.py", "micro = math.ceil(local / args.train_batch_size) * levels",
           "micro = math.ceil(local / args.train_batch_size)", (PLAN,), "micro-batches not counted per level"),
    Mutant("credit-first-process-share", "credit.py", "credit[plan.images_of(accelerator.process_index)]",
           "credit[plan.images_of(0)]", (TWO_PROCESSES,), "every process trains with the first one's credit"),
]

GROUPS = {"survivors": SURVIVORS, "caught_before": CAUGHT_BEFORE, "wider": WIDER}
MUTANTS = SURVIVORS + CAUGHT_BEFORE + WIDER
