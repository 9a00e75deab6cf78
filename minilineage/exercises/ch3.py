"""Chapter 3 (DDPM): exercises and their reference answers."""

from __future__ import annotations

import torch

from minilineage.checkpoint import load_model
from minilineage.data import load_dataset
from minilineage.diffusion import NoiseSchedule, ddim_step, predict_x0, q_posterior, q_sample
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


def _random_batch(seed: int):
    """A cosine schedule, images x0 and noise eps (4, 1, 8, 8), and four timesteps spread over 0 ... T-1."""
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1, torch.randn(4, 1, 8, 8, generator=g)
    return NoiseSchedule.named("cosine", 1000), x0, eps, torch.tensor([0, 250, 600, 990])


def _matches_q_sample(my_q_sample) -> bool:
    """The student's x_t against the package's `q_sample` on random images, at four t."""
    sched, x0, eps, t = _random_batch(6)
    return close_to(q_sample(sched, x0, t, eps), atol=1e-5)(my_q_sample(sched, x0, t, eps))


def q_sample_answer(sched, x0, t, eps):
    alpha_bar = sched.alpha_bar[t].view(-1, 1, 1, 1)  # (B, 1, 1, 1): one value per image
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps


register("ch3.q_sample", _matches_q_sample, "x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, with "
         "alpha_bar_t picked out per image and shaped (B, 1, 1, 1) to broadcast", solution=q_sample_answer,
         wrong=lambda sched, x0, t, eps: q_sample_answer(sched, x0, t - 1, eps))


def _matches_the_posterior(my_posterior) -> bool:
    """The student's (mean, variance) of q(x_{t-1} | x_t, x0) against `q_posterior`, at four t > 0."""
    sched, x0, eps, _ = _random_batch(7)
    t = torch.tensor([1, 250, 600, 990])
    xt = q_sample(sched, x0, t, eps)
    mean, variance = q_posterior(sched, x0, xt, t)
    my_mean, my_variance = my_posterior(sched, x0, xt, t)
    return close_to(mean, atol=1e-5)(my_mean) and close_to(variance.expand_as(mean), atol=1e-7)(
        torch.as_tensor(my_variance).expand_as(mean))


def posterior_answer(sched, x0, xt, t):
    shape = (-1, 1, 1, 1)  # one coefficient per image
    beta, alpha = sched.beta[t].view(shape), sched.alpha[t].view(shape)
    alpha_bar, alpha_bar_prev = sched.alpha_bar[t].view(shape), sched.alpha_bar_prev[t].view(shape)
    mean = (alpha_bar_prev.sqrt() * beta * x0 + alpha.sqrt() * (1 - alpha_bar_prev) * xt) / (1 - alpha_bar)
    return mean, (1 - alpha_bar_prev) / (1 - alpha_bar) * beta


def _posterior_with_alpha_bar_t(sched, x0, xt, t):  # a tempting slip: alpha_bar_t where alpha_bar_{t-1} belongs
    shape = (-1, 1, 1, 1)
    beta, alpha, alpha_bar = sched.beta[t].view(shape), sched.alpha[t].view(shape), sched.alpha_bar[t].view(shape)
    return (alpha_bar.sqrt() * beta * x0 + alpha.sqrt() * (1 - alpha_bar) * xt) / (1 - alpha_bar), beta


register("ch3.posterior", _matches_the_posterior, "Eq. (7) of Ho et al.: the x0 coefficient has sqrt(alpha_bar_{t-1}) "
         "beta_t, the x_t one sqrt(alpha_t) (1 - alpha_bar_{t-1}), both over 1 - alpha_bar_t; use sched.alpha_bar_prev",
         solution=posterior_answer, wrong=_posterior_with_alpha_bar_t)


def _matches_a_ddim_step(my_ddim_step) -> bool:
    """The student's deterministic DDIM step t -> s against `ddim_step` (eta = 0, no clipping)."""
    sched, x0, eps, t = _random_batch(8)
    t, s = t[1:], torch.tensor([100, 300, 700])
    xt = q_sample(sched, x0[1:], t, eps[1:])
    eps_hat = eps[1:] + 0.1 * torch.randn(eps[1:].shape, generator=torch.Generator().manual_seed(9))  # imperfect
    expected, _, _ = ddim_step(sched, xt, t, s, eps_hat, eta=0.0, clip_x0=None)
    return close_to(expected, atol=1e-4)(my_ddim_step(sched, xt, t, s, eps_hat))


def ddim_step_answer(sched, xt, t, s, eps_hat):
    alpha_bar, alpha_bar_s = sched.alpha_bar[t].view(-1, 1, 1, 1), sched.alpha_bar[s].view(-1, 1, 1, 1)
    x0_hat = (xt - (1 - alpha_bar).sqrt() * eps_hat) / alpha_bar.sqrt()  # predict the clean image
    return alpha_bar_s.sqrt() * x0_hat + (1 - alpha_bar_s).sqrt() * eps_hat  # re-noise it to level s, same noise


register("ch3.ddim_step", _matches_a_ddim_step, "first x0_hat from x_t and eps_hat (Eq. (4) solved for x0), then "
         "x_s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s) eps_hat (Song et al. 2021, Eq. (12), eta = 0)",
         solution=ddim_step_answer,
         wrong=lambda sched, xt, t, s, eps_hat: ddim_step_answer(sched, xt, t, s, torch.zeros_like(eps_hat)))
