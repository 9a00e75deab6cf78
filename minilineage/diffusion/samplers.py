"""Samplers: turning a noise predictor into samples by running the reverse process.

Built from two one-step updates and one loop:
  ddpm_step   x_t -> x_{t-1}, ancestral (Ho et al. 2020, Algorithm 2)
  ddim_step   x_t -> x_s for any s < t (Song et al. 2021, Eq. (12)), deterministic at eta = 0
  reverse     runs a step function over a list of timesteps, optionally holding known entries fixed
and the usual entry points on top: `ddpm_sample`, `ddim_sample`, `sample_with_steps`, `sdedit`, and
`ddim_invert`, which runs the deterministic DDIM update the other way (data -> noise).

Every sampler takes any callable `model(x, t, **cond) -> eps_hat` (a U-Net, a DiT, a lambda in a
test), a `NoiseSchedule`, and a `torch.Generator` for all of its randomness. Timesteps are 0-based
indices as in `minilineage.diffusion.process`; x may be images (B, C, H, W) or videos
(B, F, C, H, W), and t one per sample (B,) or one per frame (B, F). Conditioning (`y=` labels,
`context=` text tokens, ...) is passed through to the model; `guided` wraps a model for
classifier-free guidance; `GivenFrames` and `GivenNoised` hold known entries (chosen frames of a
video, known pixels) at their values while the rest is sampled.

The steps clip the predicted x0 to [-clip_x0, clip_x0] (default 1, the range of the images). At
large t, x0_hat = (x_t - sqrt(1 - alpha_bar) eps_hat) / sqrt(alpha_bar) divides by a tiny
sqrt(alpha_bar), so a small error in eps_hat becomes a huge x0_hat; the true x0 is known to lie
in [-1, 1], and clipping stops those early errors from compounding (Ho et al.'s released code and
improved-diffusion's clip_denoised do the same). Latents have no a-priori bound, so latent
diffusion passes the largest |z0| seen in its (scaled) training latents instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from minilineage.diffusion.losses import frame_timesteps
from minilineage.diffusion.process import (
    Device,
    Model,
    NoiseSchedule,
    gather,
    predict_eps,
    predict_x0,
    q_posterior,
    q_sample,
    randn,
)

Sample = Tensor | tuple[Tensor, list[dict]]  # x0, or (x0, trajectory) when trajectory=True
# step(x_t, t, t_next, eps_hat) -> (x_next, x0_hat, eps_used); t_next = -1 means "to x0"
Step = Callable[[Tensor, Tensor, int, Tensor], tuple[Tensor, Tensor, Tensor]]


def _x0_hat(sched: NoiseSchedule, x: Tensor, t: Tensor, eps_hat: Tensor, clip_x0: float | None) -> Tensor:
    """Predicted x0 from eps_hat (Eq. (4) solved for x0), clipped; see the module docstring."""
    x0_hat = predict_x0(sched, x, t, eps_hat)
    return x0_hat if clip_x0 is None else x0_hat.clamp(-clip_x0, clip_x0)


def ddpm_step(sched: NoiseSchedule, xt: Tensor, t: Tensor, eps_hat: Tensor, noise: Tensor | None,
              clip_x0: float | None = 1.0) -> tuple[Tensor, Tensor]:
    """One ancestral step x_t -> x_{t-1}, with sigma_t^2 = beta_tilde_t. Ho et al. 2020, Algorithm 2, line 4.

    Returns (x_{t-1}, x0_hat). `noise` is z ~ N(0, I), or None on the last step (z = 0).
    """
    # 1. predicted x0, Eq. (15), clipped to the data range
    x0_hat = _x0_hat(sched, xt, t, eps_hat, clip_x0)
    # 2. mean and variance of q(x_{t-1} | x_t, x0_hat), Eq. (7); without clipping this mean is
    #    Eq. (11), (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t)
    mean, variance = q_posterior(sched, x0_hat, xt, t)
    # 3. x_{t-1} = mean + sigma_t z
    return (mean if noise is None else mean + variance.sqrt() * noise), x0_hat


def ddim_step(sched: NoiseSchedule, xt: Tensor, t: Tensor, t_next: Tensor, eps_hat: Tensor, eta: float = 0.0,
              noise: Tensor | None = None, clip_x0: float | None = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """One DDIM step x_t -> x_s for any earlier s = t_next (-1: straight to x0). Song et al. 2021, Eq. (12).

    Returns (x_s, x0_hat, eps_used). eta scales the fresh noise, Eq. (16): 0 is deterministic,
    1 with every timestep is DDPM's ancestral sampler.
    """
    # 1. predicted x0, the "predicted x0" term of Eq. (12) (= Eq. (15) of Ho et al.), clipped
    x0_hat = _x0_hat(sched, xt, t, eps_hat, clip_x0)
    # 2. the noise consistent with the clipped x0_hat (as improved-diffusion does), so the
    #    step below heads to the x0_hat it reports
    eps_hat = predict_eps(sched, xt, t, x0_hat)
    # 3. alpha_bar now and at s; index -1 is the paper's step 0, where alpha_bar = 1
    alpha_bar = gather(sched.alpha_bar, t, xt.ndim)
    alpha_bar_next = torch.where(t_next >= 0, sched.alpha_bar[t_next.clamp(min=0)], 1.0)
    alpha_bar_next = alpha_bar_next.reshape(alpha_bar.shape)
    # 4. sigma, Eq. (16): eta sqrt((1 - a_s) / (1 - a_t)) sqrt(1 - a_t / a_s)
    sigma = eta * ((1 - alpha_bar_next) / (1 - alpha_bar)).sqrt()
    sigma = sigma * (1 - alpha_bar / alpha_bar_next).sqrt()
    # 5. Eq. (12): x_s = sqrt(a_s) x0_hat + sqrt(1 - a_s - sigma^2) eps_hat + sigma z
    direction = (1 - alpha_bar_next - sigma**2).clamp(min=0).sqrt() * eps_hat  # "pointing to x_t"
    x = alpha_bar_next.sqrt() * x0_hat + direction
    return (x if noise is None else x + sigma * noise), x0_hat, eps_hat


@dataclass
class GivenFrames:
    """Known frames of a video, given to a model trained with frame masks (`masked_eps_loss`).

    At every step the given frames are put back clean and marked with timestep 0, exactly as in
    training, so the model conditions on them (Open-Sora 1.x). x0: the known values (B, F, C, H, W);
    mask: (B, F) bool, True for given frames.
    """

    x0: Tensor
    mask: Tensor

    def hold(self, sched: NoiseSchedule, x: Tensor, t: Tensor, generator) -> tuple[Tensor, Tensor]:
        keep = self.mask[..., None, None, None]  # (B, F, 1, 1, 1)
        return torch.where(keep, self.x0, x), frame_timesteps(t, self.mask)  # x, t (B, F)

    def final(self, x: Tensor) -> Tensor:
        return torch.where(self.mask[..., None, None, None], self.x0, x)


@dataclass
class GivenNoised:
    """Known entries of a sample (any mask broadcastable to x), for a model that never saw masks.

    At every step the known entries are replaced by q_sample of their true values at the current
    t, so the model sees a consistent noisy sample and fills in the rest ("replacement",
    Lugmayr et al. 2022 without resampling). Approximate where the unknown entries depend on the
    known ones; exact for the known entries themselves.
    """

    x0: Tensor
    mask: Tensor

    def _mask(self, x: Tensor) -> Tensor:
        return self.mask.reshape(*self.mask.shape, *([1] * (x.ndim - self.mask.ndim)))

    def hold(self, sched: NoiseSchedule, x: Tensor, t: Tensor, generator) -> tuple[Tensor, Tensor]:
        known = q_sample(sched, self.x0, t, randn(tuple(x.shape), generator, x.device))
        return torch.where(self._mask(x), known, x), t

    def final(self, x: Tensor) -> Tensor:
        return torch.where(self._mask(x), self.x0, x)


Given = GivenFrames | GivenNoised


def _predict(model: Model, x: Tensor, t: Tensor, cond: dict) -> Tensor:
    """The noise prediction model(x, t, **cond), checked to have the shape of x."""
    eps_hat = model(x, t, **cond)
    if eps_hat.shape != x.shape:
        raise ValueError(f"model returned {tuple(eps_hat.shape)} for x of {tuple(x.shape)}")
    return eps_hat


def _record(t: int, xt: Tensor, x0_hat: Tensor, eps_hat: Tensor) -> dict:
    """One frame of a trajectory for the reverse-process player: float CPU copies."""
    as_cpu = lambda z: z.detach().float().cpu()  # noqa: E731
    return {"t": t, "xt": as_cpu(xt), "x0_hat": as_cpu(x0_hat), "eps_hat": as_cpu(eps_hat)}


@torch.no_grad()
def reverse(model: Model, sched: NoiseSchedule, x: Tensor, timesteps: Sequence[int], step: Step,
            generator: torch.Generator | None, given: Given | None = None, trajectory: bool = False,
            **cond: Tensor) -> Sample:
    """Run `step` from x at timesteps[0] through each later timestep down to x0.

    With `given`, known entries are held at their values before every model call and in the
    result. With trajectory=True also returns one record {t, xt, x0_hat, eps_hat} per step.
    """
    sched = sched.to(x.device)
    frames, timesteps = [], [int(s) for s in timesteps]
    for t_now, t_next in zip(timesteps, timesteps[1:] + [-1], strict=True):
        t = torch.full(x.shape[:1], t_now, dtype=torch.long, device=x.device)  # (B,)
        x, t_model = given.hold(sched, x, t, generator) if given is not None else (x, t)
        eps_hat = _predict(model, x, t_model, cond)
        t_step = t_model  # per-frame timesteps reach the update too (0 on given frames)
        x_next, x0_hat, eps_used = step(x, t_step, t_next, eps_hat)
        if trajectory:
            frames.append(_record(t_now, x, x0_hat, eps_used))
        x = x_next
    x = given.final(x) if given is not None else x
    return (x, frames) if trajectory else x


def ddpm_update(sched: NoiseSchedule, generator: torch.Generator | None, clip_x0: float | None = 1.0) -> Step:
    """The `step` of ancestral sampling: `ddpm_step` with fresh noise on every step but the last."""

    def step(x: Tensor, t: Tensor, t_next: int, eps_hat: Tensor):
        noise = randn(tuple(x.shape), generator, x.device) if t_next >= 0 else None
        x_next, x0_hat = ddpm_step(sched, x, t, eps_hat, noise, clip_x0)
        return x_next, x0_hat, eps_hat

    return step


def ddim_update(sched: NoiseSchedule, generator: torch.Generator | None, eta: float = 0.0,
                clip_x0: float | None = 1.0) -> Step:
    """The `step` of DDIM: `ddim_step` to the next timestep of the list, noise only when eta > 0."""

    def step(x: Tensor, t: Tensor, t_next: int, eps_hat: Tensor):
        noise = randn(tuple(x.shape), generator, x.device) if eta > 0 and t_next >= 0 else None
        # on given frames (t = 0) the step target is clamped to -1: they are held clean anyway
        s = torch.where(t > 0, torch.full_like(t, t_next), torch.full_like(t, -1))
        return ddim_step(sched, x, t, s, eps_hat, eta, noise, clip_x0)

    return step


def ddpm_sample(model: Model, sched: NoiseSchedule, shape: tuple[int, ...], generator: torch.Generator | None,
                device: Device = "cpu", trajectory: bool = False, clip_x0: float | None = 1.0,
                given: Given | None = None, **cond: Tensor) -> Sample:
    """Ancestral sampling with T model calls. Ho et al. 2020, Algorithm 2.

    Starts from x_T ~ N(0, I) of `shape` (line 1) and applies `ddpm_step` for t = T-1 ... 0.
    Put the model in eval mode first.
    """
    sched = sched.to(device)
    xT = randn(tuple(shape), generator, device)
    return reverse(model, sched, xT, range(sched.T - 1, -1, -1), ddpm_update(sched, generator, clip_x0),
                   generator, given, trajectory, **cond)


def ddim_timesteps(T: int, steps: int, t_start: int | None = None) -> Tensor:
    """`steps` evenly spaced int64 timesteps from t_start (default T-1) down to 0, both included."""
    t_start = T - 1 if t_start is None else t_start
    if not 0 <= t_start < T:
        raise ValueError(f"t_start must be in [0, {T - 1}], got {t_start}")
    if not 1 <= steps <= t_start + 1:
        raise ValueError(f"steps must be in [1, {t_start + 1}] to start at t={t_start}, got {steps}")
    if steps == 1:
        return torch.tensor([t_start])  # one jump: x0_hat straight from x_{t_start}
    # Spacing t_start / (steps - 1) >= 1, so rounding never merges two timesteps.
    return torch.linspace(t_start, 0, steps, dtype=torch.float64).round().long()


def ddim_denoise(model: Model, sched: NoiseSchedule, xt: Tensor, timesteps: Tensor,
                 generator: torch.Generator | None, eta: float = 0.0, trajectory: bool = False,
                 clip_x0: float | None = 1.0, given: Given | None = None, **cond: Tensor) -> Sample:
    """Run DDIM from xt, at timesteps[0], through `timesteps` to x0. Song et al. 2021, Eq. (12)."""
    sched = sched.to(xt.device)
    return reverse(model, sched, xt, timesteps.tolist(), ddim_update(sched, generator, eta, clip_x0),
                   generator, given, trajectory, **cond)


@torch.no_grad()
def ddim_invert(model: Model, sched: NoiseSchedule, x0: Tensor, timesteps: Sequence[int],
                clip_x0: float | None = 1.0, **cond: Tensor) -> Tensor:
    """Run deterministic DDIM forwards, x0 -> x_T: encode data into the noise that DDIM decodes back to it.

    Song et al. 2021, Sec. 4.3: at eta = 0, Eq. (12) is an Euler step of the ODE of their Eq. (14),
    which can be integrated in either direction. `timesteps` rise, e.g. `ddim_timesteps(T, n).flip(0)`;
    x0 stands in for the sample at timesteps[0], and each step re-noises x0_hat(x_t) to the next, higher
    level with the same eps_hat. `ddim_denoise` over the same timesteps reversed undoes it, up to the
    error of evaluating eps_hat at the start of each step instead of its end.
    """
    timesteps = [int(s) for s in timesteps]
    if any(b <= a for a, b in zip(timesteps, timesteps[1:])):
        raise ValueError(f"inversion needs rising timesteps, got {timesteps[:3]}...")
    sched, x = sched.to(x0.device), x0
    for t_now, t_next in zip(timesteps, timesteps[1:]):
        t = torch.full(x.shape[:1], t_now, dtype=torch.long, device=x.device)  # (B,)
        # 1. predicted x0 and the noise consistent with it, as in `ddim_step`
        x0_hat = _x0_hat(sched, x, t, _predict(model, x, t, cond), clip_x0)
        eps_hat = predict_eps(sched, x, t, x0_hat)
        # 2. Eq. (12) at eta = 0 towards the higher noise level t_next
        alpha_bar_next = gather(sched.alpha_bar, torch.full_like(t, t_next), x.ndim)
        x = alpha_bar_next.sqrt() * x0_hat + (1 - alpha_bar_next).sqrt() * eps_hat
    return x


def ddim_sample(model: Model, sched: NoiseSchedule, shape: tuple[int, ...], steps: int,
                generator: torch.Generator | None, eta: float = 0.0, device: Device = "cpu",
                trajectory: bool = False, clip_x0: float | None = 1.0, given: Given | None = None,
                **cond: Tensor) -> Sample:
    """Sample with `steps` model calls instead of T. Song et al. 2021, Eq. (12).

    Starts from x_T ~ N(0, I) drawn with `generator` and visits `ddim_timesteps(T, steps)`.
    """
    xT = randn(tuple(shape), generator, device)
    return ddim_denoise(model, sched, xT, ddim_timesteps(sched.T, steps), generator, eta, trajectory, clip_x0,
                        given, **cond)


def sample_with_steps(model: Model, sched: NoiseSchedule, shape: tuple[int, ...], steps: int,
                      generator: torch.Generator | None, device: Device = "cpu", trajectory: bool = False,
                      clip_x0: float | None = 1.0, given: Given | None = None, **cond: Tensor) -> Sample:
    """What a pipeline's `.sample` runs: ancestral DDPM (Algorithm 2) when steps >= T, else DDIM."""
    if steps >= sched.T:
        return ddpm_sample(model, sched, shape, generator, device, trajectory, clip_x0, given, **cond)
    return ddim_sample(model, sched, shape, steps, generator, 0.0, device, trajectory, clip_x0, given, **cond)


def guided(model: Model, scale: float, null_cond: dict[str, Tensor]) -> Model:
    """A model with classifier-free guidance. Ho & Salimans 2022, Eq. (6), with scale = 1 + w.

    eps = eps_uncond + scale (eps_cond - eps_uncond): scale > 1 pushes away from the unconditional
    prediction, trading diversity for adherence to the condition.

    `null_cond` maps each conditioning keyword to its "no condition" value, broadcastable to the
    batch: {"y": torch.tensor(10)} (the null label index) or {"context": null_ctx} with null_ctx
    (1, N, D). The returned callable makes ONE forward pass on a doubled batch [cond; null].
    Keywords not in null_cond are the same in both halves.
    scale = 1 is the conditional model, scale = 0 the unconditional one.
    """

    def guided_model(x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        missing = set(null_cond) - set(cond)
        if missing:
            raise ValueError(f"guided model called without {sorted(missing)}; it needs {sorted(null_cond)}")
        both = {}
        for key, value in cond.items():
            if not isinstance(value, Tensor):
                both[key] = value
                continue
            other = null_cond[key].to(value.device).expand_as(value) if key in null_cond else value
            both[key] = torch.cat([value, other])  # (2B, ...)
        eps = model(torch.cat([x, x]), torch.cat([t, t]), **both)  # (2B, ...)
        eps_cond, eps_uncond = eps.chunk(2)  # (B, ...) each
        return eps_uncond + scale * (eps_cond - eps_uncond)

    return guided_model


def sdedit(model: Model, sched: NoiseSchedule, x0: Tensor, strength: float, steps: int,
           generator: torch.Generator | None, eta: float = 0.0, clip_x0: float | None = 1.0,
           **cond: Tensor) -> Tensor:
    """Edit an image (or video) by noising it part way and denoising it again. Meng et al. 2021 (SDEdit).

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
