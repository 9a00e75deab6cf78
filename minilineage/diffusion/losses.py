"""Training losses of diffusion models: noise prediction and v-prediction (each plain or Min-SNR weighted), and the
masked loss for given frames.

Each draws t ~ Uniform{0, ..., T-1} per sample and eps ~ N(0, I) with an explicit generator
(tests pin both), noises x0 in one shot with q_sample, and regresses the model's output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from minilineage.diffusion.process import Model, NoiseSchedule, q_sample, randn, v_target


def _draw_t_eps(
    sched: NoiseSchedule,
    x0: Tensor,
    generator: torch.Generator | None,
    t: Tensor | None,
    eps: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """t ~ Uniform{0, ..., T-1} per sample, eps ~ N(0, I), unless given. Algorithm 1, lines 3-4."""
    if t is None:
        where = generator.device if generator is not None else x0.device
        t = torch.randint(0, sched.T, (len(x0),), generator=generator, device=where)
    if eps is None:
        eps = randn(tuple(x0.shape), generator, x0.device).to(x0.dtype)
    return t.to(x0.device), eps


def _noised(sched: NoiseSchedule, x0: Tensor, generator: torch.Generator | None, t: Tensor | None,
            eps: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """t and eps drawn (or given) as in `_draw_t_eps`, and x_t = q_sample(x0, t, eps): what every loss starts from."""
    t, eps = _draw_t_eps(sched, x0, generator, t, eps)
    return t, eps, q_sample(sched, x0, t, eps)


def eps_loss(
    model: Model,
    sched: NoiseSchedule,
    x0: Tensor,
    generator: torch.Generator | None,
    t: Tensor | None = None,
    eps: Tensor | None = None,
    **cond: Tensor,
) -> Tensor:
    """The simplified loss ||eps - eps_theta(x_t, t)||^2. Ho et al. 2020, Algorithm 1, Eq. (14).

    t and eps are drawn with `generator` unless given (tests pin them). `cond` (class labels y,
    text context, ...) goes to the model unchanged. Returns the mean over batch and pixels.
    """
    t, eps, xt = _noised(sched, x0, generator, t, eps)
    return F.mse_loss(model(xt, t, **cond), eps)


MIN_SNR_GAMMA = 5.0  # Hang et al. 2023's default, robust across the predictions (eps, x0, v) they tried


def min_snr_eps_loss(
    model: Model,
    sched: NoiseSchedule,
    x0: Tensor,
    generator: torch.Generator | None,
    t: Tensor | None = None,
    eps: Tensor | None = None,
    gamma: float = MIN_SNR_GAMMA,
    **cond: Tensor,
) -> Tensor:
    """`eps_loss` with Min-SNR-gamma weights: w(t) = min(SNR(t), gamma) / SNR(t), SNR = alpha_bar / (1 - alpha_bar).

    Hang et al. 2023 ("Efficient Diffusion Training via Min-SNR Weighting Strategy"): the eps loss
    weighs every step alike, although the nearly clean steps (SNR >> gamma) ask the network for a
    detail that sampling hardly needs and that pulls its gradient away from the noisy steps where
    the digit's shape is decided. Capping the equivalent x0-loss weight at gamma leaves the noisy
    steps at weight 1 and scales the clean ones down by gamma / SNR. t and eps are drawn as in `eps_loss`.
    """
    t, eps, xt = _noised(sched, x0, generator, t, eps)
    snr = sched.snr(t)
    return _weighted_mse(model(xt, t, **cond), eps, snr.clamp(max=gamma) / snr)


def min_snr_v_loss(
    model: Model,
    sched: NoiseSchedule,
    x0: Tensor,
    generator: torch.Generator | None,
    t: Tensor | None = None,
    eps: Tensor | None = None,
    gamma: float = MIN_SNR_GAMMA,
    **cond: Tensor,
) -> Tensor:
    """`v_loss` with Min-SNR-gamma weights: w(t) = min(SNR(t), gamma) / (SNR(t) + 1).

    The same cap as `min_snr_eps_loss`, on the equivalent x0-loss: x0 - x0_hat = sqrt(1 - alpha_bar)
    (v_hat - v), so ||v - v_hat||^2 = (SNR + 1) ||x0 - x0_hat||^2, and an x0-weight of min(SNR, gamma)
    is a v-weight of min(SNR, gamma) / (SNR + 1). Hang et al. 2023 trained their DiTs this way.
    """
    t, eps, xt = _noised(sched, x0, generator, t, eps)
    snr = sched.snr(t)
    return _weighted_mse(model(xt, t, **cond), v_target(sched, x0, t, eps), snr.clamp(max=gamma) / (snr + 1))


def _weighted_mse(output: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """The mean over the batch of weight (B,) times each sample's mean squared error."""
    per_sample = (output - target).square().flatten(1).mean(1)  # (B,)
    return (weight.to(per_sample.dtype) * per_sample).mean()


def v_loss(
    model: Model,
    sched: NoiseSchedule,
    x0: Tensor,
    generator: torch.Generator | None,
    t: Tensor | None = None,
    eps: Tensor | None = None,
    **cond: Tensor,
) -> Tensor:
    """The v-prediction loss ||v - v_theta(x_t, t)||^2. Salimans & Ho 2022.

    t and eps are drawn (or given) as in `eps_loss`.
    """
    t, eps, xt = _noised(sched, x0, generator, t, eps)
    return F.mse_loss(model(xt, t, **cond), v_target(sched, x0, t, eps))


def frame_timesteps(t: Tensor, given: Tensor) -> Tensor:
    """Per-frame timesteps (B, F): the sample's t on generated frames, 0 on given frames (B, F) bool."""
    return torch.where(given, torch.zeros_like(t)[:, None], t[:, None])  # (B, F)


def masked_eps_loss(
    model: Model,
    sched: NoiseSchedule,
    x0: Tensor,
    given: Tensor,
    generator: torch.Generator | None,
    t: Tensor | None = None,
    eps: Tensor | None = None,
    **cond: Tensor,
) -> Tensor:
    """The simplified loss on videos (B, F, C, H, W) of which the frames marked in `given` (B, F) are known.

    Given frames enter clean, with timestep 0, and are left out of the loss; the others are noised
    to the sample's t as usual. The model sees per-frame timesteps (B, F), so it learns to read the
    clean frames as a condition: one checkpoint then serves image-to-video, extension and
    interpolation by choosing which frames are given (`GivenFrames` in the samplers). This is the
    frame masking of Open-Sora 1.x. With no frame given it equals `eps_loss`.
    """
    return _masked_loss(model, sched, x0, given, generator, t, eps, lambda t_frames, eps: eps, **cond)


def masked_v_loss(
    model: Model,
    sched: NoiseSchedule,
    x0: Tensor,
    given: Tensor,
    generator: torch.Generator | None,
    t: Tensor | None = None,
    eps: Tensor | None = None,
    **cond: Tensor,
) -> Tensor:
    """`masked_eps_loss` with the v target (Salimans & Ho 2022) on the generated frames; with no frame
    given it equals `v_loss`."""
    return _masked_loss(model, sched, x0, given, generator, t, eps,
                        lambda t_frames, eps: v_target(sched, x0, t_frames, eps), **cond)


def _masked_loss(model, sched, x0, given, generator, t, eps, target, **cond) -> Tensor:
    """Frame-masked regression: given frames clean at t = 0 and out of the loss, `target(t_frames, eps)` elsewhere."""
    if x0.ndim != 5 or given.shape != x0.shape[:2] or given.dtype != torch.bool:
        raise ValueError(f"need videos (B, F, C, H, W) and a bool mask (B, F), got {tuple(x0.shape)} and "
                         f"{given.dtype} {tuple(given.shape)}")
    t, eps = _draw_t_eps(sched, x0, generator, t, eps)
    t_frames = frame_timesteps(t, given)  # (B, F)
    keep = given[..., None, None, None]  # (B, F, 1, 1, 1)
    xt = torch.where(keep, x0, q_sample(sched, x0, t_frames, eps))  # given frames stay clean
    error = (model(xt, t_frames, **cond) - target(t_frames, eps)).square()  # (B, F, C, H, W)
    weight = (~keep).to(error.dtype).expand_as(error)
    return (error * weight).sum() / weight.sum().clamp(min=1)
