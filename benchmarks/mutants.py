"""The one-line bugs `mutation_check.py` applies, each with the tests that must catch it.

A mutant names a file under `diffusers_nft/`, a fragment that occurs there exactly once, its replacement, and the
tests (pytest node ids) that should fail. The first group are the bugs an audit found surviving the suite (each now
has a test that catches it); the rest were caught already and stay listed so that they stay caught.
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
GRPO_ADV = "tests/test_flow_grpo.py::test_flow_grpos_advantages_use_each_groups_own_std_and_are_clipped"
GRPO_KL = "tests/test_flow_grpo.py::test_flow_grpos_kl_and_clip_fraction_are_the_release_formulas"
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
    Mutant("nft-fresh-noise-in-loss", "objectives/nft.py", "x0=x0, noise=noise, r=r)",
           "x0=x0, noise=torch.randn_like(noise), r=r)", (ROLLOUTS,), "the loss sees noise other than x_t's"),
    Mutant("collect-samples-from-theta", "collect.py", "self.policy.using(objective.sampling_policy)",
           'self.policy.using("default")', (ROLLOUTS,), "rollouts from theta, not the old policy"),
    Mutant("nft-reference-is-old", "objectives/nft.py", "with self.policy.using(REFERENCE):",
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
    Mutant("grpo-global-std", "objectives/flow_grpo.py", "std_scope=self.advantage_std", 'std_scope="global"',
           (GRPO_ADV,), "Flow-GRPO divides by the batch's std"),
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
    Mutant("serve-chunked-body-unbounded", "rewards/serve.py", "            if size > self.max_body_bytes:",
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
    Mutant("server-default-timeout-x10", "rewards/serve.py", "body_timeout=30.0)", "body_timeout=300.0)",
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
    Mutant("loss-kl-unweighted", "loss.py", "loss = loss + self.kl_beta * kl", "loss = loss + kl", (LOSS,),
           "KL without kl_beta"),
    Mutant("advantages-unbiased-std", "advantages.py", "std = rewards.std(unbiased=False)", "std = rewards.std()",
           (ADV,), "the release's biased std replaced"),
    Mutant("advantages-r-scale", "advantages.py", "return 0.5 + 0.5 * advantages.clamp(low, high) / adv_clip_max",
           "return 0.5 + advantages.clamp(low, high) / adv_clip_max", (ADV,), "r = 0.5 + clip(A) / c"),
    Mutant("advantages-positive-only-clamp", "advantages.py", 'low = 0.0 if mode == "positive_only" else -adv_clip_max',
           "low = -adv_clip_max", (ADV,), "positive_only keeps negative advantages"),
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

MUTANTS = SURVIVORS + CAUGHT_BEFORE
