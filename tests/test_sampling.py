"""The solvers on the pipeline's own grid, checked against closed-form answers and reference solvers."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from diffusers_nft.sampling import SAMPLERS, is_flow_matching_scheduler, model_sigmas, pipeline_sigmas, rollout

# SD3.5-Medium's FlowMatchEulerDiscreteScheduler (shift 3) at 10 steps, as the release samples and trains on it.
SD35_GRID_10 = [1.0, 0.96013, 0.91335, 0.85769, 0.79037, 0.70728, 0.60215, 0.46488, 0.27805, 0.00893, 0.0]


class GaussianMixture:
    """Data `x0 ~ sum_k w_k N(mu_k, s^2)` in 1-D, whose flow velocity `E[eps - x0 | x_t]` is known in closed form."""

    def __init__(self, means=(-1.0, 1.0), weights=(0.3, 0.7), std=0.3):
        self.means, self.weights, self.std = torch.tensor(means).double(), torch.tensor(weights).double(), std

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x, t = x.double(), sigma.double().view(-1, 1)
        var = (1 - t) ** 2 * self.std**2 + t**2  # of x_t given the component
        log_p = torch.log(self.weights) - (x - (1 - t) * self.means) ** 2 / (2 * var)
        posterior_x0 = self.means + (1 - t) * self.std**2 / var * (x - (1 - t) * self.means)
        x0 = (torch.softmax(log_p, dim=1) * posterior_x0).sum(dim=1, keepdim=True)
        return ((x - x0) / t).float()

    def moments(self):
        mean = float((self.weights * self.means).sum())
        second = float((self.weights * (self.means**2 + self.std**2)).sum())
        return mean, math.sqrt(second - mean**2), float(self.weights[self.means > 0].sum())


def grid(num_steps: int, shift: float = 3.0) -> torch.Tensor:
    return pipeline_sigmas(FlowMatchEulerDiscreteScheduler(shift=shift), num_steps)


def reference_dpm_solver_pp_2m(velocity, noise, sigmas):
    """DPM-Solver++(2M) written from the paper in log-SNR form (float64), first order on the first and last step."""
    x, sigmas, outputs = noise.double(), sigmas.double(), []
    lam = lambda s: torch.log(1 - s) - torch.log(s)  # -inf at sigma = 1, +inf at 0
    last = len(sigmas) - 2
    for i in range(len(sigmas) - 1):
        s, t = sigmas[i], sigmas[i + 1]
        outputs.append(x - s * velocity(x.float(), torch.full((len(x),), float(s))).double())
        m0 = outputs[-1]
        if i == 0 or i == last:
            x = (t / s) * x + ((1 - t) - t * (1 - s) / s) * m0
        else:
            h, h0 = lam(t) - lam(s), lam(s) - lam(sigmas[i - 1])
            d1 = (m0 - outputs[-2]) / (h0 / h)
            x = (t / s) * x - (1 - t) * torch.expm1(-h) * m0 - 0.5 * (1 - t) * torch.expm1(-h) * d1
    return x


def test_the_grid_is_the_pipeline_schedulers_own():
    torch.testing.assert_close(grid(10), torch.tensor(SD35_GRID_10, dtype=torch.float64), atol=5e-6, rtol=0)
    # what diffusers' own loop sets: the same values, including resolution-dependent shifting through mu
    dynamic = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    flux_sigmas = np.linspace(1.0, 1 / 6, 6)
    dynamic.set_timesteps(sigmas=flux_sigmas, mu=0.8)
    torch.testing.assert_close(pipeline_sigmas(dynamic, 6, flux_sigmas, mu=0.8), dynamic.sigmas.double())
    with pytest.raises(ValueError, match="mu"):
        pipeline_sigmas(dynamic, 6)


def test_dpm_solver_matches_a_reference_dpm_solver_pp_2m():
    mixture = GaussianMixture()
    noise = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0))
    for steps in (10, 25):
        ours = rollout(mixture.velocity, grid(steps), noise, "dpm_solver")
        reference = reference_dpm_solver_pp_2m(mixture.velocity, noise, grid(steps))
        assert (ours.double() - reference).abs().max() <= 1e-4


def test_unipc_matches_diffusers_unipc_on_the_same_grid():
    # diffusers starts from 1 - 1e-6 where sigma is 1 (alpha = 0); on a grid below 1 the two must agree.
    mixture = GaussianMixture()
    noise = torch.randn(2000, 1, generator=torch.Generator().manual_seed(1))
    for steps in (5, 10, 25):
        sigmas = grid(steps)
        sigmas[0] = 0.99
        theirs = UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=1.0,
                                         final_sigmas_type="zero", solver_order=2)
        theirs.set_timesteps(sigmas=sigmas[:-1].numpy())
        x = noise.clone()
        for i, t in enumerate(theirs.timesteps):
            v = mixture.velocity(x, torch.full((len(x),), float(theirs.sigmas[i])))
            x = theirs.step(v, t, x).prev_sample
        assert (rollout(mixture.velocity, sigmas, noise, "unipc") - x).abs().max() <= 1e-4


@pytest.mark.parametrize("name", SAMPLERS)
def test_sample_statistics_approach_the_truth_as_steps_grow(name):
    mixture = GaussianMixture()
    # Normal quantiles rather than random draws: the exact flow maps them to the mixture's quantiles, so the
    # statistics carry no sampling error and what is left is the solver's.
    noise = torch.special.ndtri((torch.arange(20000, dtype=torch.float64) + 0.5) / 20000).float().view(-1, 1)
    truth = torch.tensor(mixture.moments())

    def error(steps):
        x = rollout(mixture.velocity, grid(steps), noise, name)
        return (torch.tensor([x.mean(), x.std(), (x > 0).float().mean()]) - truth).abs().max().item()

    errors = [error(steps) for steps in (10, 40, 200)]
    assert errors[2] < errors[1] < errors[0], errors
    assert errors[2] < 1e-2, errors


@pytest.mark.parametrize("name", SAMPLERS)
def test_the_model_is_called_exactly_at_the_training_grid(name):
    # For data at x0 the exact velocity is (x_t - x0) / sigma: every solver lands on x0, and calls the model at
    # the grid's positive values only, which are the training noise levels of train_timesteps="sampler_grid".
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    calls = []

    def velocity(latents, sigma):
        assert sigma.dtype == torch.float32 and sigma.shape == (2,)
        calls.append(float(sigma[0]))
        return (latents - x0) / sigma.view(-1, 1, 1, 1)

    sigmas = grid(10)
    out = rollout(velocity, sigmas, noise, name)
    assert (out - x0).abs().max() < 1e-4
    assert sorted(set(calls), reverse=True) == model_sigmas(sigmas).float().tolist()
    assert len(calls) == (19 if name == "heun" else 10)  # Heun: two calls per step but the last


def test_flow_matching_detection_and_bad_names():
    assert is_flow_matching_scheduler(FlowMatchEulerDiscreteScheduler())
    assert not is_flow_matching_scheduler(DDIMScheduler())
    with pytest.raises(ValueError, match="Unknown sampler"):
        rollout(lambda x, s: x, grid(4), torch.zeros(1, 1), "ddim")
    with pytest.raises(ValueError, match="end at 0"):
        rollout(lambda x, s: x, grid(4)[:-1], torch.zeros(1, 1), "euler")


@pytest.mark.parametrize("name, order", [("euler", 1), ("heun", 2)])
def test_the_order_of_convergence_is_the_solvers(name, order):
    # dx/dsigma = x from sigma 1 to 0 ends at x(1) / e: halving the step divides the error by 2^order. A Heun step
    # with unequal weights (0.25 / 0.75) still converges, but at first order.
    noise = torch.tensor([[1.0], [-2.0]])

    def error(steps):
        x = rollout(lambda x, sigma: x, torch.linspace(1.0, 0.0, steps + 1), noise, name)
        return (x.double() - noise.double() / math.e).abs().max().item()

    errors = [error(steps) for steps in (8, 16, 32)]
    for coarse, fine in zip(errors, errors[1:]):
        assert math.log2(coarse / fine) == pytest.approx(order, abs=0.25), errors
