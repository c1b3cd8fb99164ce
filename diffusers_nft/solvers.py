"""Deterministic ODE solvers of the rectified flow on a given noise grid. Pure tensor math: no diffusers, no models.

Every solver integrates `dx/dsigma = v(x, sigma)` from `sigmas[0]` (1.0: pure noise) to `sigmas[-1]` (0: clean)
and calls the model only at `sigmas[:-1]`, the grid's positive values. The grid is the one the pipeline's own
scheduler produces (see `diffusers_nft.sampling.pipeline_sigmas`), so data is collected, and trained on, at the
noise levels the model is used at. With `x_t = (1 - sigma) * x0 + sigma * eps`, `alpha = 1 - sigma` and
`lambda = log(alpha / sigma)`, the multistep solvers work on the x0 prediction `x - sigma * v`:

- `euler`: `x <- x + (sigma' - sigma) * v`.
- `heun`: Euler, then the trapezoidal correction with a second call at `sigma'` (Euler on the step to 0).
- `dpm_solver`: DPM-Solver++(2M) (Lu et al. 2022), first order on the first and the last step (the release's).
- `unipc`: UniPC with the B(h) = e^h - 1 ("bh2") variant of order 2 and its UniC corrector (Zhao et al. 2023),
  first order on the last step (as diffusers' `UniPCMultistepScheduler` with `lower_order_final`).

At sigma = 1, `alpha = 0` and `lambda = -inf`: the formulas are used in their limits there, so a first step from
pure noise is exact rather than starting from `1 - 1e-6`.
"""

import math
from typing import Callable, List

import torch

SAMPLERS = ("euler", "heun", "dpm_solver", "unipc")

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def model_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """The distinct noise levels at which every solver calls the model: the grid without its final 0."""
    return sigmas[sigmas > 0]


def _lambda(sigma: float) -> float:
    """Half log-SNR `log((1 - sigma) / sigma)`, with its limits -inf at sigma = 1 and +inf at sigma = 0."""
    if sigma >= 1:
        return -math.inf
    if sigma <= 0:
        return math.inf
    return math.log((1 - sigma) / sigma)


def _first_order(x: torch.Tensor, x0: torch.Tensor, s: float, t: float) -> torch.Tensor:
    """DDIM / DPM-Solver++(1) from `s` to `t`: `(t / s) * x + alpha_t * (1 - e^-h) * x0`, `h = lambda_t - lambda_s`."""
    return (t / s) * x + ((1 - t) - (1 - s) * t / s) * x0


def _check(sigmas: torch.Tensor, method: str) -> None:
    if method not in SAMPLERS:
        raise ValueError(f"Unknown sampler {method!r}; choose one of {SAMPLERS}.")
    if sigmas.ndim != 1 or len(sigmas) < 2 or float(sigmas[-1]) != 0 or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError(f"sigmas must decrease strictly and end at 0, got {sigmas.tolist()}.")


@torch.no_grad()
def integrate(velocity_fn: VelocityFn, noise: torch.Tensor, sigmas: torch.Tensor, method: str) -> torch.Tensor:
    """Integrate the probability-flow ODE from `noise` at `sigmas[0]` down to `sigmas[-1] = 0`.

    Args:
        velocity_fn: Maps `(latents, sigma)`, with `sigma` a float32 tensor of shape `(B,)`, to the velocity
            `eps - x0`.
        noise: Starting latents.
        sigmas: Decreasing noise levels ending at 0, shape `(num_steps + 1,)`.
        method: One of `SAMPLERS`.

    Returns:
        The final latents, in the dtype of `noise`.
    """
    _check(sigmas, method)
    grid = [float(s) for s in sigmas.double()]
    step = {"euler": _euler, "heun": _heun, "dpm_solver": _dpm_solver, "unipc": _unipc}[method]

    def call(x: torch.Tensor, s: float) -> torch.Tensor:
        sigma = torch.full((x.shape[0],), s, dtype=torch.float32, device=x.device)
        return velocity_fn(x, sigma).to(torch.float32)

    return step(call, noise.to(torch.float32), grid).to(noise.dtype)


def _euler(call, x, grid: List[float]) -> torch.Tensor:
    for s, t in zip(grid[:-1], grid[1:]):
        x = x + (t - s) * call(x, s)
    return x


def _heun(call, x, grid: List[float]) -> torch.Tensor:
    for s, t in zip(grid[:-1], grid[1:]):
        v = call(x, s)
        x_euler = x + (t - s) * v
        x = x_euler if t == 0 else x + (t - s) * 0.5 * (v + call(x_euler, t))
    return x


def _dpm_solver(call, x, grid: List[float]) -> torch.Tensor:
    """DPM-Solver++(2M): `x_t = first_order(D)` with `D = m0 + (m0 - m1) / (2 r)`, `r = h_prev / h`."""
    last = len(grid) - 2
    previous = None  # (sigma, x0 prediction) of the step before
    for i, (s, t) in enumerate(zip(grid[:-1], grid[1:])):
        m0 = x - s * call(x, s)
        d = m0
        if previous is not None and i != last:
            (s_prev, m1), h = previous, _lambda(t) - _lambda(s)
            r = (_lambda(s) - _lambda(s_prev)) / h  # inf after the step from sigma = 1: first order then
            d = m0 + (0.5 / r) * (m0 - m1)
        x = _first_order(x, d, s, t)
        previous = (s, m0)
    return x


def _unic_weights(h: float, rk: float):
    """Weights `(rho_history, rho_new)` of the order-2 UniC corrector (bh2) for a step of log-SNR length `h`."""
    hh = -h
    phi = math.expm1(hh)
    b1 = (phi / hh - 1) / phi
    b2 = 2 * ((phi / hh - 1) / hh - 0.5) / phi
    rho_history = (b1 - b2) / (1 - rk)  # 0 when the history point is at sigma = 1 (rk = -inf)
    return rho_history, b1 - rho_history


def _unipc(call, x, grid: List[float]) -> torch.Tensor:
    """UniPC-bh2 of order 2: the predictor equals DPM-Solver++(2M); the corrector reuses the next model call."""
    last = len(grid) - 2
    history = []  # (sigma, x0 prediction), newest last
    x_prev, order_prev = None, 0
    for i, (s, t) in enumerate(zip(grid[:-1], grid[1:])):
        m = x - s * call(x, s)
        if x_prev is not None:  # correct the last step with the model output at its end point
            s0, m0 = history[-1]
            h = _lambda(s) - _lambda(s0)
            base = _first_order(x_prev, m0, s0, s)
            coeff = (1 - s) - (1 - s0) * s / s0
            if order_prev == 1:
                x = base + coeff * 0.5 * (m - m0)
            else:
                s1, m1 = history[-2]
                rk = (_lambda(s1) - _lambda(s0)) / h
                rho_history, rho_new = _unic_weights(h, rk)
                x = base + coeff * (rho_history * (m1 - m0) / rk + rho_new * (m - m0))
        history = (history + [(s, m)])[-2:]
        order = 1 if i == last or len(history) < 2 else 2
        d = m
        if order == 2:
            (s1, m1), h = history[-2], _lambda(t) - _lambda(s)
            rk = (_lambda(s1) - _lambda(s)) / h
            d = m + 0.5 * (m1 - m) / rk
        x_prev, order_prev = x, order
        x = _first_order(x, d, s, t)
    return x
