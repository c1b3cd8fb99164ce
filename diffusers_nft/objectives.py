"""What an iteration samples and what its micro-steps optimise. The loop asks its objective how to sample (policy,
CFG scale, sampler), how to weight the scored samples, which micro-batches to train on, and for each a loss.

- `NFTObjective`, DiffusionNFT's: CFG-free ODE samples from the old policy, keeping only the clean latents; each is
  noised again at several levels and trained with the contrastive loss of `loss.NFTLoss`.
- `FlowGRPOObjective`, Flow-GRPO's (arXiv 2505.05470): SDE samples from the current policy with CFG, recording
  every transition and its log-probability; PPO's clipped surrogate on the recorded transitions, with a KL to the
  reference on the transitions' means.

`build_objective(args, ...)` picks one by `NFTConfig.objective`, one of `OBJECTIVES`.
"""

from dataclasses import dataclass
from typing import Dict, Iterator, Optional

import torch

from .advantages import rewards_to_optimality
from .guidance import guided_velocity
from .grpo import clipped_surrogate, sde_rollout, sde_step
from .loss import NFTLoss, NFTLossOutput
from .metrics import loss_key
from .monitors import velocity_stats
from .pipelines import select_conditioning
from .policy import OLD, REFERENCE, TRAINED
from .sampling import model_sigmas, rollout
from .timesteps import sample_train_sigmas

OBJECTIVES = ("nft", "flow_grpo")


@dataclass
class Sample:
    """A batch of rollouts: the clean latents, and the trajectory for objectives that train on it."""

    latents: torch.Tensor
    states: Optional[torch.Tensor] = None
    log_probs: Optional[torch.Tensor] = None


class Objective:
    """The interface. `needs` lists the `Rollouts` fields it reads; `sampling_policy` and `guidance_scale` say how
    collection samples; calling it on a micro-batch of `micro_batches` returns an output with `.loss`.

    With `monitor=True` it also fills `monitors` (name -> value, see `diffusers_nft.monitors`) for that call.
    """

    name: str = ""
    needs: tuple = ()
    sampling_policy: str = OLD
    guidance_scale: float = 1.0

    def __init__(self):
        self.monitors = {}

    def sample(self, velocity, noise: torch.Tensor, step_noise) -> Sample:
        raise NotImplementedError

    def weights(self, rewards: torch.Tensor, group_ids: torch.Tensor):
        """Per-sample training weights from the iteration's total rewards (all processes): `(weights, metrics)`."""
        raise NotImplementedError

    def micro_batches(self, rollouts, weights: torch.Tensor, *, batch_size: int, levels: int,
                      generator: torch.Generator) -> Iterator[dict]:
        raise NotImplementedError

    def metrics(self, out) -> Dict[str, float]:
        """The logged values of one micro-step's output (averaged over the iteration by the loop)."""
        raise NotImplementedError

    def __call__(self, *, monitor: bool = False, **batch):
        raise NotImplementedError


class NFTObjective(Objective):
    """DiffusionNFT on the forward process: implicit positive and negative policies around the old one.

    Args:
        family: The pipeline family's family (`predict_velocity`).
        policy: The `NFTPolicy` that switches between theta, the old policy and the reference.
        loss: The `NFTLoss` (its `kl_beta > 0` adds the reference forward).
        sampling_sigmas: The sampler's grid; training draws its noise levels from the levels the model saw.
        sampler: The data-collection solver (`diffusers_nft.solvers.SAMPLERS`).
        guidance_scale: CFG of the rollouts; 1.0 (the release) is CFG-free.
        train_timesteps, timestep_shift, logit_mean, logit_std: How training noise levels are drawn
            (`timesteps.sample_train_sigmas`).
        adv_clip_max, advantage_std, adv_mode: How rewards become `r` (`advantages.rewards_to_optimality`).
    """

    name = "nft"
    needs = ("latents", "cond", "rewards")

    def __init__(self, *, family, policy, loss: NFTLoss, sampling_sigmas: Optional[torch.Tensor] = None,
                 sampler: str = "dpm_solver", guidance_scale: float = 1.0, train_timesteps: str = "sampler_grid",
                 timestep_shift: float = 3.0, logit_mean: float = 0.0, logit_std: float = 1.0,
                 advantage_std: str = "global", adv_mode: str = "all"):
        super().__init__()
        self.family, self.policy, self.loss = family, policy, loss
        self.sampling_sigmas, self.sampler, self.guidance_scale = sampling_sigmas, sampler, guidance_scale
        self.timesteps = dict(method=train_timesteps, shift=timestep_shift, logit_mean=logit_mean, logit_std=logit_std)
        self.advantage_std, self.adv_mode = advantage_std, adv_mode

    def sample(self, velocity, noise, step_noise) -> Sample:
        """Any solver on the pipeline's grid; only the final latents are kept."""
        return Sample(latents=rollout(velocity, self.sampling_sigmas, noise, self.sampler))

    def weights(self, rewards, group_ids):
        """The optimality probabilities r."""
        clip = self.loss.adv_clip_max
        optimality = rewards_to_optimality(rewards, group_ids, clip, std_scope=self.advantage_std, mode=self.adv_mode)
        return optimality.r, {
            "r/mean": optimality.r.mean().item(),
            "r/std": optimality.r.std(unbiased=False).item(),
            "r/clipped_fraction": (optimality.advantages.abs() >= clip).float().mean().item(),
            "zero_variance_groups": optimality.zero_variance_fraction,
        }

    def micro_batches(self, rollouts, weights, *, batch_size, levels, generator):
        """Each clean sample noised again at `levels` levels, in a random order of micro-batches."""
        n = len(rollouts)
        grid = model_sigmas(self.sampling_sigmas).float()
        t = self.timesteps
        sigmas = sample_train_sigmas(n, levels, t["method"], grid, t["shift"], t["logit_mean"], t["logit_std"],
                                     generator)
        order = torch.randperm(n, generator=generator)
        device = rollouts.latents.device
        for lo in range(0, n, batch_size):
            index = order[lo : lo + batch_size]
            x0, cond = rollouts.select(index)
            r = weights[index].to(device)
            for j in range(levels):
                sigma = sigmas[index, j].to(device)
                noise = torch.randn(x0.shape, generator=generator).to(device, x0.dtype)
                s = sigma.view(-1, *([1] * (x0.ndim - 1)))
                yield dict(x_t=(1 - s) * x0 + s * noise, sigma=sigma, cond=cond, x0=x0, noise=noise, r=r)

    def metrics(self, out: NFTLossOutput) -> Dict[str, float]:
        return {loss_key("total"): float(out.loss.detach()), loss_key("policy"): float(out.policy_loss),
                loss_key("kl"): float(out.kl), "x0_norm": float(out.x0_norm), "v_deviation": float(out.deviation)}

    def __call__(self, x_t, sigma, cond, *, x0, noise, r, monitor: bool = False) -> NFTLossOutput:
        """The old (and reference) predictions without grad, theta's with grad, and the loss (not yet backward).

        With `monitor`, the reference runs even without a KL term, for the velocity-norm ratio and the KL estimate.
        """
        with torch.no_grad():
            with self.policy.using(OLD):
                v_old = self.family.predict_velocity(x_t, sigma, cond)
            v_ref = None
            if self.loss.kl_beta > 0 or monitor:
                with self.policy.using(REFERENCE):
                    v_ref = self.family.predict_velocity(x_t, sigma, cond)
        v_theta = self.family.predict_velocity(x_t, sigma, cond)
        if monitor:
            self.monitors = velocity_stats(v_theta, v_ref)
        kl_ref = v_ref if self.loss.kl_beta > 0 else None  # the monitor's reference forward adds no loss term
        return self.loss(v_theta, v_old, x0=x0, noise=noise, sigma=sigma, r=r, v_ref=kl_ref)


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
    the first `levels` transitions of each trajectory are trained (the release's timestep fraction). The ratio of
    the first update is 1: theta has not moved since it sampled.

    Args:
        family: The pipeline family's family.
        policy: The `NFTPolicy` (theta, and the reference for the KL).
        sampling_sigmas: The pipeline's grid (the SDE runs on it).
        noise_level: The SDE's `a` (the release: 0.7).
        clip_range: PPO's clip (the release: 1e-4).
        kl_beta: Weight of the KL to the reference on the transitions' means (the release: 0.04); 0 skips the
            reference forward.
        guidance_scale: CFG during sampling and training (the release: 4.5).
        adv_clip_max: Clip of the advantages (the release: 5).
        advantage_std: `"group"` (per prompt, the release) or `"global"`.
    """

    name = "flow_grpo"
    needs = ("states", "log_probs", "cond", "uncond", "rewards")
    sampling_policy = TRAINED

    def __init__(self, *, family, policy, sampling_sigmas: torch.Tensor, noise_level: float = 0.7,
                 clip_range: float = 1e-4, kl_beta: float = 0.04, guidance_scale: float = 4.5,
                 adv_clip_max: float = 5.0, advantage_std: str = "group"):
        super().__init__()
        self.family, self.policy, self.sampling_sigmas = family, policy, sampling_sigmas
        self.noise_level, self.clip_range, self.kl_beta = noise_level, clip_range, kl_beta
        self.guidance_scale, self.adv_clip_max, self.advantage_std = guidance_scale, adv_clip_max, advantage_std
        self.grid = [float(s) for s in sampling_sigmas]

    def sample(self, velocity, noise, step_noise) -> Sample:
        states, log_probs = sde_rollout(velocity, self.sampling_sigmas, noise, step_noise, noise_level=self.noise_level)
        return Sample(latents=states[:, -1].to(noise.dtype), states=states, log_probs=log_probs)

    def weights(self, rewards, group_ids):
        """`(R - group mean) / (std + 1e-4)`, clipped at `adv_clip_max`."""
        optimality = rewards_to_optimality(rewards, group_ids, self.adv_clip_max, std_scope=self.advantage_std)
        advantages = optimality.advantages.clamp(-self.adv_clip_max, self.adv_clip_max)
        return advantages, {"advantages/abs_mean": advantages.abs().mean().item(),
                            "zero_variance_groups": optimality.zero_variance_fraction}

    def micro_batches(self, rollouts, weights, *, batch_size, levels, generator):
        """The first `levels` recorded transitions of each trajectory, for micro-batches in a random order."""
        n, device = len(rollouts), rollouts.states.device
        order = torch.randperm(n, generator=generator)
        for lo in range(0, n, batch_size):
            index = order[lo : lo + batch_size]
            on_device = index.to(device)
            cond = select_conditioning(rollouts.cond, rollouts.row_of_image[index])
            uncond = rollouts.select_uncond(len(index))
            for j in range(levels):
                yield dict(x=rollouts.states[on_device, j], step=j, prev_sample=rollouts.states[on_device, j + 1],
                           old_log_prob=rollouts.log_probs[on_device, j], advantages=weights[index].to(device),
                           cond=cond, uncond=uncond)

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


def build_objective(args, *, family, policy, sampling_sigmas: torch.Tensor) -> Objective:
    """The objective `args.objective` names (one of `OBJECTIVES`), with the run's settings."""
    if args.objective == "flow_grpo":
        return FlowGRPOObjective(
            family=family, policy=policy, sampling_sigmas=sampling_sigmas, noise_level=args.grpo_noise_level,
            clip_range=args.grpo_clip_range, kl_beta=args.grpo_kl_beta, guidance_scale=args.grpo_guidance_scale,
            adv_clip_max=args.adv_clip_max,
        )
    loss = NFTLoss(nft_beta=args.nft_beta, adv_clip_max=args.adv_clip_max, weighting=args.loss_weighting,
                   kl_beta=args.kl_beta, drop_negative_term=args.drop_negative_term)
    return NFTObjective(
        family=family, policy=policy, loss=loss, sampling_sigmas=sampling_sigmas, sampler=args.sampler,
        guidance_scale=args.guidance_scale, train_timesteps=args.train_timesteps, timestep_shift=args.timestep_shift,
        logit_mean=args.logit_mean, logit_std=args.logit_std, advantage_std=args.advantage_std, adv_mode=args.adv_mode,
    )
