"""Noise schedules: how much noise each forward step adds.

A schedule is the sequence beta_1 ... beta_T of per-step noise variances of the forward process
q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (Ho et al. 2020, Eq. 2). Each function
here is pure: it returns a float64 tensor of shape (T,) whose entry [i] is the paper's beta_{i+1}.
float64 because the cumulative product alpha_bar_t = prod_s (1 - beta_s) over 1000 factors close
to 1 loses digits in float32; `diffusion.NoiseSchedule` casts to float32 after that product.

Which schedule to use is a modelling choice shown in chapter 3: the linear schedule destroys
information fast at small resolutions (alpha_bar is near zero for the last ~third of the steps),
the cosine schedule spends its steps more evenly in signal-to-noise ratio.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def _scaled_endpoints(T: int, beta_start: float, beta_end: float) -> tuple[float, float]:
    """Endpoints times 1000 / T: any T then gives about the same alpha_bar (improved-diffusion)."""
    if T < 2:
        raise ValueError(f"a schedule needs T >= 2 steps, got T={T}")
    scale = 1000 / T
    if scale * beta_end >= 1:
        raise ValueError(
            f"beta_end * 1000 / T = {scale * beta_end:.3g} >= 1 for T={T}: a step would erase "
            f"the image; use T > {math.floor(1000 * beta_end)} or the cosine schedule"
        )
    return scale * beta_start, scale * beta_end


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Betas rising linearly from beta_start to beta_end. Ho et al. 2020, Sec. 4.

    The defaults are the paper's values for T = 1000; for another T both endpoints are multiplied
    by 1000 / T (as improved-diffusion does), which keeps alpha_bar at a given fraction t / T
    nearly the same, so a short schedule is a coarser version of the long one.
    """
    start, end = _scaled_endpoints(T, beta_start, beta_end)
    return torch.linspace(start, end, T, dtype=torch.float64)  # (T,)


def quadratic_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Betas whose square root rises linearly (the "quadratic" schedule of DDPM/LDM code bases).

    Endpoints are scaled by 1000 / T like `linear_betas`. It has the linear schedule's two endpoints
    and lies below it at every step in between (sqrt is concave, so squaring the straight line in
    sqrt(beta) bends it under the chord): less noise per step, most of all in the middle steps, so
    alpha_bar stays higher for longer and x_T keeps more of the image (alpha_bar_T = 7.3e-4 at
    T = 1000, against 4.0e-5 for the linear schedule).
    """
    start, end = _scaled_endpoints(T, beta_start, beta_end)
    return torch.linspace(start**0.5, end**0.5, T, dtype=torch.float64) ** 2  # (T,)


def cosine_alpha_bar(t: torch.Tensor, T: int, s: float = 0.008) -> torch.Tensor:
    """The cosine schedule's alpha_bar at (float) paper steps t. Nichol & Dhariwal 2021, Eq. (17).

    alpha_bar(t) = f(t) / f(0), with f(t) = cos^2(((t / T + s) / (1 + s)) * pi / 2).
    """
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    return f / f0


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Betas that make alpha_bar follow a squared cosine. Nichol & Dhariwal 2021, Eq. (17).

    beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1), for paper steps t = 1 ... T. The small offset s
    keeps beta_1 from being vanishingly small; betas are clipped at max_beta because near t = T
    alpha_bar(t) -> 0 and beta_T would be 1, a step that forgets x_{t-1} entirely (and makes the
    reverse step's coefficient 1 / sqrt(alpha_t) blow up).
    """
    if T < 2:
        raise ValueError(f"a schedule needs T >= 2 steps, got T={T}")
    t = torch.arange(T + 1, dtype=torch.float64)  # paper steps 0 ... T
    alpha_bar = cosine_alpha_bar(t, T, s)  # (T + 1,)
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]  # (T,)
    return betas.clamp(max=max_beta)


SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {
    "linear": linear_betas,
    "quadratic": quadratic_betas,
    "cosine": cosine_betas,
}


def make_betas(name: str, T: int) -> torch.Tensor:
    """The betas (T,) of a named schedule with its default parameters; see `SCHEDULES`."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name](T)
