"""Samplers: turning a noise predictor into images by running the reverse process.

Every sampler takes any callable `model(x, t, **cond) -> eps_hat` (a U-Net, a DiT, a lambda in a
test), a `NoiseSchedule`, and a `torch.Generator` for all of its randomness. Timesteps are 0-based
indices as in `minilineage.diffusion`. Conditioning (`y=` labels, `context=` text tokens, ...) is
passed through to the model as keywords; `guided` wraps a model for classifier-free guidance.

Both samplers clip the predicted x0 to [-clip_x0, clip_x0] (default 1, the range of the images).
At large t, x0_hat = (x_t - sqrt(1 - alpha_bar) eps_hat) / sqrt(alpha_bar) divides by a tiny
sqrt(alpha_bar), so a small error in eps_hat becomes a huge x0_hat; the true x0 is known to lie
in [-1, 1], and clipping stops those early errors from compounding (Ho et al.'s released code and
improved-diffusion's clip_denoised do the same). Latents have no a-priori bound, so latent
diffusion passes the largest |z0| seen in its (scaled) training latents instead; with
clip_x0=None, DDIM with few steps and strong guidance on our small latent model blows up.
"""

from __future__ import annotations

import torch
from torch import Tensor

from minilineage.diffusion import (
    Device,
    Model,
    NoiseSchedule,
    predict_eps,
    predict_x0,
    q_posterior,
    q_sample,
    randn,
)

Sample = Tensor | tuple[Tensor, list[dict]]  # x0, or (x0, trajectory) when trajectory=True


def _predict(model: Model, x: Tensor, t: Tensor, cond: dict) -> Tensor:
    """The noise prediction model(x, t, **cond), checked to have the shape of x."""
    eps_hat = model(x, t, **cond)
    if eps_hat.shape != x.shape:
        raise ValueError(f"model returned {tuple(eps_hat.shape)} for x of {tuple(x.shape)}")
    return eps_hat


def _x0_hat(sched: NoiseSchedule, x: Tensor, t: Tensor, eps_hat: Tensor, clip_x0: float | None):
    """Predicted x0 from eps_hat (Eq. (4) solved for x0), clipped; see the module docstring."""
    x0_hat = predict_x0(sched, x, t, eps_hat)
    return x0_hat if clip_x0 is None else x0_hat.clamp(-clip_x0, clip_x0)


def _record(t: int, xt: Tensor, x0_hat: Tensor, eps_hat: Tensor) -> dict:
    """One frame of a trajectory for the reverse-process player: float CPU copies."""
    as_cpu = lambda z: z.detach().float().cpu()  # noqa: E731
    return {"t": t, "xt": as_cpu(xt), "x0_hat": as_cpu(x0_hat), "eps_hat": as_cpu(eps_hat)}


@torch.no_grad()
def ddpm_sample(
    model: Model,
    sched: NoiseSchedule,
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: Device = "cpu",
    trajectory: bool = False,
    clip_x0: float | None = 1.0,
    **cond: Tensor,
) -> Sample:
    """Ancestral sampling with T model calls. Ho et al. 2020, Algorithm 2.

    Uses sigma_t^2 = beta_tilde_t, the posterior variance. Returns x0 of `shape`; with
    trajectory=True also a list of T dicts {t, xt, x0_hat, eps_hat}, one per reverse step from
    t = T-1 down to 0 (float CPU tensors). Put the model in eval mode first.
    """
    sched = sched.to(device)
    x = randn(tuple(shape), generator, device)  # x_T ~ N(0, I), Algorithm 2 line 1
    frames = []
    for i in reversed(range(sched.T)):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=device)
        eps_hat = _predict(model, x, t, cond)
        # 1. predicted x0, Eq. (15), clipped to the data range
        x0_hat = _x0_hat(sched, x, t, eps_hat, clip_x0)
        # 2. mean and variance of q(x_{t-1} | x_t, x0_hat), Eq. (7); without clipping this mean is
        #    Eq. (11) of Algorithm 2, (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t)
        mean, variance = q_posterior(sched, x0_hat, x, t)
        if trajectory:
            frames.append(_record(i, x, x0_hat, eps_hat))
        # 3. x_{t-1} = mean + sigma_t z, Algorithm 2 line 4, with z = 0 on the last step
        x = mean + variance.sqrt() * randn(tuple(x.shape), generator, device) if i > 0 else mean
    return (x, frames) if trajectory else x


def ddim_timesteps(T: int, steps: int, t_start: int | None = None) -> Tensor:
    """`steps` evenly spaced int64 timesteps from t_start (default T-1) down to 0, both included."""
    t_start = T - 1 if t_start is None else t_start
    if not 0 <= t_start < T:
        raise ValueError(f"t_start must be in [0, {T - 1}], got {t_start}")
    if not 1 <= steps <= t_start + 1:
        raise ValueError(
            f"steps must be in [1, {t_start + 1}] to start at t={t_start}, got {steps}"
        )
    if steps == 1:
        return torch.tensor([t_start])  # one jump: x0_hat straight from x_{t_start}
    # Spacing t_start / (steps - 1) >= 1, so rounding never merges two timesteps.
    return torch.linspace(t_start, 0, steps, dtype=torch.float64).round().long()


@torch.no_grad()
def ddim_denoise(
    model: Model,
    sched: NoiseSchedule,
    xt: Tensor,
    timesteps: Tensor,
    generator: torch.Generator | None,
    eta: float = 0.0,
    trajectory: bool = False,
    clip_x0: float | None = 1.0,
    **cond: Tensor,
) -> Sample:
    """Run DDIM from xt, at timesteps[0], through `timesteps` to x0. Song et al. 2021, Eq. (12).

    timesteps: decreasing int64 indices, e.g. from `ddim_timesteps`. eta scales the noise of each
    step, Eq. (16): eta=0 is deterministic (DDIM), eta=1 with every timestep is DDPM's ancestral
    sampler. Used by `ddim_sample` and `sdedit`.
    """
    device = xt.device
    sched = sched.to(device)
    x, frames = xt, []
    timesteps = timesteps.tolist()
    # Pair each timestep with the next one; index -1 is the paper's step 0, where alpha_bar = 1.
    for t_now, t_prev in zip(timesteps, timesteps[1:] + [-1], strict=True):
        t = torch.full((x.shape[0],), t_now, dtype=torch.long, device=device)
        eps_hat = _predict(model, x, t, cond)
        # 1. predicted x0, the "predicted x0" term of Eq. (12) (= Eq. (15) of Ho et al.), clipped
        x0_hat = _x0_hat(sched, x, t, eps_hat, clip_x0)
        # 2. the noise consistent with the clipped x0_hat (as improved-diffusion does), so the
        #    step below heads to the x0_hat it reports
        eps_hat = predict_eps(sched, x, t, x0_hat)
        if trajectory:
            frames.append(_record(t_now, x, x0_hat, eps_hat))
        # 3. alpha_bar now and at the next timestep (0-d tensors, the same for the whole batch)
        alpha_bar = sched.alpha_bar[t_now]
        alpha_bar_prev = sched.alpha_bar[t_prev] if t_prev >= 0 else torch.ones((), device=device)
        # 4. sigma, Eq. (16): eta sqrt((1 - a_prev) / (1 - a)) sqrt(1 - a / a_prev)
        sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar)).sqrt()
        sigma = sigma * (1 - alpha_bar / alpha_bar_prev).sqrt()
        # 5. Eq. (12): x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps_hat + sigma z
        direction = (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * eps_hat  # "to x_t"
        x = alpha_bar_prev.sqrt() * x0_hat + direction
        if eta > 0 and t_prev >= 0:
            x = x + sigma * randn(tuple(x.shape), generator, device)
    return (x, frames) if trajectory else x


def ddim_sample(
    model: Model,
    sched: NoiseSchedule,
    shape: tuple[int, ...],
    steps: int,
    generator: torch.Generator | None,
    eta: float = 0.0,
    device: Device = "cpu",
    trajectory: bool = False,
    clip_x0: float | None = 1.0,
    **cond: Tensor,
) -> Sample:
    """Sample with `steps` model calls instead of T. Song et al. 2021, Eq. (12).

    Starts from x_T ~ N(0, I) drawn with `generator` and visits `ddim_timesteps(T, steps)`,
    T-1 ... 0; see `ddim_denoise` for eta and trajectory.
    """
    xT = randn(tuple(shape), generator, device)
    timesteps = ddim_timesteps(sched.T, steps)
    return ddim_denoise(model, sched, xT, timesteps, generator, eta, trajectory, clip_x0, **cond)


def sample_with_steps(
    model: Model,
    sched: NoiseSchedule,
    shape: tuple[int, ...],
    steps: int,
    generator: torch.Generator | None,
    device: Device = "cpu",
    trajectory: bool = False,
    clip_x0: float | None = 1.0,
    **cond: Tensor,
) -> Sample:
    """What a model's `.sample` runs: ancestral DDPM (Algorithm 2) when steps >= T, else DDIM with `steps` steps."""
    if steps >= sched.T:
        return ddpm_sample(model, sched, shape, generator, device, trajectory, clip_x0, **cond)
    return ddim_sample(model, sched, shape, steps, generator, device=device, trajectory=trajectory, clip_x0=clip_x0,
                       **cond)


def guided(model: Model, scale: float, null_cond: dict[str, Tensor]) -> Model:
    """A model with classifier-free guidance. Ho & Salimans 2022, Eq. (6), with scale = 1 + w.

    eps = eps_uncond + scale (eps_cond - eps_uncond): scale > 1 pushes away from the unconditional
    prediction, trading diversity for adherence to the condition.

    `null_cond` maps each conditioning keyword to its "no condition" value, broadcastable to the
    batch: {"y": torch.tensor(10)} (the null label index) or {"context": null_ctx} with null_ctx
    (1, N, D). The returned callable makes ONE forward pass on a doubled batch [cond; null].
    Keywords not in null_cond (e.g. a frame mask) are the same in both halves.
    scale = 1 is the conditional model, scale = 0 the unconditional one.
    """

    def guided_model(x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        missing = set(null_cond) - set(cond)
        if missing:
            raise ValueError(
                f"guided model called without {sorted(missing)}; it needs {sorted(null_cond)}"
            )
        both = {}
        for key, value in cond.items():
            if not isinstance(value, Tensor):
                both[key] = value
                continue
            other = null_cond[key].to(value.device).expand_as(value) if key in null_cond else value
            both[key] = torch.cat([value, other])  # (2B, ...)
        eps = model(torch.cat([x, x]), torch.cat([t, t]), **both)  # (2B, C, H, W)
        eps_cond, eps_uncond = eps.chunk(2)  # (B, C, H, W) each
        return eps_uncond + scale * (eps_cond - eps_uncond)

    return guided_model


def sdedit(
    model: Model,
    sched: NoiseSchedule,
    x0: Tensor,
    strength: float,
    steps: int,
    generator: torch.Generator | None,
    eta: float = 0.0,
    clip_x0: float | None = 1.0,
    **cond: Tensor,
) -> Tensor:
    """Edit an image by noising it part way and denoising it again. Meng et al. 2021 (SDEdit).

    x0 is noised with q_sample to the paper's t = strength * T (index strength * T - 1), then
    DDIM runs min(steps, index + 1) steps back to 0. strength=0 returns x0; strength=1 starts
    from (almost) pure noise and keeps nothing of x0. Larger strength: more freedom, less fidelity.
    """
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    t_start = round(strength * sched.T) - 1
    if t_start < 0:
        return x0.clone()
    timesteps = ddim_timesteps(sched.T, min(steps, t_start + 1), t_start)
    t = torch.full((x0.shape[0],), t_start, dtype=torch.long, device=x0.device)
    xt = q_sample(sched.to(x0.device), x0, t, randn(tuple(x0.shape), generator, x0.device))
    return ddim_denoise(model, sched, xt, timesteps, generator, eta, False, clip_x0, **cond)
