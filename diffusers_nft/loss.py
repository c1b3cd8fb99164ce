"""The DiffusionNFT forward-process loss. Pure tensor math: no diffusers, no models.

With the trainable policy `v_theta`, the data-collection policy `v_old` and a guidance strength `beta`, NFT defines
an implicit positive policy `v_pos = beta * v_theta + (1 - beta) * v_old` and an implicit negative policy
`v_neg = (1 + beta) * v_old - beta * v_theta`. Samples with optimality probability `r` teach `v_pos` to fit them
with weight `r` and `v_neg` to fit them with weight `1 - r`. At the optimum the reinforcement direction is absorbed
into `v_theta` itself, so inference needs no classifier-free guidance.
"""

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

WEIGHTINGS = ("x0_adaptive", "velocity")


@dataclass
class NFTLossOutput:
    """What `NFTLoss` returns.

    Attributes:
        loss: The scalar to backpropagate: `policy_loss + kl_beta * kl` (each sample's KL weighted by its r with
            `reward_adaptive_kl`), plus `norm_guard_weight * norm_penalty`.
        policy_loss: The scaled contrastive flow-matching loss (detached).
        kl: Mean squared distance between `v_theta` and `v_ref` (detached; 0 when no `v_ref` is given).
        x0_norm: Mean per-sample L2 norm of the clean sample predicted by `v_theta` (detached). A norm that grows
            while the reward stays flat is the brightness drift reproductions of the release run into.
        deviation: Mean per-sample L2 norm of `v_theta - v_old` (detached).
        norm_penalty: Mean hinge `max(0, |v_theta| / |v_ref| - 1 - margin)` of the velocity norms (detached; 0
            without `norm_guard_weight` or `v_ref`).
    """

    loss: torch.Tensor
    policy_loss: torch.Tensor
    kl: torch.Tensor
    x0_norm: torch.Tensor
    deviation: torch.Tensor
    norm_penalty: torch.Tensor


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(dim=1)


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


class NFTLoss(nn.Module):
    """Contrastive flow-matching loss of DiffusionNFT (arXiv 2509.16117).

    Args:
        nft_beta: Guidance strength `beta` > 0 of the implicit policies. 1.0 in the release; 0.1 for OCR and
            multi-reward runs.
        adv_clip_max: Clip value `c` used when turning advantages into `r`. The policy loss is multiplied by
            `adv_clip_max / nft_beta`, which keeps the gradient at `v_theta == v_old` the same for every beta.
        weighting: `"x0_adaptive"` (the release form: squared error of the predicted x0, divided by its detached
            mean absolute error) or `"velocity"` (the paper form: squared error of the velocities).
        kl_beta: Weight of `mean((v_theta - v_ref)^2)`. With 0, `v_ref` is not needed and callers should skip the
            reference forward pass entirely.
        drop_negative_term: Drop the negative term and keep only `r * error(v_pos)`: the ablation of the paper's
            "negative samples matter" claim (reward-weighted fitting of the policy's own samples). Not for real runs,
            and not the release's `adv_mode="positive_only"`, which clamps the advantage and keeps both terms.
        reward_adaptive_kl: Weight each sample's KL by its r (Flow-Factory's CRD): the coefficient goes linearly
            from `min(kl_beta, 1e-4)` at r = 0 to `kl_beta` at r = 1, so the policy stays closest to the reference
            where it does well. Not the release's.
        norm_guard_weight: Weight of a hinge on the per-sample velocity-norm ratio `|v_theta| / |v_ref|` above
            `1 + norm_guard_margin` (NormGuard: NFT-style objectives inflate it by 5-15%); 0 (the release) skips it.
        norm_guard_margin: The ratio's free margin above 1.

    Example:
        ```py
        loss_fn = NFTLoss(nft_beta=1.0)
        s = sigma.view(-1, *[1] * (x0.ndim - 1))  # sigma (B,) against (B, C, H, W)
        x_t = (1 - s) * x0 + s * noise  # what v_theta, v_old and v_ref were evaluated at
        out = loss_fn(v_theta, v_old, x0=x0, noise=noise, sigma=sigma, r=r, v_ref=v_ref)
        out.loss.backward()
        ```
    """

    def __init__(
        self,
        nft_beta: float = 1.0,
        adv_clip_max: float = 5.0,
        weighting: str = "x0_adaptive",
        kl_beta: float = 1e-4,
        drop_negative_term: bool = False,
        reward_adaptive_kl: bool = False,
        norm_guard_weight: float = 0.0,
        norm_guard_margin: float = 0.05,
    ):
        super().__init__()
        if not (0 < nft_beta < float("inf")):
            raise ValueError(f"nft_beta must be finite and > 0, got {nft_beta}. The release uses 1.0 (0.1 for OCR).")
        if not (0 < adv_clip_max < float("inf")):
            raise ValueError(f"adv_clip_max must be finite and > 0, got {adv_clip_max}. The release uses 5.")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}.")
        if not (0 <= kl_beta < float("inf")):
            raise ValueError(f"kl_beta must be finite and >= 0, got {kl_beta}.")
        if not (0 <= norm_guard_weight < float("inf")) or not (0 <= norm_guard_margin < float("inf")):
            raise ValueError(f"norm_guard_weight and norm_guard_margin must be finite and >= 0, got "
                             f"{norm_guard_weight} and {norm_guard_margin}.")
        self.nft_beta = nft_beta
        self.adv_clip_max = adv_clip_max
        self.weighting = weighting
        self.kl_beta = kl_beta
        self.drop_negative_term = drop_negative_term
        self.reward_adaptive_kl = reward_adaptive_kl
        self.norm_guard_weight, self.norm_guard_margin = norm_guard_weight, norm_guard_margin

    @property
    def needs_reference(self) -> bool:
        """Whether `forward` uses `v_ref` (the KL or the norm guard): else skip the reference forward."""
        return self.kl_beta > 0 or self.norm_guard_weight > 0

    def forward(
        self,
        v_theta: torch.Tensor,
        v_old: torch.Tensor,
        x0: torch.Tensor,
        noise: torch.Tensor,
        sigma: torch.Tensor,
        r: torch.Tensor,
        v_ref: Optional[torch.Tensor] = None,
    ) -> NFTLossOutput:
        """Compute the loss for a batch.

        Args:
            v_theta: Velocity of the trainable policy, shape `(B, ...)`, with grad.
            v_old: Velocity of the data-collection policy, same shape (treated as a constant).
            x0: Clean samples the policies were evaluated around, same shape.
            noise: The noise `eps` used to build `x_t = (1 - sigma) * x0 + sigma * eps`, same shape.
            sigma: Noise level per sample, shape `(B,)` or `(B, 1, ..., 1)`, in (0, 1].
            r: Optimality probability per sample, shape `(B,)`, in [0, 1].
            v_ref: Velocity of the frozen reference model, or None to skip the KL term and the norm guard.

        Returns:
            An `NFTLossOutput`.
        """
        batch = v_theta.shape[0]
        shape = (batch,) + (1,) * (v_theta.ndim - 1)
        if sigma.shape not in ((batch,), shape) or r.shape != (batch,):
            raise ValueError(f"sigma must have shape ({batch},) or {shape} and r ({batch},), got "
                             f"{tuple(sigma.shape)} and {tuple(r.shape)}.")
        beta = self.nft_beta
        v_old = v_old.detach()
        sigma_b = sigma.to(v_theta.dtype).reshape(shape)
        r = r.to(torch.float32)
        target = noise - x0
        x_t = (1 - sigma_b) * x0 + sigma_b * noise

        v_pos = beta * v_theta + (1 - beta) * v_old
        v_neg = (1 + beta) * v_old - beta * v_theta
        if self.weighting == "velocity":
            pos_err = _per_sample_mean((v_pos - target).float() ** 2)
            neg_err = _per_sample_mean((v_neg - target).float() ** 2)
        else:
            pos_err = self._adaptive_x0_error(x_t - sigma_b * v_pos, x0)
            neg_err = self._adaptive_x0_error(x_t - sigma_b * v_neg, x0)
        per_sample = r * pos_err if self.drop_negative_term else r * pos_err + (1 - r) * neg_err
        policy_loss = per_sample.mean() * (self.adv_clip_max / beta)

        kl = penalty = torch.zeros((), device=v_theta.device)
        loss = policy_loss
        if v_ref is not None:
            v_ref = v_ref.detach()
            per_sample_kl = _per_sample_mean((v_theta - v_ref).float() ** 2)
            kl = per_sample_kl.mean()
            loss = loss + (self._reward_adaptive(per_sample_kl, r) if self.reward_adaptive_kl else self.kl_beta * kl)
            if self.norm_guard_weight > 0:
                ratio = _per_sample_norm(v_theta.float()) / _per_sample_norm(v_ref.float()).clamp(min=1e-12)
                penalty = (ratio - 1 - self.norm_guard_margin).clamp(min=0).mean()
                loss = loss + self.norm_guard_weight * penalty

        with torch.no_grad():
            x0_norm = _per_sample_norm((x_t - sigma_b * v_theta).float()).mean()
            deviation = _per_sample_norm((v_theta - v_old).float()).mean()
        return NFTLossOutput(loss, policy_loss.detach(), kl.detach(), x0_norm, deviation, penalty.detach())

    def _reward_adaptive(self, per_sample_kl: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """`mean(coef * kl)` with `coef` from `min(kl_beta, 1e-4)` at r = 0 up to `kl_beta` at r = 1 (CRD's)."""
        floor = min(self.kl_beta, 1e-4)
        return ((floor + r * (self.kl_beta - floor)) * per_sample_kl).mean()

    @staticmethod
    def _adaptive_x0_error(x0_pred: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            weight = _per_sample_mean((x0_pred.double() - x0.double()).abs()).clamp(min=1e-5)
        return _per_sample_mean((x0_pred.float() - x0.float()) ** 2) / weight.float()
