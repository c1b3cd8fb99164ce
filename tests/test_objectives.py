"""The training objective as its own component: NFT's loss from the old, reference and trained velocities."""

import torch

from diffusers_nft.loss import NFTLoss
from diffusers_nft.objectives import NFTObjective
from diffusers_nft.pipelines import get_family
from diffusers_nft.policy import OLD, REFERENCE, NFTPolicy

from conftest import small_lora


def test_nft_objective_is_the_nft_loss_of_the_three_policies(tiny_pipeline):
    family = get_family(tiny_pipeline)
    policy = NFTPolicy(tiny_pipeline.transformer, small_lora(tiny_pipeline.transformer))
    g = torch.Generator().manual_seed(0)
    policy.load_state_dict("default", {k: v + 0.1 * torch.randn(v.shape, generator=g)
                                       for k, v in policy.state_dict("default").items()})
    x0 = torch.randn(2, *family.latent_shape(64), generator=g)
    noise, sigma, r = torch.randn(x0.shape, generator=g), torch.tensor([0.3, 0.8]), torch.tensor([0.9, 0.2])
    x_t = (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * noise
    cond = family.encode_prompts(["a red cat", "a blue dog"], torch.device("cpu"), 16)
    loss = NFTLoss(kl_beta=0.5)
    objective = NFTObjective(family=family, policy=policy, loss=loss)
    assert objective.needs == ("latents", "cond", "rewards")
    out = objective(x_t, sigma, cond, x0=x0, noise=noise, r=r)
    with torch.no_grad():
        with policy.using(OLD):
            v_old = family.predict_velocity(x_t, sigma, cond)
        with policy.using(REFERENCE):
            v_ref = family.predict_velocity(x_t, sigma, cond)
        v_theta = family.predict_velocity(x_t, sigma, cond)
    expected = loss(v_theta, v_old, x0=x0, noise=noise, sigma=sigma, r=r, v_ref=v_ref)
    torch.testing.assert_close(out.loss.detach(), expected.loss)
    assert out.kl > 0 and out.loss.requires_grad  # theta's forward carries the gradient; old and reference do not
