"""Chapter 3 (DDPM): exercises and their reference answers."""

from __future__ import annotations

import torch

from minilineage.checkpoint import load_model
from minilineage.data import load_dataset
from minilineage.diffusion import NoiseSchedule, predict_x0, q_sample
from minilineage.exercises.core import close_to, register

LINEAR = NoiseSchedule.named("linear", 1000)

register("ch3.alpha_bar_T", close_to(LINEAR.alpha_bar[-1].item(), rtol=0.05),
         "multiply (1 - beta_t) over all 1000 steps of the linear schedule", solution=4.0e-5)


def _recovers_x0(my_x0) -> bool:
    """The student's x0 from (x_t, t, eps) on random data, for several t of the cosine schedule."""
    sched = NoiseSchedule.named("cosine", 1000)
    g = torch.Generator().manual_seed(5)
    x0, eps = torch.rand(4, 1, 28, 28, generator=g) * 2 - 1, torch.randn(4, 1, 28, 28, generator=g)
    t = torch.tensor([0, 300, 600, 900])
    xt = q_sample(sched, x0, t, eps)
    return close_to(x0, atol=1e-3)(my_x0(sched, xt, t, eps))


def x0_from_noise(sched, xt, t, eps):
    a = sched.alpha_bar[t].view(-1, 1, 1, 1)
    return (xt - (1 - a).sqrt() * eps) / a.sqrt()


register("ch3.x0_from_noise", _recovers_x0, "solve x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps for x0",
         solution=x0_from_noise)


def _averages_to_the_class_mean(my_mean_x0_hat) -> bool:
    """The mean x0_hat of 400 noised training threes at t = 800 is their mean image (MSE < 0.002; 0.0005 measured)."""
    model, train = load_model("ddpm-mnist"), load_dataset("mnist-5k", "train")
    threes = train.float_images()[train.labels == 3][:400]
    with torch.no_grad():
        mean = my_mean_x0_hat(model, threes, 800, 3, torch.Generator().manual_seed(0))
    return mean.shape == threes.shape[1:] and (mean - threes.mean(0)).square().mean().item() < 0.002


def mean_x0_hat(model, x0, t, y, generator):
    t = torch.full((len(x0),), t)
    xt = q_sample(model.sched, x0, t, torch.randn(x0.shape, generator=generator))
    eps_hat = model(xt, t, y=torch.full((len(x0),), y))
    return predict_x0(model.sched, xt, t, eps_hat).mean(0)


register("ch3.mean_x0_hat", _averages_to_the_class_mean, "noise the whole batch to step t, predict eps_hat with the "
         "label, turn it into x0_hat (Eq. (4) solved for x0) and average over the batch", solution=mean_x0_hat,
         wrong=lambda model, x0, t, y, generator: mean_x0_hat(model, x0, 999, y, generator))
