"""What a denoiser is trained to predict, how it trains, and how it samples: the objective.

  eps   the noise itself (Ho et al. 2020): loss ||eps - eps_theta(x_t, t)||^2, t a step index 0..T-1;
        sampled with DDPM (steps >= T) or DDIM.
  eps-min-snr
        the same, with the loss of each t weighted by min(SNR, 5) / SNR (Hang et al. 2023,
        `min_snr_eps_loss`): the nearly clean steps count less, so a short run learns the shapes first.
  v     v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022): the target stays
        informative where alpha_bar -> 0, so x0_hat = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v_hat
        never divides by a tiny sqrt(alpha_bar). Converted to eps_hat and sampled like "eps".
  v-min-snr
        the same, with the loss of each t weighted by min(SNR, 5) / (SNR + 1) (`min_snr_v_loss`).
  flow  rectified flow (`flow`): the straight path x_t = (1 - t) x0 + t eps, t in [0, 1] drawn
        logit-normal, the network reads 1000 t and predicts v = eps - x0; sampled with Euler steps.

An objective is three functions (`Objective`), so a pipeline never asks which one it has:
  loss(net, sched, x0, generator, **cond)    the training loss (it also sets the time the net reads)
  prediction(net, sched)                     what a sampler steps with, as a callable model(x, t, **cond):
                                             eps_hat for "eps" and "v", the velocity for "flow";
                                             classifier-free guidance (`guided`) mixes this output
  sample(model, sched, shape, steps, generator, device, trajectory, clip_x0, given, **cond)
                                             runs the sampler on such a callable
  masked_loss(net, sched, x0, given, generator, **cond)
                                             the loss with given video frames (eps and v; not flow yet)
A pipeline picks one by name (`PipelineConfig.objective`). The network is the same in all three.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from minilineage.diffusion.flow import flow_loss, flow_sample, velocity
from minilineage.diffusion.losses import (
    eps_loss,
    masked_eps_loss,
    masked_v_loss,
    min_snr_eps_loss,
    min_snr_v_loss,
    v_loss,
)
from minilineage.diffusion.process import Model, NoiseSchedule, eps_from_v
from minilineage.diffusion.samplers import sample_with_steps


@dataclass(frozen=True)
class Objective:
    """A training loss, the prediction a sampler uses, and the sampler (see the module docstring)."""

    name: str
    loss: Callable[..., Tensor]
    prediction: Callable[[Model, NoiseSchedule], Model]
    sample: Callable[..., Tensor | tuple[Tensor, list[dict]]]
    masked_loss: Callable[..., Tensor] | None = None  # the loss on videos with given frames (None: not supported)


def _eps_prediction(net: Model, sched: NoiseSchedule) -> Model:
    return net  # the network already predicts the noise


def _v_prediction(net: Model, sched: NoiseSchedule) -> Model:
    """eps_hat from a v-prediction: eps = sqrt(alpha_bar) v + sqrt(1 - alpha_bar) x_t (`eps_from_v`)."""

    def eps_hat(x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        return eps_from_v(sched.to(x.device), x, t, net(x, t, **cond))

    return eps_hat


def _flow_loss(net: Model, sched: NoiseSchedule, x0: Tensor, generator, **cond: Tensor) -> Tensor:
    return flow_loss(net, x0, generator, **cond)  # no noise schedule: the path itself is the schedule


def _flow_prediction(net: Model, sched: NoiseSchedule) -> Model:
    return velocity(net)  # v(x, t) = net(x, 1000 t), t in [0, 1]


def _flow_sample(model: Model, sched: NoiseSchedule, shape: tuple[int, ...], steps: int, generator, device,
                 trajectory: bool = False, clip_x0: float | None = None, given=None, **cond: Tensor):
    return flow_sample(model, shape, steps, generator, device, trajectory, given, **cond)  # Euler: no x0 clipping


OBJECTIVES: dict[str, Objective] = {
    "eps": Objective("eps", eps_loss, _eps_prediction, sample_with_steps, masked_eps_loss),
    "eps-min-snr": Objective("eps-min-snr", min_snr_eps_loss, _eps_prediction, sample_with_steps, masked_eps_loss),
    "v": Objective("v", v_loss, _v_prediction, sample_with_steps, masked_v_loss),
    "v-min-snr": Objective("v-min-snr", min_snr_v_loss, _v_prediction, sample_with_steps, masked_v_loss),
    "flow": Objective("flow", _flow_loss, _flow_prediction, _flow_sample),
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]
