import subprocess
import sys

import pytest
import torch

from diffusers_nft import NFTLoss


def _batch(seed=0, shape=(3, 2, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    x0, noise, v_old = (torch.randn(shape, generator=g) for _ in range(3))
    sigma = torch.tensor([0.2, 0.5, 0.9])
    r = torch.tensor([1.0, 0.25, 0.5])
    return x0, noise, v_old, sigma, r


def test_velocity_weighting_matches_hand_computation():
    x0 = torch.tensor([[1.0, 2.0]])
    noise = torch.tensor([[0.0, 1.0]])
    v_theta = torch.tensor([[0.5, -1.0]])
    v_old = torch.tensor([[0.0, 0.0]])
    sigma, r = torch.tensor([0.5]), torch.tensor([0.75])
    beta = 0.5
    # target v = noise - x0 = [-1, -1]
    # v_pos = 0.5 * v_theta + 0.5 * v_old = [0.25, -0.5]; err = mean([1.5625, 0.25]) = 0.90625
    # v_neg = 1.5 * v_old - 0.5 * v_theta = [-0.25, 0.5]; err = mean([0.5625, 2.25]) = 1.40625
    # L = 0.75 * 0.90625 + 0.25 * 1.40625 = 1.03125; scaled by c / beta = 5 / 0.5 = 10
    out = NFTLoss(nft_beta=beta, weighting="velocity", kl_beta=0)(v_theta, v_old, x0, noise, sigma, r)
    assert out.loss.item() == pytest.approx(10.3125)
    assert out.policy_loss.item() == pytest.approx(10.3125)
    assert out.kl.item() == 0
    # x0 predicted by v_theta: x_t = [0.5, 1.5]; x0_hat = x_t - 0.5 * v_theta = [0.25, 2.0]
    assert out.x0_norm.item() == pytest.approx((0.25**2 + 2.0**2) ** 0.5)
    assert out.deviation.item() == pytest.approx((0.25 + 1.0) ** 0.5)


def test_x0_adaptive_weighting_matches_hand_computation():
    x0 = torch.tensor([[1.0, 2.0]])
    noise = torch.tensor([[0.0, 1.0]])
    v_theta = torch.tensor([[0.5, -1.0]])
    v_old = torch.tensor([[0.0, 0.0]])
    sigma, r = torch.tensor([0.5]), torch.tensor([0.75])
    # beta = 1: v_pos = v_theta, v_neg = -v_theta. x_t = [0.5, 1.5]
    # x0_pos = x_t - 0.5 * v_pos = [0.25, 2.0]; diff = [-0.75, 0]; w = 0.375; mse = 0.28125 -> 0.75
    # x0_neg = x_t + 0.5 * v_theta = [0.75, 1.0]; diff = [-0.25, -1]; w = 0.625; mse = 0.53125 -> 0.85
    # L = 0.75 * 0.75 + 0.25 * 0.85 = 0.775; times 5 / 1
    out = NFTLoss(nft_beta=1.0, weighting="x0_adaptive", kl_beta=0)(v_theta, v_old, x0, noise, sigma, r)
    assert out.loss.item() == pytest.approx(3.875)


def test_drop_negative_term_keeps_only_the_r_weighted_positive_term():
    x0 = torch.tensor([[1.0, 2.0]])
    noise = torch.tensor([[0.0, 1.0]])
    v_theta = torch.tensor([[0.5, -1.0]], requires_grad=True)
    v_old = torch.tensor([[0.0, 0.0]])
    sigma = torch.tensor([0.5])
    # same numbers as the velocity test: positive error 0.90625, weighted by r = 0.75, times c / beta = 10
    out = NFTLoss(nft_beta=0.5, weighting="velocity", kl_beta=0, drop_negative_term=True)(
        v_theta, v_old, x0, noise, sigma, torch.tensor([0.75])
    )
    assert out.loss.item() == pytest.approx(0.75 * 0.90625 * 10)
    # a sample with r = 0 teaches nothing without the negative term (NFT would push v_theta away from it)
    v_theta.grad = None
    NFTLoss(drop_negative_term=True, kl_beta=0)(v_theta, v_old, x0, noise, sigma, torch.tensor([0.0])).loss.backward()
    assert v_theta.grad.abs().max().item() == 0.0
    NFTLoss(kl_beta=0)(v_theta, v_old, x0, noise, sigma, torch.tensor([0.0])).loss.backward()
    assert v_theta.grad.abs().max().item() > 0.0


def test_kl_term_and_its_weight():
    x0, noise, v_old, sigma, r = _batch()
    v_theta = v_old + 0.1
    v_ref = v_old - 0.2
    loss_fn = NFTLoss(kl_beta=0.5)
    without = loss_fn(v_theta, v_old, x0, noise, sigma, r)
    with_ref = loss_fn(v_theta, v_old, x0, noise, sigma, r, v_ref=v_ref)
    assert without.kl.item() == 0 and without.loss.item() == pytest.approx(without.policy_loss.item())
    assert with_ref.kl.item() == pytest.approx(0.09, rel=1e-5)
    assert with_ref.loss.item() == pytest.approx(with_ref.policy_loss.item() + 0.5 * 0.09, rel=1e-5)


def test_reward_adaptive_kl_weights_each_samples_kl_by_its_r():
    # CRD's: the coefficient runs from min(kl_beta, 1e-4) at r = 0 to kl_beta at r = 1
    x0, noise, v_old, sigma, r = _batch()  # r = 1, 0.25, 0.5
    v_theta = v_old + torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1, 1)
    v_ref = v_old.clone()
    out = NFTLoss(kl_beta=0.01, reward_adaptive_kl=True)(v_theta, v_old, x0, noise, sigma, r, v_ref=v_ref)
    per_sample = torch.tensor([0.01, 0.04, 0.09])
    coefficients = 1e-4 + r * (0.01 - 1e-4)
    assert out.kl.item() == pytest.approx(per_sample.mean().item(), rel=1e-5)  # the reported KL stays the plain mean
    expected = out.policy_loss.item() + (coefficients * per_sample).mean().item()
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    plain = NFTLoss(kl_beta=0.01)(v_theta, v_old, x0, noise, sigma, r, v_ref=v_ref)
    assert plain.loss.item() == pytest.approx(plain.policy_loss.item() + 0.01 * per_sample.mean().item(), rel=1e-5)


def test_the_norm_guard_is_a_hinge_on_the_velocity_norm_ratio():
    x0, noise, v_old, sigma, r = _batch()
    v_ref = torch.ones(3, 2, 4, 4)
    scale = torch.tensor([1.02, 1.2, 0.8]).view(3, 1, 1, 1)  # ratios 1.02 (inside the 5% margin), 1.2, 0.8
    v_theta = (v_ref * scale).requires_grad_(True)
    loss_fn = NFTLoss(kl_beta=0, norm_guard_weight=2.0, norm_guard_margin=0.05)
    assert loss_fn.needs_reference and not NFTLoss(kl_beta=0).needs_reference
    out = loss_fn(v_theta, v_old, x0, noise, sigma, r, v_ref=v_ref)
    assert out.norm_penalty.item() == pytest.approx((1.2 - 1.05) / 3, rel=1e-5)
    assert out.loss.item() == pytest.approx(out.policy_loss.item() + 2.0 * (1.2 - 1.05) / 3, rel=1e-5)
    guard_only = NFTLoss(kl_beta=0, norm_guard_weight=2.0)(v_theta, v_theta.detach(), x0, noise, sigma,
                                                            torch.full((3,), 0.5), v_ref=v_ref)
    guard_only.loss.backward()  # at v_theta = v_old with equal r only the hinge has a gradient: on sample 2 alone
    grads = v_theta.grad.flatten(1).norm(dim=1)
    assert grads[0] == 0 and grads[2] == 0 and grads[1] > 0
    assert NFTLoss(kl_beta=0)(v_theta, v_old, x0, noise, sigma, r, v_ref=v_ref).norm_penalty.item() == 0


@pytest.mark.parametrize("weighting", ["x0_adaptive", "velocity"])
def test_gradient_at_old_policy_is_the_same_for_every_beta(weighting):
    x0, noise, v_old, sigma, r = _batch()
    grads = []
    for beta in (0.1, 0.5, 1.0, 2.0):
        v_theta = v_old.clone().requires_grad_(True)
        NFTLoss(nft_beta=beta, weighting=weighting, kl_beta=0)(v_theta, v_old, x0, noise, sigma, r).loss.backward()
        grads.append(v_theta.grad)
    assert grads[0].abs().sum() > 0
    for grad in grads[1:]:
        torch.testing.assert_close(grad, grads[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weighting", ["x0_adaptive", "velocity"])
def test_r_one_pulls_toward_target_and_r_zero_pushes_away(weighting):
    x0, noise, v_old, sigma, _ = _batch(seed=1)
    target = noise - x0
    for r_value, sign in ((1.0, -1), (0.0, +1)):
        v_theta = v_old.clone().requires_grad_(True)
        r = torch.full((3,), r_value)
        NFTLoss(weighting=weighting, kl_beta=0)(v_theta, v_old, x0, noise, sigma, r).loss.backward()
        stepped = v_old - 1e-3 * v_theta.grad
        before = ((v_old - target) ** 2).flatten(1).sum(1)
        after = ((stepped - target) ** 2).flatten(1).sum(1)
        assert torch.all(torch.sign(after - before) == sign), (r_value, before, after)


def test_equal_r_gives_zero_gradient_at_old_policy():
    x0, noise, v_old, sigma, _ = _batch(seed=2)
    v_theta = v_old.clone().requires_grad_(True)
    NFTLoss(kl_beta=0)(v_theta, v_old, x0, noise, sigma, torch.full((3,), 0.5)).loss.backward()
    assert v_theta.grad.abs().max() < 1e-6


def test_v_old_receives_no_gradient():
    x0, noise, v_old, sigma, r = _batch()
    v_old = v_old.clone().requires_grad_(True)
    v_theta = (v_old.detach() + 0.3).requires_grad_(True)
    NFTLoss()(v_theta, v_old, x0, noise, sigma, r).loss.backward()
    assert v_old.grad is None and v_theta.grad is not None


def _release_nft_loss(v_theta, v_old, x0, noise, sigma, r, beta, adv_clip_max=5.0):
    """The release's x0-adaptive NFT loss, transcribed line by line (its `train_nft_sd3.py` loop), as the oracle."""
    t = sigma.view(-1, *([1] * (x0.ndim - 1)))
    xt = (1 - t) * x0 + t * noise
    dims = tuple(range(1, x0.ndim))
    positive_prediction = beta * v_theta + (1 - beta) * v_old.detach()
    implicit_negative_prediction = (1.0 + beta) * v_old.detach() - beta * v_theta
    x0_prediction = xt - t * positive_prediction
    with torch.no_grad():
        weight_factor = torch.abs(x0_prediction.double() - x0.double()).mean(dim=dims, keepdim=True).clip(min=0.00001)
    positive_loss = ((x0_prediction - x0) ** 2 / weight_factor).mean(dim=dims)
    negative_x0_prediction = xt - t * implicit_negative_prediction
    with torch.no_grad():
        negative_weight_factor = (
            torch.abs(negative_x0_prediction.double() - x0.double()).mean(dim=dims, keepdim=True).clip(min=0.00001)
        )
    negative_loss = ((negative_x0_prediction - x0) ** 2 / negative_weight_factor).mean(dim=dims)
    ori_policy_loss = r * positive_loss / beta + (1.0 - r) * negative_loss / beta
    return (ori_policy_loss * adv_clip_max).mean()


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_x0_adaptive_loss_and_gradient_match_the_release_at_every_noise_level(beta):
    # Away from sigma 0.5 x0 and noise are not symmetric in x_t, so a swapped x_t convention changes the value; the
    # gradient is where a weight without its stop-gradient shows (its value is the same).
    g = torch.Generator().manual_seed(3)
    x0, noise, v_old = (torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64) for _ in range(3))
    v_theta = v_old + 0.4 * torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.3, 0.7, 0.95], dtype=torch.float64)
    r = torch.tensor([1.0, 0.2, 0.6, 0.0], dtype=torch.float64)
    ours_v, theirs_v = v_theta.clone().requires_grad_(True), v_theta.clone().requires_grad_(True)
    ours = NFTLoss(nft_beta=beta, kl_beta=0)(ours_v, v_old, x0, noise, sigma, r).loss
    theirs = _release_nft_loss(theirs_v, v_old, x0, noise, sigma, r, beta)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    torch.testing.assert_close(ours_v.grad, theirs_v.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("error, floored", [(1e-3, False), (3e-6, True)])
def test_the_x0_weight_is_the_mean_absolute_error_floored_at_1e_minus_5(error, floored):
    # theta's velocity is the true one plus `error`: the weight is the mean |x0 error| (sigma * error here), and the
    # release floors it at 1e-5. A floor of 1e-2 would scale the first case's loss down 10x, the second's 1000x.
    g = torch.Generator().manual_seed(7)
    x0, noise = (torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(2))
    sigma, r = torch.tensor([0.5, 0.8], dtype=torch.float64), torch.tensor([1.0, 1.0], dtype=torch.float64)
    v = noise - x0 + error * torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64).sign()
    ours = NFTLoss(nft_beta=1.0, kl_beta=0)(v, v, x0, noise, sigma, r).loss.item()
    theirs = _release_nft_loss(v, v, x0, noise, sigma, r, beta=1.0).item()
    # x0 error sigma * error everywhere: mean(d^2) / max(mean|d|, 1e-5), times adv_clip_max 5
    expected = 5 * (sigma * error).pow(2) / (sigma * error).clamp(min=1e-5)
    assert ((sigma * error) < 1e-5).all() == floored
    assert ours == pytest.approx(theirs, rel=1e-2) and ours == pytest.approx(expected.mean().item(), rel=1e-2)


def test_the_x0_prediction_uses_x_t_built_from_one_minus_sigma_x0_plus_sigma_noise():
    # One sample at sigma 0.2 where the trained policy's velocity is the true one: x0 is predicted exactly only if
    # x_t = 0.8 x0 + 0.2 noise; the swapped convention (0.2 x0 + 0.8 noise) predicts it 0.6 |x0 - noise| away.
    x0, noise = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.5, 1.5]])
    exact = noise - x0
    out = NFTLoss(nft_beta=1.0, kl_beta=0)(exact, exact, x0, noise, torch.tensor([0.2]), torch.tensor([1.0]))
    assert out.policy_loss.item() == pytest.approx(0.0, abs=1e-9)
    assert out.x0_norm.item() == pytest.approx(x0.norm().item(), rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(nft_beta=0), "nft_beta"),
        (dict(adv_clip_max=-1), "adv_clip_max"),
        (dict(weighting="x0"), "weighting"),
        (dict(kl_beta=-1e-3), "kl_beta"),
        (dict(norm_guard_weight=-1.0), "norm_guard_weight"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NFTLoss(**kwargs)


def test_math_modules_import_no_diffusers():
    code = (
        "import sys; import diffusers_nft.loss, diffusers_nft.advantages, diffusers_nft.timesteps, "
        "diffusers_nft.schedules, diffusers_nft.solvers, diffusers_nft.recipes, diffusers_nft.monitors, diffusers_nft.grpo; from diffusers_nft import NFTLoss, NFTConfig; "
        "bad = [m for m in ('diffusers', 'accelerate', 'peft') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sigma_of_shape_b_or_b_1_1_1_gives_the_same_loss_and_the_readme_snippet_runs():
    # docs/python-api.md's snippet with B = 3 and width 8: sigma (B,) viewed against the latents, not along its width.
    g = torch.Generator().manual_seed(0)
    x0, noise, v_theta, v_old, v_ref = (torch.randn(3, 4, 8, 8, generator=g) for _ in range(5))
    sigma, r = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([1.0, 0.5, 0.0])
    loss_fn = NFTLoss(nft_beta=1.0, adv_clip_max=5.0, weighting="x0_adaptive", kl_beta=1e-4)
    s = sigma.view(-1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * noise
    flat = loss_fn(v_theta, v_old, x0=x0, noise=noise, sigma=sigma, r=r, v_ref=v_ref)
    viewed = loss_fn(v_theta, v_old, x0=x0, noise=noise, sigma=s, r=r, v_ref=v_ref)
    assert torch.equal(flat.loss, viewed.loss) and x_t.shape == x0.shape
    with pytest.raises(ValueError, match=r"sigma must have shape \(3,\) or \(3, 1, 1, 1\)"):
        loss_fn(v_theta, v_old, x0=x0, noise=noise, sigma=sigma.view(3, 1), r=r)
