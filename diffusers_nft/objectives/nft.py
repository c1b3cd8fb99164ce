"""DiffusionNFT's objective: CFG-free ODE samples from the old policy, keeping only the clean latents; each is noised
again at several levels and trained with the contrastive loss of `loss.NFTLoss`."""

from typing import Dict, Optional

import torch

from ..advantages import rewards_to_optimality
from ..frozen_pair import OldAndReference
from ..guidance import guided_velocity
from ..loss import NFTLoss, NFTLossOutput
from ..metrics import loss_key
from ..monitors import velocity_stats
from ..policy import OLD, REFERENCE
from ..sampling import model_sigmas, rollout
from ..timesteps import sample_train_sigmas
from .base import Objective, Sample, cfg_words


class NFTObjective(Objective):
    """DiffusionNFT on the forward process: implicit positive and negative policies around the old one.

    Args:
        family: The pipeline family (`predict_velocity`).
        policy: The `NFTPolicy` that switches between theta, the old policy and the reference.
        loss: The `NFTLoss` (its `kl_beta > 0` adds the reference forward).
        sampling_sigmas: The sampler's grid; training draws its noise levels from the levels the model saw.
        sampler: The data-collection solver (`diffusers_nft.solvers.SAMPLERS`).
        guidance_scale: CFG of the rollouts; 1.0 (the release) is CFG-free.
        train_timesteps, timestep_shift, logit_mean, logit_std: How training noise levels are drawn
            (`timesteps.sample_train_sigmas`).
        adv_clip_max, advantage_std, adv_mode: How rewards become `r` (`advantages.rewards_to_optimality`).
        reference_guidance_scale: CFG of the KL's reference (1.0, the release: none).
        batch_frozen_forwards: Run the old and the reference predictions as one forward of twice the batch once
            checked to give the same numbers (`frozen_pair.OldAndReference`).
    """

    name = "nft"
    title, short = "DiffusionNFT", "NFT"
    paper, url = "arXiv 2509.16117", "https://arxiv.org/abs/2509.16117"
    about = ("DiffusionNFT is online reinforcement learning on the *forward* process: each iteration samples images "
             "from the current policy without classifier-free guidance, scores them, and trains a contrastive "
             "flow-matching loss on the clean samples (an implicit positive policy is pulled toward high-reward "
             "images, an implicit negative one toward low-reward images). The guidance ends up inside the model, so "
             "**this LoRA is meant to be used without CFG** (`guidance_scale=1.0`).")
    cfg_limit = "It was trained CFG-free: adding CFG on top of it over-saturates images."
    bibtex = ("@inproceedings{zheng2026diffusionnft,\n"
              "  title     = {DiffusionNFT: Online Diffusion Reinforcement with Forward Process},\n"
              "  author    = {Zheng, Kaiwen and Chen, Huayu and Ye, Haotian and Wang, Haoxiang and Zhang, Qinsheng and\n"
              "               Jiang, Kai and Su, Hang and Ermon, Stefano and Zhu, Jun and Liu, Ming-Yu},\n"
              "  booktitle = {International Conference on Learning Representations},\n"
              "  year      = {2026}\n"
              "}")
    card_settings = ("sampler", "nft_beta", "kl_beta", "kl_reference_guidance_scale", "reward_adaptive_kl",
                     "norm_guard_weight", "loss_weighting", "train_timesteps", "old_policy_decay")
    trained_on = "noise level"
    needs = ("latents", "cond", "rewards")

    def __init__(self, *, family, policy, loss: NFTLoss, sampling_sigmas: Optional[torch.Tensor] = None,
                 sampler: str = "dpm_solver", guidance_scale: float = 1.0, train_timesteps: str = "sampler_grid",
                 timestep_shift: float = 3.0, logit_mean: float = 0.0, logit_std: float = 1.0,
                 advantage_std: str = "global", adv_mode: str = "all", reference_guidance_scale: float = 1.0,
                 batch_frozen_forwards: bool = True):
        super().__init__()
        self.family, self.policy, self.loss = family, policy, loss
        self.sampling_sigmas, self.sampler, self.guidance_scale = sampling_sigmas, sampler, guidance_scale
        self.timesteps = dict(method=train_timesteps, shift=timestep_shift, logit_mean=logit_mean, logit_std=logit_std)
        self.advantage_std, self.adv_mode = advantage_std, adv_mode
        self.reference_guidance_scale = reference_guidance_scale
        self.old_and_reference = OldAndReference(policy, lambda *inputs: self.family.predict_velocity(*inputs),
                                                 batched=batch_frozen_forwards)
        if reference_guidance_scale > 1:  # the guided reference needs the empty prompt's conditioning
            self.needs = self.needs + ("uncond",)

    @classmethod
    def from_config(cls, config, *, family, policy, sampling_sigmas):
        loss = NFTLoss(nft_beta=config.nft_beta, adv_clip_max=config.adv_clip_max, weighting=config.loss_weighting,
                       kl_beta=config.kl_beta, drop_negative_term=config.drop_negative_term,
                       reward_adaptive_kl=config.reward_adaptive_kl, norm_guard_weight=config.norm_guard_weight,
                       norm_guard_margin=config.norm_guard_margin)
        return cls(family=family, policy=policy, loss=loss, sampling_sigmas=sampling_sigmas, sampler=config.sampler,
                   guidance_scale=config.guidance_scale, train_timesteps=config.train_timesteps,
                   timestep_shift=config.timestep_shift, logit_mean=config.logit_mean, logit_std=config.logit_std,
                   advantage_std=config.advantage_std, adv_mode=config.adv_mode,
                   reference_guidance_scale=config.kl_reference_guidance_scale,
                   batch_frozen_forwards=config.batch_frozen_forwards)

    @classmethod
    def sampling_words(cls, config) -> str:
        return f"{config.num_sampling_steps} {config.sampler} steps, {cfg_words(config.guidance_scale)}"

    def sample(self, velocity, noise, step_noise) -> Sample:
        """Any solver on the pipeline's grid; only the final latents are kept."""
        return Sample(latents=rollout(velocity, self.sampling_sigmas, noise, self.sampler))

    def credit(self, rewards, group_ids):
        """The optimality probabilities r."""
        clip = self.loss.adv_clip_max
        optimality = rewards_to_optimality(rewards, group_ids, clip, std_scope=self.advantage_std, mode=self.adv_mode)
        return optimality.r, {
            "r/mean": optimality.r.mean().item(),
            "r/std": optimality.r.std(unbiased=False).item(),
            "r/clipped_fraction": (optimality.advantages.abs() >= clip).float().mean().item(),
            "zero_variance_groups": optimality.zero_variance_fraction,
        }

    def micro_batches(self, rollouts, credit, *, batch_size, levels, generator):
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
            r = credit[index].to(device)
            uncond = rollouts.select_uncond(len(index)) if self.reference_guidance_scale > 1 else None
            for j in range(levels):
                sigma = sigmas[index, j].to(device)
                noise = torch.randn(x0.shape, generator=generator).to(device, x0.dtype)
                s = sigma.view(-1, *([1] * (x0.ndim - 1)))
                yield dict(x_t=(1 - s) * x0 + s * noise, sigma=sigma, cond=cond, x0=x0, noise=noise, r=r,
                           uncond=uncond)

    def metrics(self, out: NFTLossOutput) -> Dict[str, float]:
        metrics = {loss_key("total"): float(out.loss.detach()), loss_key("policy"): float(out.policy_loss),
                   loss_key("kl"): float(out.kl), "x0_norm": float(out.x0_norm), "v_deviation": float(out.deviation)}
        if self.loss.norm_guard_weight > 0:
            metrics[loss_key("norm_guard")] = float(out.norm_penalty)
        return metrics

    def __call__(self, x_t, sigma, cond, *, x0, noise, r, uncond=None, monitor: bool = False) -> NFTLossOutput:
        """The old (and reference) predictions without grad, theta's with grad, and the loss (not yet backward).

        The reference is the base model, CFG-guided at `reference_guidance_scale` when it is above 1 (with `uncond`).
        With `monitor`, the reference runs even without a KL term, for the velocity-norm ratio and the KL estimate.
        """
        wants_reference = self.loss.needs_reference or monitor
        with torch.no_grad():
            if wants_reference and uncond is None:  # one forward of twice the batch where it gives the same
                v_old, v_ref = self.old_and_reference(x_t, sigma, cond)
            else:
                with self.policy.using(OLD):
                    v_old = self.family.predict_velocity(x_t, sigma, cond)
                v_ref = None
                if wants_reference:  # guided by the empty prompt
                    with self.policy.using(REFERENCE):
                        v_ref = guided_velocity(self.family.predict_velocity, x_t, sigma, cond, uncond,
                                                self.reference_guidance_scale)
        v_theta = self.family.predict_velocity(x_t, sigma, cond)
        if monitor:
            self.monitors = velocity_stats(v_theta, v_ref)
        loss_ref = v_ref if self.loss.needs_reference else None  # the monitor's reference forward adds no loss term
        return self.loss(v_theta, v_old, x0=x0, noise=noise, sigma=sigma, r=r, v_ref=loss_ref)
