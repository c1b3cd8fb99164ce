"""The options aimed at NFT's CFG-free gap: a KL anchored to the CFG-guided base (CRD), a reward-adaptive KL, and a
hinge on the velocity-norm ratio (NormGuard). Off by default; the loss-level formulas are pinned in test_loss.py."""

import pytest
import torch

from diffusers_nft import NFTConfig, NFTLoss, NFTTrainer
from diffusers_nft.metrics import loss_key
from diffusers_nft.objectives import NFTObjective

from conftest import PROMPTS, SwitchPolicy, tiny_config


class _Family:
    """`v = w x + c`: `w` the weights in use (theta 1.5, old 1.2, the reference 1.0), `c` the prompt's."""

    def __init__(self):
        self.active = "default"

    def predict_velocity(self, x, sigma, cond):
        return {"reference": 1.0, "old": 1.2}.get(self.active, 1.5) * x + cond["c"]


def test_the_kl_reference_is_the_base_models_guided_velocity():
    family = _Family()
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    cond, uncond = {"c": torch.tensor([[2.0, 2.0], [1.0, 1.0]])}, {"c": torch.zeros(2, 2)}
    args = dict(x_t=x, sigma=torch.tensor([0.5, 0.5]), cond=cond, x0=torch.zeros(2, 2), noise=torch.zeros(2, 2),
                r=torch.tensor([0.5, 0.5]))
    guided = NFTObjective(family=family, policy=SwitchPolicy(family), loss=NFTLoss(kl_beta=1.0), reference_guidance_scale=4.5)
    assert "uncond" in guided.needs
    out = guided(**args, uncond=uncond)
    v_theta = 1.5 * x + cond["c"]
    v_ref = x + 4.5 * cond["c"]  # v_u + 4.5 (v_c - v_u) with v_u = x and v_c = x + c
    assert out.kl.item() == pytest.approx(((v_theta - v_ref) ** 2).mean().item(), rel=1e-6)
    plain = NFTObjective(family=family, policy=SwitchPolicy(family), loss=NFTLoss(kl_beta=1.0))
    assert "uncond" not in plain.needs
    assert plain(**args).kl.item() == pytest.approx(((v_theta - (x + cond["c"])) ** 2).mean().item(), rel=1e-6)


def test_the_three_options_train_the_tiny_sd3_and_are_named_on_the_card(tiny_pipeline, tmp_path):
    config = tiny_config(tmp_path, max_steps=1, kl_beta=0.05, kl_reference_guidance_scale=4.5,
                         reward_adaptive_kl=True, norm_guard_weight=1.0)
    trainer = NFTTrainer(tiny_pipeline, "jpeg_incompressibility", config, PROMPTS)
    seen = []
    collect = trainer.collector.collect

    def watched(*args, **kwargs):
        rollouts = collect(*args, **kwargs)
        seen.append(rollouts.uncond)
        return rollouts

    trainer.collector.collect = watched
    history = trainer.train()
    assert seen and seen[0] is not None  # the empty prompt's conditioning reached the loop for the guided reference
    assert history[0][loss_key("kl")] > 0 and loss_key("norm_guard") in history[0]
    card = trainer._card_inputs(None, None).hyperparameters
    assert card["kl_reference_guidance_scale"] == 4.5 and card["norm_guard_weight"] == 1.0


@pytest.mark.parametrize("values, message", [
    (dict(kl_reference_guidance_scale=0.5), "kl_reference_guidance_scale"),
    (dict(norm_guard_weight=-1.0), "norm_guard_weight"),
])
def test_bad_values_are_refused_before_any_compute(values, message):
    with pytest.raises(ValueError, match=message):
        NFTConfig(output_dir="unused", **values)
