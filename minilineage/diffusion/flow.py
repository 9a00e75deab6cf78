"""Rectified flow: a straight line from data to noise, learnt as a velocity and followed with Euler steps.

Liu et al. 2023 ("Flow straight and fast"); Lipman et al. 2023 (flow matching); Esser et al. 2024
(Stable Diffusion 3, logit-normal t). The objective SD3, Open-Sora 1.2+ and Movie Gen train with.

    path     x_t = (1 - t) x0 + t eps,   t in [0, 1]: t = 0 is the data, t = 1 pure noise
    target   v = d x_t / d t = eps - x0  (the same for every t along one line)
    loss     || v - v_theta(x_t, t) ||^2,   t ~ logit-normal: sigmoid(n), n ~ N(0, 1)
    sample   x_1 ~ N(0, I), then Euler steps x_{t - dt} = x_t - dt v_theta(x_t, t) down to t = 0

Euler here and DDIM are one sampler. Divide DDPM's x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps by
sqrt(alpha_bar) + sqrt(1 - alpha_bar) and it is a point of this path, at the flow time with the same
signal-to-noise ratio (`flow_time`); a DDIM step (eta = 0) lands exactly where an Euler step of the
velocity eps_hat - x0_hat does, both being Euler's method on the probability-flow ODE (Song et al. 2021,
Sec. 4.3; Karras et al. 2022, Sec. 3, in sigma = sqrt((1 - alpha_bar) / alpha_bar) coordinates). Either
step is exact whenever x0_hat stays fixed along it. So a flow model and a DDPM model differ by the noise
levels their samplers visit and by what training taught the network at each level (how the loss weighs
the levels, what the output is), not by a straighter sampler (Gao et al. 2024, "Diffusion meets flow
matching"). `sample_at_levels` runs either kind of model on any list of noise levels to measure which.

Time: samplers and losses here work with t in [0, 1]; the network is called at `TIME_SCALE` * t, the
range of DDPM's step index, so the sinusoidal time embedding of the denoisers is used as it is.
Predictions convert as x0_hat = x_t - t v and eps_hat = x_t + (1 - t) v (solve the path for each).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from minilineage.diffusion.process import Device, Model, NoiseSchedule, randn
from minilineage.diffusion.samplers import GivenFrames, Sample, ddim_denoise, ddim_timesteps

TIME_SCALE = 1000.0  # network time = TIME_SCALE * t


def _expand(t: Tensor, ndim: int) -> Tensor:
    """t (B,) or (B, F) with trailing 1s up to `ndim` axes, to broadcast against x."""
    return t.reshape(*t.shape, *([1] * (ndim - t.ndim)))  # (B, 1, 1, 1) or (B, F, 1, 1, 1)


def flow_xt(x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """The straight path x_t = (1 - t) x0 + t eps, t (B,) or per frame (B, F) in [0, 1]."""
    t = _expand(t, x0.ndim)
    return (1 - t) * x0 + t * eps


def logit_normal_t(n: int, generator: torch.Generator | None, device: Device, m: float = 0.0,
                   s: float = 1.0) -> Tensor:
    """t = sigmoid(m + s z), z ~ N(0, 1): n times in (0, 1), dense in the middle. Esser et al. 2024, Eq. (19).

    The middle of the path is where predicting the velocity is hardest: near t = 0 it is almost
    -x0 + (what x_t shows), near t = 1 almost eps - E[x0]; SD3 found this weighting best of those tried.
    """
    return torch.sigmoid(m + s * randn((n,), generator, device))


def velocity(model: Model, time_scale: float = TIME_SCALE) -> Model:
    """The velocity field v(x, t, **cond) for t in [0, 1] of a network that reads time_scale * t."""

    def v(x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        return model(x, time_scale * t, **cond)

    return v


def flow_loss(model: Model, x0: Tensor, generator: torch.Generator | None, t: Tensor | None = None,
              eps: Tensor | None = None, time_scale: float = TIME_SCALE, **cond: Tensor) -> Tensor:
    """The rectified-flow loss ||(eps - x0) - v_theta(x_t, t)||^2. Liu et al. 2023, Eq. (1).

    t ~ logit-normal and eps ~ N(0, I) are drawn with `generator` unless given (tests pin them);
    the network sees time_scale * t. Returns the mean over batch and pixels.
    """
    if t is None:
        t = logit_normal_t(len(x0), generator, x0.device)
    if eps is None:
        eps = randn(tuple(x0.shape), generator, x0.device).to(x0.dtype)
    t = t.to(x0.device)
    return F.mse_loss(model(flow_xt(x0, t, eps), time_scale * t, **cond), eps - x0)


def flow_timesteps(steps: int, t_start: float = 1.0) -> Tensor:
    """steps + 1 evenly spaced times from t_start down to 0, both included: `steps` Euler steps."""
    if steps < 1:
        raise ValueError(f"steps must be a positive number, got {steps}")
    if not 0 < t_start <= 1:
        raise ValueError(f"t_start must be in (0, 1], got {t_start}")
    return torch.linspace(t_start, 0, steps + 1, dtype=torch.float64)


def _record(t: float, xt: Tensor, x0_hat: Tensor, eps_hat: Tensor) -> dict:
    """One frame of a trajectory, as the diffusion samplers record them (t here in [0, 1])."""
    as_cpu = lambda z: z.detach().float().cpu()  # noqa: E731
    return {"t": t, "xt": as_cpu(xt), "x0_hat": as_cpu(x0_hat), "eps_hat": as_cpu(eps_hat)}


@torch.no_grad()
def euler(v: Model, x: Tensor, timesteps: Tensor, given: GivenFrames | None = None, trajectory: bool = False,
          **cond: Tensor) -> Sample:
    """Integrate dx/dt = v(x, t) with Euler steps from timesteps[0] through each later time to the last.

    v: a velocity field (`velocity(net)`, possibly `guided`). With `given` (a `GivenFrames`), the
    given frames are held clean, at time 0, before every call. trajectory=True also returns one
    record {t, xt, x0_hat, eps_hat} per step.
    """
    if given is not None and not isinstance(given, GivenFrames):
        raise ValueError(f"flow sampling holds given frames (GivenFrames), not {type(given).__name__}")
    frames, times = [], [float(s) for s in timesteps]
    for t_now, t_next in zip(times[:-1], times[1:], strict=True):
        t = torch.full(x.shape[:1], t_now, device=x.device)  # (B,)
        x, t_model = given.hold(None, x, t, None) if given is not None else (x, t)  # per-frame t: 0 on given frames
        v_hat = v(x, t_model, **cond)
        if v_hat.shape != x.shape:
            raise ValueError(f"model returned {tuple(v_hat.shape)} for x of {tuple(x.shape)}")
        if trajectory:
            s = _expand(t_model, x.ndim)
            frames.append(_record(t_now, x, x - s * v_hat, x + (1 - s) * v_hat))
        x = x + (t_next - t_now) * v_hat  # Euler: dt = t_next - t_now < 0
    x = given.final(x) if given is not None else x
    return (x, frames) if trajectory else x


def flow_sample(v: Model, shape: tuple[int, ...], steps: int, generator: torch.Generator | None,
                device: Device = "cpu", trajectory: bool = False, given: GivenFrames | None = None,
                **cond: Tensor) -> Sample:
    """Sample with `steps` Euler steps of the velocity field v from x_1 ~ N(0, I) to t = 0."""
    x1 = randn(tuple(shape), generator, device)
    return euler(v, x1, flow_timesteps(steps), given, trajectory, **cond)


# --- one family of noise levels: DDPM's alpha_bar and the flow time t ----------------------------


def flow_time(alpha_bar: Tensor) -> Tensor:
    """The flow time with DDPM's signal-to-noise ratio: SNR = alpha_bar / (1 - alpha_bar) = (1 - t)^2 / t^2.

    t = sqrt(1 - alpha_bar) / (sqrt(alpha_bar) + sqrt(1 - alpha_bar)); x_t / (sqrt(alpha_bar) +
    sqrt(1 - alpha_bar)) is then exactly the flow point (1 - t) x0 + t eps.
    """
    alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
    return (1 - alpha_bar).sqrt() / (alpha_bar.sqrt() + (1 - alpha_bar).sqrt())


def flow_point(sched: NoiseSchedule, xt: Tensor, t: Tensor) -> Tensor:
    """DDPM's x_t at step indices t (B,) as a point of the flow path: x_t / (sqrt(alpha_bar) + sqrt(1 - alpha_bar))."""
    alpha_bar = sched.alpha_bar.to(xt.device)[t].reshape(*t.shape, *([1] * (xt.ndim - t.ndim)))
    return xt / (alpha_bar.sqrt() + (1 - alpha_bar).sqrt())


def flow_alpha_bar(t: Tensor) -> Tensor:
    """DDPM's alpha_bar at the flow time t, the inverse of `flow_time`: (1 - t)^2 / ((1 - t)^2 + t^2)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return (1 - t) ** 2 / ((1 - t) ** 2 + t**2)


def ddim_levels(sched: NoiseSchedule, steps: int) -> Tensor:
    """The noise levels DDIM visits with `steps` steps (`ddim_timesteps`), as flow times (steps,), highest first."""
    return flow_time(sched.alpha_bar.double()[ddim_timesteps(sched.T, steps)])


def euler_levels(steps: int) -> Tensor:
    """The noise levels the flow sampler visits with `steps` steps (`flow_timesteps` without the final 0)."""
    return flow_timesteps(steps)[:-1]


def nearest_timesteps(sched: NoiseSchedule, levels: Tensor) -> Tensor:
    """The DDPM indices whose noise levels lie closest to `levels` (flow times, highest first); int64 (len(levels),)."""
    times = flow_time(sched.alpha_bar.double())  # (T,), rising with the index
    indices = (times[None, :] - torch.as_tensor(levels, dtype=torch.float64)[:, None]).abs().argmin(dim=1)
    if (indices[1:] >= indices[:-1]).any():
        raise ValueError(f"{len(levels)} levels map to repeated or rising DDPM steps {indices.tolist()}: use fewer levels")
    return indices


@torch.no_grad()
def sample_at_levels(model, n: int, generator: torch.Generator | None, levels: Tensor, labels: Tensor | None = None,
                     guidance: float | None = None) -> Tensor:
    """n samples of a pipeline whose sampler visits the given noise levels (flow times, highest first), then 0.

    A "flow" pipeline takes Euler steps through `levels`; a DDPM pipeline ("eps", "v") DDIM steps through
    the `nearest_timesteps`. The same draw of starting noise as `model.sample`, so with the model's own
    levels (`ddim_levels`, `euler_levels`) this is `model.sample` itself. Returns images in [-1, 1].
    """
    guidance = model.config.guidance if guidance is None else guidance
    cond = model.conditioning(n, labels)
    noise = randn((n, *model.config.shape), generator, model.device)
    levels = torch.as_tensor(levels, dtype=torch.float64)
    if model.config.objective == "flow":
        z0 = euler(model.denoiser(guidance), noise, torch.cat([levels, levels.new_zeros(1)]), **cond)
    else:
        z0 = ddim_denoise(model.denoiser(guidance), model.sched, noise, nearest_timesteps(model.sched, levels),
                          generator, clip_x0=model.config.clip_x0, **cond)
    return model.decode(z0).clamp(-1, 1)
