"""Flow-GRPO's objective (arXiv 2505.05470): SDE samples from the current policy with CFG, recording every
transition and its log-probability; PPO's clipped surrogate on the recorded transitions, with a KL to the reference
on the transitions' means. The single-step maths are in `diffusers_nft.grpo`."""

import math
from dataclasses import dataclass
from typing import Dict

import torch

from ..config import FlowGRPOConfig
from ..grpo import clipped_surrogate, sde_rollout, sde_step
from ..guidance import guided_velocity
from ..advantages import rewards_to_optimality
from ..metrics import loss_key
from ..monitors import velocity_stats
from ..pipelines import select_conditioning
from ..policy import REFERENCE, TRAINED
from ..schedules import ema_decay
from ..timesteps import num_train_timesteps
from .base import Objective, Sample, cfg_words


@dataclass
class FlowGRPOOutput:
    """One Flow-GRPO micro-step: `loss = policy_loss + kl_beta * kl`, with PPO's diagnostics (all but `loss`
    detached)."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    kl: torch.Tensor
    ratio: torch.Tensor
    clip_fraction: torch.Tensor
    approx_kl: torch.Tensor


class FlowGRPOObjective(Objective):
    """Flow-GRPO: PPO on the transitions of an SDE sampler, with group-normalised advantages.

    Collection samples with the current policy (theta) and CFG, recording every state and its log-probability;
    the first `levels` transitions of each trajectory are trained (the release's timestep fraction), every
    transition of a micro-batch's samples in turn, so that an optimizer step accumulates all the transitions of its
    samples (the reference's geometry; `FlowGRPOConfig` takes 2 optimizer steps per iteration, as it does). Samples
    whose advantage is exactly 0 are left out (the reference's filter). The ratio of the first update is 1: theta
    has not moved since it sampled.

    Args:
        family: The pipeline family.
        policy: The `NFTPolicy` (theta, and the reference for the KL).
        sampling_sigmas: The pipeline's grid (the SDE runs on it).
        noise_level: The SDE's `a` (the release: 0.7).
        clip_range: PPO's clip (the release: 1e-4).
        kl_beta: Weight of the KL to the reference on the transitions' means (the release: 0.04); 0 skips the
            reference forward.
        guidance_scale: CFG during sampling and training (the release: 4.5).
        adv_clip_max: Clip of the advantages (the release: 5).
        advantage_std: `"global"` (the std of the whole iteration's rewards: every SD3 configuration of the
            reference sets `global_std`) or `"group"` (the prompt's group).
        drop_zero_advantage: Leave out the samples whose advantage is 0 (the reference), keeping the number of
            micro-batches: the kept samples are spread evenly over them, topped up with left-out ones to fill them.
        levels: Transitions trained per sample (the plan's), so that `ema_decay_after` knows where a sample
            batch ends.
        ema_interval: The EMA of theta updates after each sample batch (all its transitions) when
            `(optimizer step + 1) % ema_interval == 0` (the reference: 8); 1 updates after every batch.
    """

    name = "flow_grpo"
    config_class = FlowGRPOConfig
    title, short = "Flow-GRPO", "Flow-GRPO"
    paper, url = "arXiv 2505.05470", "https://arxiv.org/abs/2505.05470"
    about = ("Flow-GRPO is online reinforcement learning on the *reverse* process: each iteration samples images with "
             "an SDE that has the ODE's marginals, with classifier-free guidance, records every denoising transition "
             "and its Gaussian log-probability, and trains PPO's clipped surrogate on the transitions with "
             "group-normalised advantages and a KL to the base model.")
    cfg_limit = ("It was trained with CFG (see `grpo_guidance_scale` below) and is used with it: the images and the "
                 "call on this card use the CFG of the run's evaluations (`grpo_eval_guidance_scale`, by default the "
                 "training one, as the reference evaluates).")
    bibtex = ("@article{liu2025flowgrpo,\n"
              "  title   = {Flow-GRPO: Training Flow Matching Models via Online RL},\n"
              "  author  = {Liu, Jie and others},\n"
              "  journal = {arXiv preprint arXiv:2505.05470},\n"
              "  year    = {2025}\n"
              "}")
    card_settings = ("grpo_noise_level", "grpo_clip_range", "grpo_kl_beta", "grpo_guidance_scale",
                     "grpo_eval_guidance_scale", "timestep_fraction")
    trained_on = "recorded transition"
    needs = ("states", "log_probs", "cond", "rewards")
    sampling_policy = TRAINED

    def __init__(self, *, family, policy, sampling_sigmas: torch.Tensor, noise_level: float = 0.7,
                 clip_range: float = 1e-4, kl_beta: float = 0.04, guidance_scale: float = 4.5,
                 adv_clip_max: float = 5.0, advantage_std: str = "global", drop_zero_advantage: bool = True,
                 levels: int = 1, ema_interval: int = 8):
        super().__init__()
        self.family, self.policy, self.sampling_sigmas = family, policy, sampling_sigmas
        self.noise_level, self.clip_range, self.kl_beta = noise_level, clip_range, kl_beta
        self.guidance_scale, self.adv_clip_max, self.advantage_std = guidance_scale, adv_clip_max, advantage_std
        self.drop_zero_advantage, self.levels, self.ema_interval = drop_zero_advantage, levels, ema_interval
        self.grid = [float(s) for s in sampling_sigmas]
        if guidance_scale > 1:  # CFG in training needs the empty prompt's conditioning
            self.needs = self.needs + ("uncond",)

    @classmethod
    def from_config(cls, config, *, family, policy, sampling_sigmas):
        return cls(family=family, policy=policy, sampling_sigmas=sampling_sigmas, noise_level=config.grpo_noise_level,
                   clip_range=config.grpo_clip_range, kl_beta=config.grpo_kl_beta,
                   guidance_scale=config.grpo_guidance_scale, adv_clip_max=config.adv_clip_max,
                   advantage_std=config.advantage_std, drop_zero_advantage=config.grpo_drop_zero_advantage,
                   levels=num_train_timesteps(config.num_sampling_steps, config.timestep_fraction),
                   ema_interval=config.grpo_ema_interval)

    @classmethod
    def evaluation_guidance(cls, config) -> float:
        """`grpo_eval_guidance_scale`, else the training CFG (the reference evaluates with its `eval_guidance_scale`,
        4.5 in its CFG configurations and 1 in its CFG-free ones)."""
        scale = config.grpo_eval_guidance_scale
        return config.grpo_guidance_scale if scale is None else scale

    @classmethod
    def sampling_words(cls, config) -> str:
        return (f"{config.num_sampling_steps} SDE steps (a = {config.grpo_noise_level:g}), "
                f"{cfg_words(config.grpo_guidance_scale)}")

    def sample(self, velocity, noise, step_noise) -> Sample:
        states, log_probs = sde_rollout(velocity, self.sampling_sigmas, noise, step_noise, noise_level=self.noise_level)
        return Sample(latents=states[:, -1].to(noise.dtype), states=states, log_probs=log_probs)

    def credit(self, rewards, group_ids):
        """`(R - group mean) / (std + 1e-4)`, clipped at `adv_clip_max`."""
        optimality = rewards_to_optimality(rewards, group_ids, self.adv_clip_max, std_scope=self.advantage_std)
        advantages = optimality.advantages.clamp(-self.adv_clip_max, self.adv_clip_max)
        return advantages, {"advantages/abs_mean": advantages.abs().mean().item(),
                            "zero_variance_groups": optimality.zero_variance_fraction}

    def micro_batches(self, rollouts, credit, *, batch_size, levels, generator):
        """The first `levels` recorded transitions of each trajectory, for micro-batches in a random order."""
        device = rollouts.states.device
        for index in self.sample_batches(credit, batch_size, generator):
            on_device = index.to(device)
            cond = select_conditioning(rollouts.cond, rollouts.row_of_image[index])
            uncond = rollouts.select_uncond(len(index))
            for j in range(levels):
                yield dict(x=rollouts.states[on_device, j], step=j, prev_sample=rollouts.states[on_device, j + 1],
                           old_log_prob=rollouts.log_probs[on_device, j], advantages=credit[index].to(device),
                           cond=cond, uncond=uncond)

    def sample_batches(self, credit: torch.Tensor, batch_size: int, generator: torch.Generator):
        """The sample indices of each micro-batch, in a random order: `ceil(n / batch_size)` batches, of
        `batch_size` samples without the filter; with it, the samples of non-zero advantage (topped up with
        zero-advantage ones to a multiple of the batch count, as the reference does) split evenly over them."""
        n = len(credit)
        order = torch.randperm(n, generator=generator)
        count = math.ceil(n / batch_size)
        if not self.drop_zero_advantage:
            return [order[lo : lo + batch_size] for lo in range(0, n, batch_size)]
        zero = credit[order] == 0
        kept, left_out = order[~zero], order[zero]
        if not len(kept):  # every advantage is 0: the surrogate has no gradient, the KL still trains
            kept = order
        kept = torch.cat([kept, left_out[: -len(kept) % count]])  # a random few of the left-out, to fill evenly
        return list(kept.tensor_split(count))

    def ema_decay_after(self, micro_step: int, optimizer_step: int, stepped: bool, max_decay: float):
        """After each sample batch (its `levels` transitions), when `(optimizer_step + 1) % ema_interval == 0`:
        the reference's `EMAModuleWrapper.step(params, global_step)` call and rule."""
        if (micro_step + 1) % self.levels or (optimizer_step + 1) % self.ema_interval:
            return None
        return ema_decay(optimizer_step, max_decay)

    def _velocity(self, x, sigma, cond, uncond):
        return guided_velocity(self.family.predict_velocity, x, sigma, cond, uncond, self.guidance_scale)

    def _step(self, x, velocity, j, prev_sample):
        return sde_step(x, velocity, self.grid[j], self.grid[j + 1], noise_level=self.noise_level,
                        sigma_max=self.grid[1], prev_sample=prev_sample)

    def __call__(self, *, x, step, prev_sample, old_log_prob, advantages, cond, uncond=None,
                 monitor: bool = False) -> FlowGRPOOutput:
        """Theta's log-probability of the recorded transition, the clipped surrogate, and the KL on the means."""
        sigma = torch.full((len(x),), self.grid[step], dtype=torch.float32, device=x.device)
        v_theta = self._velocity(x, sigma, cond, uncond)
        current = self._step(x, v_theta, step, prev_sample)
        policy_loss, ratio = clipped_surrogate(current.log_prob, old_log_prob, advantages, self.clip_range)
        kl = torch.zeros((), device=x.device)
        if self.kl_beta > 0 or monitor:
            with torch.no_grad(), self.policy.using(REFERENCE):
                v_ref = self._velocity(x, sigma, cond, uncond)
            reference = self._step(x, v_ref, step, prev_sample)
            per_sample = (current.mean - reference.mean).pow(2).flatten(1).mean(1) / (2 * current.std.flatten() ** 2)
            kl = per_sample.mean() if self.kl_beta > 0 else kl
            if monitor:
                self.monitors = velocity_stats(v_theta, v_ref)
        loss = policy_loss + self.kl_beta * kl if self.kl_beta > 0 else policy_loss
        with torch.no_grad():
            log_ratio = current.log_prob - old_log_prob
            clipped = ((ratio - 1).abs() > self.clip_range).float().mean()
        return FlowGRPOOutput(loss, policy_loss.detach(), kl.detach(), ratio.detach().mean(), clipped,
                              0.5 * log_ratio.pow(2).mean())

    def metrics(self, out: FlowGRPOOutput) -> Dict[str, float]:
        return {loss_key("total"): float(out.loss.detach()), loss_key("policy"): float(out.policy_loss),
                loss_key("kl"): float(out.kl), "grpo/ratio": float(out.ratio),
                "grpo/clip_fraction": float(out.clip_fraction), "grpo/approx_kl": float(out.approx_kl)}
