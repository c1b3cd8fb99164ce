"""What a training micro-step optimises. The loop noises the collected samples and asks its objective for a loss;
an objective names what it needs from the rollouts, so that collection keeps exactly that.

`NFTObjective` is DiffusionNFT's: clean samples and their optimality r, the old policy's (and, with a KL, the
reference's) velocity without grad, theta's with grad, and the contrastive loss of `loss.NFTLoss`.
"""

import torch

from .loss import NFTLoss, NFTLossOutput
from .monitors import velocity_stats
from .policy import OLD, REFERENCE


class Objective:
    """The interface: `needs` lists the `Rollouts` fields it reads; calling it returns a loss output with `.loss`.

    With `monitor=True` it also fills `monitors` (name -> value, see `diffusers_nft.monitors`) for that call.
    """

    name: str = ""
    needs: tuple = ()

    def __init__(self):
        self.monitors = {}

    def __call__(self, x_t: torch.Tensor, sigma: torch.Tensor, cond, *, monitor: bool = False, **batch):
        raise NotImplementedError


class NFTObjective(Objective):
    """DiffusionNFT on the forward process: implicit positive and negative policies around the old one.

    Args:
        adapter: The pipeline family's adapter (`predict_velocity`).
        policy: The `NFTPolicy` that switches between theta, the old policy and the reference.
        loss: The `NFTLoss` (its `kl_beta > 0` adds the reference forward).
    """

    name = "nft"
    needs = ("latents", "cond", "rewards")

    def __init__(self, *, adapter, policy, loss: NFTLoss):
        super().__init__()
        self.adapter, self.policy, self.loss = adapter, policy, loss

    def __call__(self, x_t, sigma, cond, *, x0, noise, r, monitor: bool = False) -> NFTLossOutput:
        """The old (and reference) predictions without grad, theta's with grad, and the loss (not yet backward).

        With `monitor`, the reference runs even without a KL term, for the velocity-norm ratio and the KL estimate.
        """
        with torch.no_grad():
            with self.policy.using(OLD):
                v_old = self.adapter.predict_velocity(x_t, sigma, cond)
            v_ref = None
            if self.loss.kl_beta > 0 or monitor:
                with self.policy.using(REFERENCE):
                    v_ref = self.adapter.predict_velocity(x_t, sigma, cond)
        v_theta = self.adapter.predict_velocity(x_t, sigma, cond)
        if monitor:
            self.monitors = velocity_stats(v_theta, v_ref)
        kl_ref = v_ref if self.loss.kl_beta > 0 else None  # the monitor's reference forward adds no loss term
        return self.loss(v_theta, v_old, x0=x0, noise=noise, sigma=sigma, r=r, v_ref=kl_ref)
