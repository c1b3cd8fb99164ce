import pytest
import torch

from diffusers_nft import rewards_to_optimality


def test_hand_computed_global_std():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0])
    groups = torch.tensor([0, 0, 1, 1])
    out = rewards_to_optimality(rewards, groups, adv_clip_max=5.0)
    std = 1.25**0.5  # population std of 1, 2, 3, 4
    expected_a = torch.tensor([-0.5, 0.5, -0.5, 0.5]) / (std + 1e-4)
    torch.testing.assert_close(out.advantages, expected_a)
    torch.testing.assert_close(out.r, 0.5 + 0.5 * expected_a / 5)
    assert out.zero_variance_fraction == 0


def test_group_std_option():
    rewards = torch.tensor([1.0, 3.0, 10.0, 30.0])
    groups = torch.tensor([7, 7, 9, 9])
    out = rewards_to_optimality(rewards, groups, std_scope="group")
    expected = torch.tensor([-1 / (1 + 1e-4), 1 / (1 + 1e-4), -10 / (10 + 1e-4), 10 / (10 + 1e-4)])
    torch.testing.assert_close(out.advantages, expected)


def test_group_of_equal_rewards_gives_exactly_one_half():
    # 0.1 three times: its float mean is not exactly 0.1, yet r must be exactly 0.5.
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    for scope, dtype in (("global", torch.float32), ("group", torch.float32), ("global", torch.float64)):
        rewards = torch.tensor([0.1, 0.1, 0.1, 0.0, 1.0, 0.3], dtype=dtype)  # in float64 the mean is 0.1 + 1.4e-17
        out = rewards_to_optimality(rewards, groups, std_scope=scope)
        assert out.r[:3].tolist() == [0.5, 0.5, 0.5]
        assert out.advantages[:3].tolist() == [0.0, 0.0, 0.0]  # exact zeros, not the mean's rounding error
        assert out.zero_variance_fraction == 0.5
        binary = rewards_to_optimality(rewards, groups, std_scope=scope, mode="binary")
        assert binary.r[:3].tolist() == [0.5, 0.5, 0.5]  # a rounding error's sign would make them 0 or 1
    all_equal = rewards_to_optimality(torch.full((4,), 3.7), torch.tensor([0, 0, 1, 1]))
    assert all_equal.r.tolist() == [0.5] * 4 and all_equal.zero_variance_fraction == 1.0


def test_clipping_bounds_r_to_unit_interval():
    rewards = torch.tensor([0.0] * 50 + [100.0] + [0.0] * 49)
    groups = torch.zeros(100, dtype=torch.long)
    out = rewards_to_optimality(rewards, groups, adv_clip_max=2.0)
    assert out.r.max().item() == 1.0
    assert 0 <= out.r.min().item() < 0.5
    assert out.advantages.max().item() > 2.0


def test_groups_can_come_in_any_order():
    rewards = torch.tensor([1.0, 5.0, 2.0, 7.0])
    interleaved = rewards_to_optimality(rewards, torch.tensor([0, 1, 0, 1]))
    contiguous = rewards_to_optimality(rewards[[0, 2, 1, 3]], torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(interleaved.r[[0, 2, 1, 3]], contiguous.r)


def test_bad_inputs():
    with pytest.raises(ValueError, match="equal length"):
        rewards_to_optimality(torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="std_scope"):
        rewards_to_optimality(torch.zeros(2), torch.zeros(2, dtype=torch.long), std_scope="batch")


def test_release_advantage_modes():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 5.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    full = rewards_to_optimality(rewards, groups, adv_clip_max=0.2)  # small c: some advantages clip
    a = full.advantages
    positive = rewards_to_optimality(rewards, groups, adv_clip_max=0.2, mode="positive_only")
    torch.testing.assert_close(positive.r, 0.5 + 0.5 * a.clamp(0, 0.2) / 0.2)
    assert positive.r.min() == 0.5 and positive.r.max() == 1.0
    negative = rewards_to_optimality(rewards, groups, adv_clip_max=0.2, mode="negative_only")
    torch.testing.assert_close(negative.r, 0.5 + 0.5 * a.clamp(-0.2, 0) / 0.2)
    # one_only and binary act on the clipped advantage, then map it as every mode does (the release): with c = 5,
    # r = 0.6 for the better sample of each group, 0.5 for the worse one (one_only) or 0.4 (binary), and 0.5 for
    # a group of equal rewards
    one_only = rewards_to_optimality(rewards, groups, mode="one_only").r
    torch.testing.assert_close(one_only, torch.tensor([0.5, 0.6, 0.5, 0.6, 0.5, 0.5]), rtol=0, atol=1e-7)
    binary = rewards_to_optimality(rewards, groups, mode="binary").r
    torch.testing.assert_close(binary, torch.tensor([0.4, 0.6, 0.4, 0.6, 0.5, 0.5]), rtol=0, atol=1e-7)
    small_c = rewards_to_optimality(rewards, groups, adv_clip_max=0.25, mode="binary").r  # r = 0.5 +- 0.5 / c, in [0, 1]
    assert small_c.tolist() == [0.0, 1.0, 0.0, 1.0, 0.5, 0.5]
    # the advantages themselves are reported unchanged whatever the mode
    torch.testing.assert_close(positive.advantages, a)
    with pytest.raises(ValueError, match="mode"):
        rewards_to_optimality(rewards, groups, mode="positive")
