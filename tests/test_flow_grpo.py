"""Flow-GRPO beside NFT: the SDE's log-probabilities, PPO's clip, the ratio of the first update, and the loop on the
tiny SD3 and FLUX pipelines."""

import math

import pytest
import torch
from diffusers import FluxPipeline

from diffusers_nft import FlowGRPOTrainer, NFTTrainer
from diffusers_nft.grpo import clipped_surrogate, sde_rollout, sde_std, sde_step
from diffusers_nft.metrics import loss_key
from diffusers_nft.objectives.base import Objective

from conftest import PROMPTS, SwitchPolicy, tiny_config


def test_a_transitions_log_probability_is_the_closed_form_gaussian():
    g = torch.Generator().manual_seed(0)
    x, v, prev = (torch.randn(3, 4, 5, 5, generator=g) for _ in range(3))
    sigma, sigma_next, a = torch.tensor([0.9, 0.5, 0.2]), torch.tensor([0.8, 0.3, 0.0]), 0.7
    step = sde_step(x, v, sigma, sigma_next, noise_level=a, sigma_max=0.95, prev_sample=prev)
    s, dt = sigma.view(-1, 1, 1, 1), (sigma_next - sigma).view(-1, 1, 1, 1)
    std = a * (s / (1 - s)).sqrt()
    mean = x + (v + std**2 / (2 * s) * (x + (1 - s) * v)) * dt  # the reverse SDE's drift
    expected = torch.distributions.Normal(mean, std * (-dt).sqrt()).log_prob(prev).flatten(1).mean(1)
    torch.testing.assert_close(step.log_prob, expected)
    torch.testing.assert_close(step.mean, mean)
    # at sigma = 1 the std divides by the grid's largest level below 1 instead of 0
    assert sde_std(torch.tensor(1.0), 0.95, a) == pytest.approx(a * math.sqrt(1 / 0.05))


def test_the_sde_keeps_the_odes_marginals():
    """Gaussian data N(0, c^2) has a closed-form velocity; the SDE's samples keep the flow's variance at each level."""
    c = 0.5

    def velocity(x, sigma):
        s = sigma.view(-1, 1)
        var = (1 - s) ** 2 * c**2 + s**2
        return (s - (1 - s) * c**2) / var * x  # E[eps | x] - E[x0 | x]

    sigmas = torch.linspace(1, 0, 401)[:-1].double()
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(20000, 1, generator=g)
    states, log_probs = sde_rollout(velocity, sigmas, noise, lambda k: torch.randn(20000, 1, generator=g),
                                    noise_level=0.7)
    for k in (100, 200, 300, 400):
        s = float(sigmas[k])
        assert states[:, k].var().item() == pytest.approx((1 - s) ** 2 * c**2 + s**2, rel=0.04)
    assert log_probs.shape == (20000, 400) and torch.isfinite(log_probs).all()


def test_the_clipped_surrogates_gradient_vanishes_outside_the_clip_range():
    clip = 1e-4
    old = torch.zeros(4)
    # ratios: inside the range, above it, below it, above it with a negative advantage (that side is not clipped)
    log_prob = torch.log(torch.tensor([1.00005, 1.01, 0.99, 1.01])).requires_grad_()
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, ratio = clipped_surrogate(log_prob, old, advantages, clip)
    loss.backward()
    grad = log_prob.grad
    assert grad[1] == 0 and grad[2] == 0  # pushed past the range in the advantage's direction: no gradient
    torch.testing.assert_close(grad[0], -advantages[0] * ratio[0].detach() / 4)
    torch.testing.assert_close(grad[3], -advantages[3] * ratio[3].detach() / 4)


def _first_micro_step(trainer):
    prompt_index = trainer.prompt_sampler.next(trainer.args.prompts_per_iteration)
    rollouts = trainer.collector.collect(prompt_index, iteration=0, objective=trainer.objective,
                                         timings={"sampling": 0.0, "reward": 0.0})
    scores = rollouts.rewards["jpeg_incompressibility"]
    weights, _ = trainer.objective.credit(scores, rollouts.group_ids)
    batches = trainer.objective.micro_batches(rollouts, weights, batch_size=trainer.args.train_batch_size,
                                              levels=trainer.plan.levels_per_image, generator=torch.Generator())
    return rollouts, weights, next(batches)


def test_the_ratio_is_one_on_the_first_update_and_the_rollouts_hold_the_trajectory(tiny_pipeline, tmp_path):
    config = tiny_config(tmp_path, train_batch_size=8, optimizer_steps_per_iteration=1)
    trainer = NFTTrainer(tiny_pipeline, "jpeg_incompressibility", config, PROMPTS, objective="flow_grpo")
    rollouts, weights, batch = _first_micro_step(trainer)
    steps = trainer.args.num_sampling_steps
    assert rollouts.states.shape == (8, steps + 1, *trainer.latent_shape) and rollouts.log_probs.shape == (8, steps)
    assert torch.equal(rollouts.states[:, 0].float(), rollouts.states[:, 0])
    assert torch.equal(rollouts.latents, rollouts.states[:, -1]) and rollouts.uncond is not None
    # the advantages are group-normalised: mean 0 within each prompt's group
    for group in rollouts.group_ids.unique():
        assert abs(weights[rollouts.group_ids == group].mean().item()) < 1e-5
    out = trainer.objective(**batch)
    assert out.ratio.item() == pytest.approx(1.0, abs=1e-5) and out.clip_fraction.item() == 0
    assert out.kl.item() == pytest.approx(0.0, abs=1e-10)  # theta is still the reference
    out.loss.backward()
    grads = [p.grad for p in trainer.policy.trainable_parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_flow_grpo_trains_the_tiny_sd3_and_its_lora_moves_away_from_the_base(tiny_pipeline, tmp_path):
    # 3 optimizer steps per iteration: the later micro-batches see a policy that moved since it sampled
    config = tiny_config(tmp_path, max_steps=3, learning_rate=3e-2, objective="flow_grpo",
                         optimizer_steps_per_iteration=3, train_batch_size=8, grpo_ema_interval=1)
    trainer = FlowGRPOTrainer(tiny_pipeline, "jpeg_incompressibility", config, PROMPTS)
    assert "Flow-GRPO" in trainer.describe() and "SDE steps (a = 0.7), CFG 4.5" in trainer.describe()
    assert "3 recorded transitions per image" in trainer.describe()
    history = trainer.train()
    assert len(history) == 3
    for row in history:
        assert math.isfinite(row[loss_key("total")]) and row["grpo/clip_fraction"] >= 0
    assert history[-1]["grpo/clip_fraction"] > 0  # the policy moved past the 1e-4 clip range
    assert history[-1][loss_key("kl")] > 0
    saved = (tmp_path / "pytorch_lora_weights.safetensors")
    assert saved.is_file()
    deltas = [p.detach().abs().max() for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert max(deltas) > 0


def test_flow_grpo_runs_the_tiny_flux_loop(tmp_path):
    from tiny_pipelines import build_tiny_flux_pipeline

    pipe = build_tiny_flux_pipeline(seed=0, guidance_embeds=True)
    pipe.set_progress_bar_config(disable=True)
    config = tiny_config(tmp_path, max_steps=2, objective="flow_grpo", grpo_guidance_scale=1.0)
    trainer = NFTTrainer(pipe, "jpeg_incompressibility", config, PROMPTS)
    history = trainer.train()
    assert len(history) == 2 and all(math.isfinite(row[loss_key("policy")]) for row in history)
    assert "no CFG" in trainer.describe()
    assert isinstance(pipe, FluxPipeline)
    # without CFG no empty prompt is encoded, so each velocity is one forward, not an unguided pair
    assert "uncond" not in trainer.objective.needs and trainer.collector._uncond is None


@pytest.mark.slow  # long: in CI (--runslow), not in the default set
def test_flow_grpo_resumes_exactly_from_its_checkpoint(tiny_pipeline_dir, tmp_path):
    from conftest import max_diff, run_tiny

    kwargs = dict(objective="flow_grpo", optimizer_steps_per_iteration=3, train_batch_size=8, learning_rate=3e-2)

    def run(output_dir, resume=None, stop_after=None):
        return run_tiny(tiny_pipeline_dir, output_dir, 4, resume=resume, stop_after=stop_after, **kwargs)

    straight = run(tmp_path / "straight")
    run(tmp_path / "split", stop_after=2)
    resumed = run(tmp_path / "split", resume="latest")
    assert resumed.global_step == 4
    for which in ("default", "ema"):
        assert max_diff(straight.policy.state_dict(which), resumed.policy.state_dict(which)) <= 1e-6, which
    assert [m["grpo/clip_fraction"] for m in straight.history] == [m["grpo/clip_fraction"] for m in resumed.history]


class _LinearFamily:
    """A 'transformer' whose velocity is `w * x`, with `w` the policy in use (theta 1.5, the reference 1.0)."""

    def __init__(self):
        self.active = "default"

    def predict_velocity(self, x, sigma, cond):
        return (1.0 if self.active == "reference" else 1.5) * x


def _objective(**kwargs):
    from diffusers_nft.objectives.flow_grpo import FlowGRPOObjective

    family = _LinearFamily()
    return FlowGRPOObjective(family=family, policy=SwitchPolicy(family), sampling_sigmas=torch.tensor([1.0, 0.8, 0.5, 0.0]),
                             guidance_scale=1.0, **kwargs)


def test_flow_grpos_advantages_use_the_global_or_each_groups_std_and_are_clipped():
    # The reference: (R - group mean) / (std + 1e-4), numpy's biased std of the whole batch (`global_std`, every SD3
    # configuration) or of the group, then clipped at 5.
    rewards = torch.tensor([1.0, 2.0, 0.0, 30.0, 5.0, 5.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    std = rewards.double().std(unbiased=False).item() + 1e-4  # 10.383
    advantages, metrics = _objective().credit(rewards, groups)
    assert advantages.tolist() == pytest.approx([-0.5 / std, 0.5 / std, -15 / std, 15 / std, 0, 0], rel=1e-6)
    advantages, metrics = _objective(adv_clip_max=1.0).credit(rewards, groups)  # group 1's +-1.44 clipped
    assert advantages.tolist() == pytest.approx([-0.5 / std, 0.5 / std, -1.0, 1.0, 0, 0], rel=1e-6)
    advantages, metrics = _objective(advantage_std="group", adv_clip_max=0.9).credit(rewards, groups)
    assert advantages.tolist() == pytest.approx([-0.9, 0.9, -0.9, 0.9, 0.0, 0.0])
    advantages, metrics = _objective(advantage_std="group").credit(rewards, groups)
    unclipped = 0.5 / (0.5 + 1e-4)  # group 0: mean 1.5, std 0.5; group 1: mean 15, std 15 -> +-15 / 15.0001
    assert advantages.tolist() == pytest.approx([-unclipped, unclipped, -15 / 15.0001, 15 / 15.0001, 0, 0], rel=1e-6)
    assert metrics["zero_variance_groups"] == pytest.approx(1 / 3)


def test_flow_grpos_kl_and_clip_fraction_are_the_release_formulas():
    # At step 1 (sigma 0.8 -> 0.5, a = 0.7): the KL on the transition means is |mu_theta - mu_ref|^2 / (2 std^2),
    # std = a sqrt(s / (1 - s)), with the release's mean x (1 + std^2 dt / (2 s)) + v (1 + std^2 (1 - s) / (2 s)) dt.
    objective = _objective(kl_beta=0.04, clip_range=0.2)
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]])
    prev = torch.tensor([[0.3, -1.0], [0.2, 2.0], [-0.5, 0.0]])
    s, dt, a = 0.8, 0.5 - 0.8, 0.7
    std = a * math.sqrt(s / (1 - s))

    def mean(w):
        return x * (1 + std**2 / (2 * s) * dt) + w * x * (1 + std**2 * (1 - s) / (2 * s)) * dt

    kl = ((mean(1.5) - mean(1.0)) ** 2).mean(dim=1) / (2 * std**2)
    scale = std * math.sqrt(-dt)
    log_prob = (-((prev - mean(1.5)) ** 2) / (2 * scale**2) - math.log(scale) - 0.5 * math.log(2 * math.pi)).mean(1)
    old_log_prob = log_prob - torch.tensor([0.0, 0.5, 0.1])  # ratios 1, e^0.5, e^0.1: one of three outside 1 +- 0.2
    out = objective(x=x, step=1, prev_sample=prev, old_log_prob=old_log_prob,
                    advantages=torch.tensor([1.0, -1.0, 1.0]), cond={})
    assert out.kl.item() == pytest.approx(kl.mean().item(), rel=1e-5)
    assert out.clip_fraction.item() == pytest.approx(1 / 3)
    assert out.ratio.item() == pytest.approx((1 + math.exp(0.5) + math.exp(0.1)) / 3, rel=1e-5)
    # PPO: max(-A ratio, -A clip(ratio)) = [-1, e^0.5, -e^0.1] for A = [1, -1, 1]; plus kl_beta times the KL
    policy = (-1 + math.exp(0.5) - math.exp(0.1)) / 3
    assert out.loss.item() == pytest.approx(policy + 0.04 * kl.mean().item(), rel=1e-5)


def test_flow_grpo_config_reaches_its_objective_with_the_reference_defaults():
    from diffusers_nft import FlowGRPOConfig
    from diffusers_nft.objectives.flow_grpo import FlowGRPOObjective

    family = _LinearFamily()
    sigmas = torch.linspace(1, 0, 11)

    def objective(**values):
        config = FlowGRPOConfig(output_dir="unused", **values)
        return config, FlowGRPOObjective.from_config(config, family=family, policy=SwitchPolicy(family),
                                                     sampling_sigmas=sigmas)

    config, reference = objective()
    assert config.optimizer_steps_per_iteration == 2 and config.timestep_fraction == 0.99
    assert (reference.advantage_std, reference.drop_zero_advantage, reference.ema_interval) == ("global", True, 8)
    assert reference.levels == 9 and (reference.clip_range, reference.kl_beta, reference.noise_level) == (1e-4, 0.04, 0.7)
    _, options = objective(advantage_std="group", grpo_drop_zero_advantage=False, grpo_ema_interval=1)
    assert (options.advantage_std, options.drop_zero_advantage, options.ema_interval) == ("group", False, 1)


def test_zero_advantage_samples_are_left_out_and_the_batch_count_kept():
    objective = _objective()
    credit = torch.tensor([0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 2.0, 0.0])  # 3 of 8 non-zero; 4 batches of 2 without the filter

    def batches(values, **kwargs):
        return [b.tolist() for b in objective.sample_batches(values, 2, torch.Generator().manual_seed(0), **kwargs)]

    kept = batches(credit)
    # the batch count stays 4; the 3 kept samples plus 1 zero-advantage one (the reference tops up to a multiple of
    # the batch count) are spread 1 per batch
    assert len(kept) == 4 and all(len(b) == 1 for b in kept)
    flat = [i for b in kept for i in b]
    assert {1, 3, 6} < set(flat) and sum(credit[i] == 0 for i in flat) == 1
    objective.drop_zero_advantage = False
    every = batches(credit)
    assert [len(b) for b in every] == [2, 2, 2, 2] and sorted(i for b in every for i in b) == list(range(8))
    objective.drop_zero_advantage = True
    assert batches(credit.abs() + 1) == every  # nothing to leave out: the same batches as without the filter
    assert sorted(i for b in batches(torch.zeros(8)) for i in b) == list(range(8))  # all zero: train on all (KL)


def test_the_ema_updates_after_each_sample_batch_on_the_reference_cadence():
    # The reference's loop: per sample batch, every transition; an optimizer step every 2 batches; after each batch
    # `ema.step(params, global_step)`, which updates when (global_step + 1) % 8 == 0 with min((1 + s) / (10 + s), 0.9).
    objective = _objective(levels=3, ema_interval=8)
    expected, ours, global_step, optimizer_step = [], [], 0, 0
    for iteration in range(6):
        for batch in range(4):
            for j in range(3):
                micro = batch * 3 + j
                stepped = j == 2 and batch % 2 == 1
                optimizer_step += stepped
                decay = objective.ema_decay_after(micro, optimizer_step, stepped, 0.9)
                if decay is not None:
                    ours.append((iteration, batch, decay))
            global_step += batch % 2 == 1
            if (global_step + 1) % 8 == 0:
                expected.append((iteration, batch, min((1 + global_step) / (10 + global_step), 0.9)))
    assert ours == expected and len(expected) == 2  # batches 2 and 3 of iteration 3 (global step 7)
    nft = Objective()  # DiffusionNFT's: after every optimizer step
    assert [nft.ema_decay_after(m, 5, m == 2, 0.9) for m in range(3)] == [None, None, 6 / 15]


def test_flow_grpo_evaluates_and_publishes_with_its_training_cfg_unless_told(tiny_pipeline, tmp_path):
    # The reference evaluates with its eval_guidance_scale (4.5, the training CFG); NFT's release CFG-free.
    config = tiny_config(tmp_path / "grpo", objective="flow_grpo", grpo_guidance_scale=3.0)
    trainer = FlowGRPOTrainer(tiny_pipeline, "jpeg_incompressibility", config, PROMPTS[:2])
    assert trainer.images.call_kwargs()["guidance_scale"] == 3.0
    assert trainer._card_inputs(None, None).call_kwargs["guidance_scale"] == 3.0
    images, prompts, _ = trainer.images.judged(trainer.train_dataset)
    with_cfg = trainer.generate(prompts, list(range(len(prompts))), weights="ema", guidance_scale=3.0)
    without = trainer.generate(prompts, list(range(len(prompts))), weights="ema", guidance_scale=1.0)
    assert torch.equal(images, with_cfg) and (images - without).abs().max() > 1e-3
    from diffusers_nft.objectives import FlowGRPOObjective, NFTObjective

    told = tiny_config(tmp_path / "told", objective="flow_grpo", grpo_guidance_scale=3.0, grpo_eval_guidance_scale=1.0)
    assert FlowGRPOObjective.evaluation_guidance(told) == 1.0
    assert NFTObjective.evaluation_guidance(tiny_config(tmp_path / "nft", guidance_scale=2.0)) == 1.0
