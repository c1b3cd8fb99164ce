import pytest
import torch

from diffusers_nft.schedules import ema_decay, old_policy_decay
from diffusers_nft.timesteps import num_train_timesteps, sample_train_sigmas, shift_sigmas


def test_old_policy_decay_schedules():
    assert old_policy_decay(0) == 0.0
    assert old_policy_decay(100) == pytest.approx(0.1)
    assert old_policy_decay(10_000) == 0.5
    assert old_policy_decay(74, "delayed") == 0.0
    assert old_policy_decay(75, "delayed") == 0.0
    assert old_policy_decay(175, "delayed") == pytest.approx(0.75)
    assert old_policy_decay(10_000, "delayed") == 0.999
    assert old_policy_decay(3, "constant", 0.3) == 0.3
    with pytest.raises(ValueError, match="old_policy_decay"):
        old_policy_decay(1, "cosine")


def test_ema_decay():
    assert ema_decay(0) == pytest.approx(0.1)
    assert ema_decay(8) == pytest.approx(0.5)
    assert ema_decay(10_000) == 0.9
    assert ema_decay(10_000, max_decay=0.99) == 0.99


def test_release_trains_nine_of_ten_grid_points():
    assert num_train_timesteps(10, 0.99) == 9
    assert num_train_timesteps(40, 0.99) == 39
    assert num_train_timesteps(1, 0.5) == 1


def test_sampler_grid_draws_distinct_points_per_sample():
    grid = torch.linspace(1.0, 0.1, 10)
    sigmas = sample_train_sigmas(64, 9, "sampler_grid", grid, generator=torch.Generator().manual_seed(0))
    assert sigmas.shape == (64, 9)
    for row in sigmas:
        assert len(set(row.tolist())) == 9
        assert all(any(torch.isclose(v, grid)) for v in row)
    # different samples get different subsets and orders
    assert len({tuple(row.tolist()) for row in sigmas}) > 32
    with pytest.raises(ValueError, match="grid"):
        sample_train_sigmas(2, 11, "sampler_grid", grid)


def test_sampler_grid_draws_every_level_equally_often():
    # 9 of 10 levels per sample: each level, the first and the last included, is in 90% of the samples.
    grid = torch.linspace(1.0, 0.1, 10)
    sigmas = sample_train_sigmas(4000, 9, "sampler_grid", grid, generator=torch.Generator().manual_seed(1))
    share = (sigmas.unsqueeze(-1) == grid).any(dim=1).float().mean(dim=0)
    torch.testing.assert_close(share, torch.full((10,), 0.9), atol=0.02, rtol=0)
    # and each position of a row is any level alike (the order of the levels a sample trains on is random)
    first = (sigmas[:, :1] == grid).float().mean(dim=0)
    torch.testing.assert_close(first, torch.full((10,), 0.1), atol=0.02, rtol=0)


def test_continuous_draws_with_shift():
    g = torch.Generator().manual_seed(0)
    uniform = sample_train_sigmas(4000, 1, "uniform", shift=1.0, generator=g)
    assert 0 < uniform.min() and uniform.max() <= 1 and abs(uniform.mean().item() - 0.5) < 0.02
    shifted = sample_train_sigmas(4000, 1, "uniform", shift=3.0, generator=g)
    assert shifted.mean() > 0.65  # a shift > 1 moves mass to high noise
    logit = sample_train_sigmas(4000, 1, "logit_normal", shift=1.0, generator=g)
    assert abs(logit.median().item() - 0.5) < 0.03
    assert shift_sigmas(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="train_timesteps"):
        sample_train_sigmas(2, 1, "beta")


def test_continuous_levels_are_floored_at_1e_minus_3_and_logit_normal_has_its_mean_and_std():
    g = torch.Generator().manual_seed(1)
    # About 0.1% of uniform draws fall below 1e-3 (x_t = x0 there teaches nothing): they become exactly 1e-3.
    uniform = sample_train_sigmas(200_000, 1, "uniform", shift=1.0, generator=g)
    assert uniform.min().item() == pytest.approx(1e-3, rel=1e-6)
    assert 0.0007 < (uniform == uniform.min()).float().mean().item() < 0.0013
    logit = sample_train_sigmas(100_000, 1, "logit_normal", shift=1.0, logit_mean=1.0, logit_std=0.5, generator=g)
    logits = torch.logit(logit.double())
    assert logits.mean().item() == pytest.approx(1.0, abs=0.01) and logits.std().item() == pytest.approx(0.5, abs=0.01)
