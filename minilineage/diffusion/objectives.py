"""What a denoiser is trained to predict, and how its prediction becomes the noise a sampler uses.

  eps   the noise itself (Ho et al. 2020): loss ||eps - eps_theta(x_t, t)||^2.
  v     v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022): the target stays
        informative where alpha_bar -> 0, so x0_hat = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v_hat
        never divides by a tiny sqrt(alpha_bar).
Every sampler in `samplers` works with noise predictions, so an objective also says how to turn
its network's output into eps_hat (`to_eps`); a pipeline picks one by name (`PipelineConfig.objective`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from minilineage.diffusion.losses import eps_loss, v_loss
from minilineage.diffusion.process import NoiseSchedule, eps_from_v


@dataclass(frozen=True)
class Objective:
    """A training loss `loss(model, sched, x0, generator, **cond)` and the map `to_eps(sched, x_t, t, output)`."""

    name: str
    loss: Callable[..., Tensor]
    to_eps: Callable[[NoiseSchedule, Tensor, Tensor, Tensor], Tensor]


def _identity(sched: NoiseSchedule, xt: Tensor, t: Tensor, eps_hat: Tensor) -> Tensor:
    return eps_hat


OBJECTIVES: dict[str, Objective] = {
    "eps": Objective("eps", eps_loss, _identity),
    "v": Objective("v", v_loss, eps_from_v),
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]
