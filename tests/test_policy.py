import pytest
import torch

from diffusers_nft.pipelines import SD3Family, get_family
from diffusers_nft.policy import NFTPolicy, make_lora_config

from conftest import max_diff, small_lora


def _velocity(family, policy_name, policy):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *family.latent_shape(64), generator=g)
    cond = family.encode_prompts(["a red cat", "a blue dog"], torch.device("cpu"), 16)
    with torch.no_grad(), policy.using(policy_name):
        return family.predict_velocity(x, torch.tensor([0.3, 0.8]), cond)


def _perturb(tensors, scale=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g) for k, v in tensors.items()}


def test_sd35_dual_attention_gets_lora_only_when_named(tiny_pipeline):
    assert "attn2.to_q" not in small_lora(tiny_pipeline.transformer).target_modules  # the release's 8 by default
    config = make_lora_config(tiny_pipeline.transformer, targets=["attn.to_q", "attn.add_k_proj", "attn2.to_q"], rank=4)
    policy = NFTPolicy(tiny_pipeline.transformer, config)
    names = policy.state_dict("default").keys()
    assert any(".attn2.to_q.lora_A" in n for n in names) and any(".attn.add_k_proj.lora_A" in n for n in names)
    assert all(p.requires_grad and p.dtype == torch.float32 for p in policy.trainable_parameters())
    frozen = [n for n, p in tiny_pipeline.transformer.named_parameters() if p.requires_grad and "lora" not in n]
    assert frozen == []


def test_three_policies_and_soft_update(tiny_pipeline):
    family = get_family(tiny_pipeline)
    policy = NFTPolicy(tiny_pipeline.transformer, small_lora(tiny_pipeline.transformer))
    # old starts as an exact copy of theta
    assert max_diff(policy.state_dict("default"), policy.state_dict("old")) == 0
    theta = _perturb(policy.state_dict("default"))
    policy.load_state_dict("default", theta)
    v_theta, v_old, v_ref = (_velocity(family, p, policy) for p in ("default", "old", "reference"))
    assert (v_theta - v_old).abs().max() > 1e-3
    assert (v_old - v_ref).abs().max() < 1e-6  # gaussian init: B = 0, so the old adapter is the base model
    old_before = policy.state_dict("old")
    policy.update_old(0.25)
    expected = {k: 0.25 * old_before[k] + 0.75 * theta[k] for k in theta}
    assert max_diff(policy.state_dict("old"), expected) < 1e-6
    policy.update_old(0.0)
    torch.testing.assert_close(_velocity(family, "old", policy), v_theta)
    # the trainable adapter is active again after each `using` block, with grads on
    assert all(p.requires_grad for p in policy.trainable_parameters())


def test_ema_update_and_evaluation_swap(tiny_pipeline):
    family = get_family(tiny_pipeline)
    policy = NFTPolicy(tiny_pipeline.transformer, small_lora(tiny_pipeline.transformer))
    ema0 = policy.state_dict("ema")
    theta = _perturb(policy.state_dict("default"), seed=1)
    policy.load_state_dict("default", theta)
    policy.update_ema(0.9)
    assert max_diff(policy.state_dict("ema"), {k: 0.9 * ema0[k] + 0.1 * theta[k] for k in theta}) < 1e-6
    v_theta = _velocity(family, "default", policy)
    with policy.ema_weights():
        v_ema = _velocity(family, "default", policy)
    assert (v_ema - v_theta).abs().max() > 1e-4
    assert max_diff(policy.state_dict("default"), theta) == 0  # restored exactly


def test_state_dict_round_trip_and_mismatch(tiny_pipeline):
    policy = NFTPolicy(tiny_pipeline.transformer, small_lora(tiny_pipeline.transformer))
    tensors = _perturb(policy.state_dict("old"), seed=3)
    policy.load_state_dict("old", tensors)
    assert max_diff(policy.state_dict("old"), tensors) == 0
    with pytest.raises(ValueError, match="do not match"):
        policy.load_state_dict("old", dict(list(tensors.items())[1:]))


def test_lora_targets_that_match_nothing(tiny_pipeline):
    with pytest.raises(ValueError, match=r"\['attn\.to_qq'\] match no linear module"):
        make_lora_config(tiny_pipeline.transformer, targets=["attn.to_q", "attn.to_qq"])
    with pytest.raises(ValueError, match="match no linear module"):
        make_lora_config(tiny_pipeline.transformer, default_targets=["nothing.here"])
    config = make_lora_config(tiny_pipeline.transformer, default_targets=SD3Family.default_lora_targets, rank=8, alpha=3)
    assert (config.r, config.lora_alpha, config.init_lora_weights) == (8, 3, "gaussian")


def test_default_targets_on_plain_sd3_drop_the_sd35_modules():
    from tiny_pipelines import build_tiny_sd3_pipeline

    pipe = build_tiny_sd3_pipeline(sd35=False)
    config = make_lora_config(pipe.transformer, default_targets=SD3Family.default_lora_targets)
    assert sorted(config.target_modules) == sorted(t for t in SD3Family.default_lora_targets if "attn2" not in t)
    assert (config.r, config.lora_alpha) == (32, 64)
    NFTPolicy(pipe.transformer, config)


def test_old_policy_keeps_small_updates_when_the_model_is_cast_to_bf16(tiny_pipeline):
    # DeepSpeed with bf16 casts every weight of the model, both adapters included. A soft update with decay 0.999
    # moves the old adapter by 1e-3 of a small difference: in bf16 alone it would round away.
    policy = NFTPolicy(tiny_pipeline.transformer, small_lora(tiny_pipeline.transformer))
    theta = _perturb(policy.state_dict("default"), scale=0.05)
    policy.load_state_dict("default", theta)
    old = {k: v.clone() for k, v in policy.state_dict("old").items()}
    tiny_pipeline.transformer.to(torch.bfloat16)
    start = {k: p.detach().float() for k, p in policy._params["old"].items()}
    for _ in range(20):
        policy.update_old(0.999)
        old = {k: 0.999 * old[k] + 0.001 * theta[k].bfloat16().float() for k in old}
    assert max_diff(policy.state_dict("old"), old) < 1e-6
    adapter_weights = {k: p.detach().float() for k, p in policy._params["old"].items()}
    assert max_diff(adapter_weights, {k: v.bfloat16().float() for k, v in old.items()}) == 0
    # and the forward sees it: updated in bf16 alone, the old adapter would not have moved at all
    assert max_diff(adapter_weights, start) > 1e-3
