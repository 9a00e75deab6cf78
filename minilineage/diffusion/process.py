"""The forward (noising) process of DDPM and its posterior: the maths every diffusion model here shares.

Ho et al. 2020, "Denoising Diffusion Probabilistic Models". Notation follows the paper:
beta_t, alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s, x0 the data, xt the noisy sample.

Timesteps are 0-based. A timestep `t` in code is an int64 tensor of indices in [0, T-1] into the
coefficient tensors, and index t stands for the paper's step t + 1: `sched.beta[0]` is beta_1,
`sched.alpha_bar[t]` is alpha_bar_{t+1}, and `q_sample(sched, x0, t, eps)` returns the paper's
x_{t+1}. The data x0 is the paper's x_0 and has no index. Models receive these same indices.

Every coefficient is computed once, in float64, by `NoiseSchedule.from_betas`, then stored in
float32 and picked out per sample with `gather`. The functions below are pure: randomness comes
in as `eps` or through an explicit `torch.Generator`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from minilineage.diffusion.schedules import make_betas

Model = Callable[..., Tensor]  # model(x, t, **cond) -> prediction, shaped like x
Device = torch.device | str


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """The coefficient tensors (T,) of a DDPM process, named after the maths.

    Built once by `from_betas` or `named`, then read with `gather(sched.alpha_bar, t, x.ndim)`;
    the naming follows improved-diffusion.
    """

    beta: Tensor
    alpha: Tensor  # 1 - beta
    alpha_bar: Tensor  # prod_{s <= t} alpha_s
    alpha_bar_prev: Tensor  # alpha_bar_{t-1}, with alpha_bar_0 = 1 (no noise before step 1)
    sqrt_alpha_bar: Tensor
    sqrt_one_minus_alpha_bar: Tensor
    posterior_variance: Tensor  # beta_tilde_t, Eq. (7)
    posterior_log_variance_clipped: Tensor  # log beta_tilde_t, with the 0 at t = 1 replaced
    posterior_mean_coef1: Tensor  # multiplies x0 in mu_tilde_t, Eq. (7)
    posterior_mean_coef2: Tensor  # multiplies xt in mu_tilde_t, Eq. (7)

    @classmethod
    def from_betas(cls, betas: Tensor) -> NoiseSchedule:
        """Precompute every coefficient from betas (T,) in float64, store them in float32."""
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) < 2:
            raise ValueError(f"betas must have shape (T,) with T >= 2, got {tuple(betas.shape)}")
        if not ((betas > 0) & (betas < 1)).all():
            low, high = betas.min().item(), betas.max().item()
            raise ValueError(f"betas must lie in (0, 1), got min {low:.3g} max {high:.3g}")
        alpha = 1 - betas
        alpha_bar = torch.cumprod(alpha, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        posterior_variance = betas * (1 - alpha_bar_prev) / (1 - alpha_bar)
        # beta_tilde_1 = 0 (x_0 is known exactly given x_1 and x_0); its log is -inf, so like
        # improved-diffusion we repeat beta_tilde_2 there, for models that learn log-variances.
        log_variance = torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]]))
        coefs = dict(
            beta=betas,
            alpha=alpha,
            alpha_bar=alpha_bar,
            alpha_bar_prev=alpha_bar_prev,
            sqrt_alpha_bar=alpha_bar.sqrt(),
            sqrt_one_minus_alpha_bar=(1 - alpha_bar).sqrt(),
            posterior_variance=posterior_variance,
            posterior_log_variance_clipped=log_variance,
            posterior_mean_coef1=betas * alpha_bar_prev.sqrt() / (1 - alpha_bar),
            posterior_mean_coef2=(1 - alpha_bar_prev) * alpha.sqrt() / (1 - alpha_bar),
        )
        return cls(**{name: value.float() for name, value in coefs.items()})

    @classmethod
    def named(cls, name: str, T: int) -> NoiseSchedule:
        """The schedule `name` ("linear", "quadratic", "cosine") with T steps."""
        return cls.from_betas(make_betas(name, T))

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return self.beta.shape[0]

    def snr(self, t: Tensor) -> Tensor:
        """SNR(t) = alpha_bar_t / (1 - alpha_bar_t) at indices t. Kingma et al. 2021, Eq. (2)."""
        # From the square roots, which were rounded to float32 after the float64 computation:
        # 1 - alpha_bar in float32 would lose digits at small t where alpha_bar is near 1.
        return (self.sqrt_alpha_bar[t] / self.sqrt_one_minus_alpha_bar[t]) ** 2

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """A copy with every coefficient on `device`."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def gather(coef: Tensor, t: Tensor, ndim: int) -> Tensor:
    """coef[t] with trailing 1s appended up to `ndim` axes, to broadcast against x of that ndim.

    t may be a scalar, one timestep per sample (B,), or one per frame (B, F) of a video
    (B, F, C, H, W): coef[t] keeps t's shape and the remaining axes broadcast,
    (B,) -> (B, 1, 1, 1) for images, (B, F) -> (B, F, 1, 1, 1) for videos.
    """
    if t.ndim > ndim:
        raise ValueError(f"timesteps of shape {tuple(t.shape)} have more axes than x ({ndim})")
    return coef[t].reshape(*t.shape, *([1] * (ndim - t.ndim)))  # t.shape + (1, ..., 1)


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: Device) -> Tensor:
    """Standard normal noise drawn on the generator's device, then moved to `device`.

    A CPU generator therefore gives the same numbers whether the model runs on CPU or GPU.
    """
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where).to(device)


def q_step(sched: NoiseSchedule, x_prev: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """One forward step x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps. Ho et al. 2020, Eq. (2).

    With 0-based t, x_prev is the sample at index t - 1, or the data x0 when t = 0.
    """
    alpha = gather(sched.alpha, t, x_prev.ndim)  # (B, 1, ..., 1)
    beta = gather(sched.beta, t, x_prev.ndim)
    return alpha.sqrt() * x_prev + beta.sqrt() * eps


def q_sample(sched: NoiseSchedule, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """Sample x_t ~ q(x_t | x_0) in one shot. Ho et al. 2020, Eq. (4).

    x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, with eps ~ N(0, I).
    """
    sqrt_alpha_bar = gather(sched.sqrt_alpha_bar, t, x0.ndim)  # (B, 1, ..., 1)
    sqrt_one_minus_alpha_bar = gather(sched.sqrt_one_minus_alpha_bar, t, x0.ndim)
    return sqrt_alpha_bar * x0 + sqrt_one_minus_alpha_bar * eps


def q_posterior(sched: NoiseSchedule, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x_0). Ho et al. 2020, Eqs. (6)-(7).

    mu_tilde   = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x0
               + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) xt,
    beta_tilde = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t.
    Returns the mean shaped like xt and the variance shaped (B, 1, ..., 1).
    """
    coef1 = gather(sched.posterior_mean_coef1, t, xt.ndim)  # (B, 1, ..., 1)
    coef2 = gather(sched.posterior_mean_coef2, t, xt.ndim)
    return coef1 * x0 + coef2 * xt, gather(sched.posterior_variance, t, xt.ndim)


def predict_x0(sched: NoiseSchedule, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x0 from x_t and its noise, Eq. (4) solved for x0 (the x0 estimate inside Ho et al. Eq. (15)).

    x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t).
    """
    sqrt_alpha_bar = gather(sched.sqrt_alpha_bar, t, xt.ndim)  # (B, 1, ..., 1)
    sqrt_one_minus_alpha_bar = gather(sched.sqrt_one_minus_alpha_bar, t, xt.ndim)
    return (xt - sqrt_one_minus_alpha_bar * eps) / sqrt_alpha_bar


def predict_eps(sched: NoiseSchedule, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """The noise in x_t given x0, Eq. (4) solved for eps. Ho et al. 2020.

    eps = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t).
    """
    sqrt_alpha_bar = gather(sched.sqrt_alpha_bar, t, xt.ndim)  # (B, 1, ..., 1)
    sqrt_one_minus_alpha_bar = gather(sched.sqrt_one_minus_alpha_bar, t, xt.ndim)
    return (xt - sqrt_alpha_bar * x0) / sqrt_one_minus_alpha_bar


def v_target(sched: NoiseSchedule, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """The target of v-prediction. Salimans & Ho 2022, Sec. 4.

    v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0.

    Write x_t = cos(phi) x0 + sin(phi) eps; v = dx_t / dphi. Unlike eps, v stays informative as
    alpha_bar_t -> 0, where knowing the noise in pure noise says nothing about x0.
    """
    sqrt_alpha_bar = gather(sched.sqrt_alpha_bar, t, x0.ndim)  # (B, 1, ..., 1)
    sqrt_one_minus_alpha_bar = gather(sched.sqrt_one_minus_alpha_bar, t, x0.ndim)
    return sqrt_alpha_bar * eps - sqrt_one_minus_alpha_bar * x0


def eps_from_v(sched: NoiseSchedule, xt: Tensor, t: Tensor, v: Tensor) -> Tensor:
    """The noise implied by a v-prediction: eps = sqrt(alpha_bar_t) v + sqrt(1 - alpha_bar_t) x_t.

    Wrap a v-model as `lambda x, t, **c: eps_from_v(sched, x, t, v_model(x, t, **c))` to use the
    eps samplers unchanged.
    """
    sqrt_alpha_bar = gather(sched.sqrt_alpha_bar, t, xt.ndim)  # (B, 1, ..., 1)
    sqrt_one_minus_alpha_bar = gather(sched.sqrt_one_minus_alpha_bar, t, xt.ndim)
    return sqrt_alpha_bar * v + sqrt_one_minus_alpha_bar * xt
