import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from diffusers_nft.sampling import SAMPLERS, is_flow_matching_scheduler, make_sampler, rollout, sigma_grid


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_solver_integrates_an_exact_flow(name):
    # For data concentrated at x0 the exact velocity is (x_t - x0) / sigma: every solver must land on x0.
    base = FlowMatchEulerDiscreteScheduler(shift=3.0)
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    calls = []

    def velocity(latents, sigma):
        calls.append(sigma.clone())
        return (latents - x0) / sigma.view(-1, 1, 1, 1)

    out = rollout(velocity, make_sampler(name, base), noise, num_steps=10)
    assert (out - x0).abs().max() < 1e-2
    assert len(calls) == (19 if name == "heun" else 10)  # Heun takes two evaluations per step but the last
    assert all(0 < s[0] <= 1 for s in calls)


@pytest.mark.parametrize("name", SAMPLERS)
def test_sigma_grid_is_decreasing_and_keeps_the_shift(name):
    grid = sigma_grid(make_sampler(name, FlowMatchEulerDiscreteScheduler(shift=3.0)), 10)
    assert grid.shape == (10,)
    assert torch.all(grid[1:] < grid[:-1]) and grid[0] <= 1 and grid[-1] > 0
    unshifted = sigma_grid(make_sampler(name, FlowMatchEulerDiscreteScheduler(shift=1.0)), 10)
    assert grid[5] > unshifted[5]


def test_flow_matching_detection():
    assert is_flow_matching_scheduler(FlowMatchEulerDiscreteScheduler())
    for name in SAMPLERS:
        assert is_flow_matching_scheduler(make_sampler(name, FlowMatchEulerDiscreteScheduler()))
    assert not is_flow_matching_scheduler(DDIMScheduler())
    with pytest.raises(ValueError, match="Unknown sampler"):
        make_sampler("ddim", FlowMatchEulerDiscreteScheduler())
