"""The forward process, its posterior and the losses, checked against independent computations."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from minilineage.diffusion import (
    NoiseSchedule,
    eps_from_v,
    eps_loss,
    gather,
    min_snr_eps_loss,
    predict_eps,
    predict_x0,
    q_posterior,
    q_sample,
    q_step,
    v_loss,
    v_target,
)
from minilineage.diffusion.schedules import linear_betas


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def full_t(t: int, n: int) -> torch.Tensor:
    return torch.full((n,), t, dtype=torch.long)


# ---- NoiseSchedule and gather ----------------------------------------------------------------


def test_schedule_stores_float32_coefficients_rounded_from_float64():
    betas = linear_betas(1000)
    sched = NoiseSchedule.from_betas(betas)
    assert sched.T == 1000
    for field in dataclasses.fields(sched):
        value = getattr(sched, field.name)
        assert value.dtype == torch.float32 and value.shape == (1000,), field.name
    assert torch.equal(sched.alpha_bar, torch.cumprod(1 - betas, 0).float())
    assert (
        torch.equal(sched.alpha_bar_prev[1:], sched.alpha_bar[:-1]) and sched.alpha_bar_prev[0] == 1
    )


def test_posterior_variance_is_zero_at_the_first_step_and_its_log_is_clipped():
    sched = NoiseSchedule.named("cosine", 100)
    assert sched.posterior_variance[0] == 0
    log_variance = sched.posterior_variance.log()
    assert sched.posterior_log_variance_clipped[0].item() == pytest.approx(
        log_variance[1].item(), rel=1e-6
    )
    assert torch.allclose(sched.posterior_log_variance_clipped[1:], log_variance[1:], atol=1e-5)


def test_schedule_is_frozen_and_moves_to_a_device_as_a_copy():
    sched = NoiseSchedule.named("linear", 100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sched.beta = torch.zeros(100)
    moved = sched.to("meta")
    assert all(getattr(moved, f.name).device.type == "meta" for f in dataclasses.fields(moved))
    assert sched.beta.device.type == "cpu" and moved.T == 100


def test_from_betas_rejects_betas_outside_0_1_and_named_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        NoiseSchedule.from_betas(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError, match="cosine"):
        NoiseSchedule.named("sigmoid", 100)


def test_snr_is_alpha_bar_over_one_minus_alpha_bar_and_decreases():
    sched = NoiseSchedule.named("linear", 1000)
    t = torch.arange(1000)
    alpha_bar = torch.cumprod(1 - linear_betas(1000), 0)
    assert torch.allclose(sched.snr(t).double(), alpha_bar / (1 - alpha_bar), rtol=1e-5)
    assert (sched.snr(t).diff() < 0).all()
    assert sched.snr(torch.tensor([0])).item() == pytest.approx(9999, rel=1e-4)  # beta_1 = 1e-4


@pytest.mark.parametrize("ndim", [2, 4, 5])
def test_gather_picks_coef_at_t_and_broadcasts_over_any_ndim(ndim):
    coef = torch.arange(10.0) * 2
    out = gather(coef, torch.tensor([3, 7]), ndim)
    assert out.shape == (2,) + (1,) * (ndim - 1)
    assert out.flatten().tolist() == [6.0, 14.0]


# ---- the forward process -------------------------------------------------------------------


def test_q_sample_at_the_first_index_is_one_q_step_from_x0():
    sched = NoiseSchedule.named("cosine", 100)
    x0, eps = (
        torch.randn(2, 3, 4, 4, generator=seeded(1)),
        torch.randn(2, 3, 4, 4, generator=seeded(2)),
    )
    assert torch.allclose(
        q_sample(sched, x0, full_t(0, 2), eps), q_step(sched, x0, full_t(0, 2), eps)
    )


def test_q_sample_pins_the_closed_form_values():
    sched = NoiseSchedule.named("linear", 1000)
    x0, eps, t = torch.tensor([[1.0], [-0.5]]), torch.tensor([[0.3], [2.0]]), torch.tensor([0, 999])
    alpha_bar = torch.cumprod(1 - linear_betas(1000), 0)[[0, 999]].view(2, 1)
    expected = alpha_bar.sqrt() * x0.double() + (1 - alpha_bar).sqrt() * eps.double()
    assert torch.allclose(q_sample(sched, x0, t, eps).double(), expected, atol=1e-6)


def _stepwise_and_closed_form(sched, t, noise_std_fn):
    """Samples of x_t from t+1 calls of q_step and from one closed-form draw (noise std given)."""
    n, gen = 20000, seeded(0)
    x0 = torch.tensor([-1.0, -0.3, 0.5, 1.0]).view(1, 1, 2, 2).expand(n, 1, 2, 2)  # (N, 1, 2, 2)
    x = x0
    for k in range(t + 1):
        x = q_step(sched, x, full_t(k, n), torch.randn(x0.shape, generator=gen))
    eps = torch.randn(x0.shape, generator=gen)
    closed = gather(sched.sqrt_alpha_bar, full_t(t, n), 4) * x0 + noise_std_fn(t) * eps
    return x, closed


def _same_distribution(a, b, tol_mean=0.04, tol_std=0.03):
    return (a.mean(0) - b.mean(0)).abs().max() < tol_mean and (
        a.std(0) - b.std(0)
    ).abs().max() < tol_std


def test_closed_form_q_sample_matches_step_by_step_noising_in_distribution():
    sched, t = NoiseSchedule.named("linear", 100), 30
    stepped, _ = _stepwise_and_closed_form(sched, t, lambda t: sched.sqrt_one_minus_alpha_bar[t])
    n = stepped.shape[0]
    eps = torch.randn(stepped.shape, generator=seeded(5))
    x0 = torch.tensor([-1.0, -0.3, 0.5, 1.0]).view(1, 1, 2, 2).expand(n, 1, 2, 2)
    assert _same_distribution(stepped, q_sample(sched, x0, full_t(t, n), eps))
    # and both agree with the moments of Eq. (4): mean sqrt(alpha_bar) x0, std sqrt(1 - alpha_bar)
    assert torch.allclose(stepped.mean(0), sched.sqrt_alpha_bar[t] * x0[0], atol=0.03)
    assert torch.allclose(
        stepped.std(0), sched.sqrt_one_minus_alpha_bar[t].expand(1, 2, 2), atol=0.02
    )


def test_the_distribution_check_fails_for_a_wrong_noise_coefficient():
    sched, t = NoiseSchedule.named("linear", 100), 30
    # A classic slip: (1 - alpha_bar) instead of its square root as the noise scale.
    stepped, wrong = _stepwise_and_closed_form(sched, t, lambda t: 1 - sched.alpha_bar[t])
    assert not _same_distribution(stepped, wrong)
    _, right = _stepwise_and_closed_form(sched, t, lambda t: sched.sqrt_one_minus_alpha_bar[t])
    assert _same_distribution(stepped, right)


def test_predict_x0_and_predict_eps_invert_q_sample():
    sched = NoiseSchedule.named("cosine", 1000)
    x0 = torch.rand(4, 3, 5, 5, generator=seeded(1)) * 2 - 1
    eps = torch.randn(4, 3, 5, 5, generator=seeded(2))
    t = torch.tensor([0, 10, 500, 900])
    xt = q_sample(sched, x0, t, eps)
    assert torch.allclose(predict_x0(sched, xt, t, eps), x0, atol=1e-4)
    assert torch.allclose(predict_eps(sched, xt, t, x0), eps, atol=1e-4)


# ---- the posterior q(x_{t-1} | x_t, x_0) ------------------------------------------------------


def test_posterior_equals_the_gaussian_product_of_prior_and_likelihood():
    # Bayes: q(x_{t-1} | x_t, x0) is proportional to q(x_{t-1} | x0) q(x_t | x_{t-1}), a product
    # of two Gaussians in x_{t-1}: N(sqrt(abar_prev) x0, 1 - abar_prev) and N(x_t / sqrt(alpha), beta / alpha).
    betas = linear_betas(100)
    sched = NoiseSchedule.from_betas(betas)
    alpha, alpha_bar = 1 - betas, torch.cumprod(1 - betas, 0)
    t = torch.arange(1, 100)  # t = 0 has a zero-variance prior, tested below
    alpha, abar_prev, beta = alpha[t], alpha_bar[t - 1], betas[t]
    precision = 1 / (1 - abar_prev) + alpha / beta
    x0, xt = (
        torch.linspace(-1, 1, 99, dtype=torch.float64),
        torch.linspace(2, -2, 99, dtype=torch.float64),
    )
    mean = (abar_prev.sqrt() * x0 / (1 - abar_prev) + alpha.sqrt() * xt / beta) / precision
    got_mean, got_var = q_posterior(sched, x0.view(99, 1), xt.view(99, 1), t)
    assert torch.allclose(got_mean.flatten().double(), mean, rtol=1e-5, atol=1e-6)
    assert torch.allclose(got_var.flatten().double(), 1 / precision, rtol=1e-5)


def test_posterior_at_the_first_step_returns_x0_with_zero_variance():
    sched = NoiseSchedule.named("linear", 100)
    x0, xt = torch.tensor([[0.7], [-0.2]]), torch.tensor([[5.0], [3.0]])
    mean, var = q_posterior(sched, x0, xt, full_t(0, 2))
    assert torch.allclose(mean, x0) and (var == 0).all()


def test_regression_of_x_prev_on_x0_and_xt_recovers_the_posterior_coefficients():
    # Sample the joint (x0, x_{t-1}, x_t) with the forward process only, then regress x_{t-1} on
    # (x0, x_t): least squares recovers E[x_{t-1} | x0, x_t] = coef1 x0 + coef2 x_t, and the
    # residual variance is the posterior variance beta_tilde_t.
    sched, t, n, gen = NoiseSchedule.named("linear", 100), 3, 200_000, seeded(0)
    x0 = torch.rand(n, 1, generator=gen, dtype=torch.float64) * 2 - 1
    x_prev = q_sample(
        sched, x0, full_t(t - 1, n), torch.randn(n, 1, generator=gen, dtype=torch.float64)
    )
    xt = q_step(sched, x_prev, full_t(t, n), torch.randn(n, 1, generator=gen, dtype=torch.float64))
    design = torch.cat([x0, xt], dim=1)  # (N, 2)
    coef = torch.linalg.lstsq(design, x_prev).solution.flatten()
    residual_var = (x_prev - design @ coef.view(2, 1)).var().item()
    assert coef[0].item() == pytest.approx(sched.posterior_mean_coef1[t].item(), abs=0.006)
    assert coef[1].item() == pytest.approx(sched.posterior_mean_coef2[t].item(), abs=0.006)
    assert residual_var == pytest.approx(sched.posterior_variance[t].item(), rel=0.02)


# ---- losses ---------------------------------------------------------------------------------


def test_eps_loss_of_an_oracle_that_knows_x0_is_zero_and_of_a_zero_model_is_about_one():
    sched = NoiseSchedule.named("cosine", 100)
    x0 = torch.rand(256, 1, 4, 4, generator=seeded(1)) * 2 - 1
    oracle = lambda xt, t: predict_eps(sched, xt, t, x0)  # noqa: E731
    assert eps_loss(oracle, sched, x0, seeded(2)).item() < 1e-6
    zero = lambda xt, t: torch.zeros_like(xt)  # noqa: E731
    assert eps_loss(zero, sched, x0, seeded(2)).item() == pytest.approx(1.0, abs=0.05)


def test_eps_loss_with_given_t_and_eps_is_the_mse_to_eps_and_passes_cond():
    sched = NoiseSchedule.named("linear", 100)
    x0, eps, t = (
        torch.zeros(3, 1, 2, 2),
        torch.randn(3, 1, 2, 2, generator=seeded(0)),
        torch.tensor([0, 5, 99]),
    )
    seen = {}

    def model(xt, t_in, y):
        seen.update(t=t_in, y=y, xt=xt)
        return torch.zeros_like(xt)

    loss = eps_loss(model, sched, x0, None, t=t, eps=eps, y=torch.tensor([1, 2, 3]))
    assert loss.item() == pytest.approx(eps.pow(2).mean().item(), rel=1e-6)
    assert torch.equal(seen["t"], t) and seen["y"].tolist() == [1, 2, 3]
    assert torch.allclose(seen["xt"], q_sample(sched, x0, t, eps))


def test_eps_loss_draws_every_timestep_uniformly_and_reproducibly():
    sched, seen = NoiseSchedule.named("cosine", 10), []
    model = lambda xt, t: (seen.append(t), torch.zeros_like(xt))[1]  # noqa: E731
    x0 = torch.zeros(5000, 1, 1, 1)
    first = eps_loss(model, sched, x0, seeded(3))
    assert eps_loss(model, sched, x0, seeded(3)) == first
    assert torch.equal(seen[0], seen[1]) and seen[0].dtype == torch.long
    counts = torch.bincount(seen[0], minlength=10)
    assert len(counts) == 10 and counts.min() > 400  # 500 expected per timestep


def test_v_target_recovers_eps_and_an_oracle_has_zero_v_loss():
    sched = NoiseSchedule.named("cosine", 100)
    x0 = torch.rand(64, 1, 3, 3, generator=seeded(1)) * 2 - 1
    eps, t = (
        torch.randn(64, 1, 3, 3, generator=seeded(2)),
        torch.randint(0, 100, (64,), generator=seeded(3)),
    )
    xt = q_sample(sched, x0, t, eps)
    assert torch.allclose(eps_from_v(sched, xt, t, v_target(sched, x0, t, eps)), eps, atol=1e-5)
    oracle = lambda xt, t: v_target(sched, x0, t, predict_eps(sched, xt, t, x0))  # noqa: E731
    assert v_loss(oracle, sched, x0, seeded(4)).item() < 1e-8


def test_min_snr_loss_weighs_each_step_by_min_snr_gamma_over_snr():
    sched = NoiseSchedule.named("cosine", 100)
    x0, eps = torch.zeros(4, 1, 2, 2), torch.randn(4, 1, 2, 2, generator=seeded(0))
    t = torch.tensor([0, 10, 60, 99])  # SNR from ~10^4 down to ~0: capped on the first two, not on the last two
    zero = lambda xt, t: torch.zeros_like(xt)  # noqa: E731 - its squared error per sample is mean(eps^2)
    snr = sched.snr(t)
    assert (snr[:2] > 5).all() and (snr[2:] < 5).all()
    expected = (torch.clamp(snr, max=5.0) / snr * eps.pow(2).flatten(1).mean(1)).mean()
    assert min_snr_eps_loss(zero, sched, x0, None, t=t, eps=eps).item() == pytest.approx(expected.item(), rel=1e-6)
    # where SNR <= gamma the weight is 1: the plain eps loss; where it is above, the step counts less
    noisy, clean = t[2:], t[:2]
    assert min_snr_eps_loss(zero, sched, x0[2:], None, t=noisy, eps=eps[2:]).item() == pytest.approx(
        eps_loss(zero, sched, x0[2:], None, t=noisy, eps=eps[2:]).item(), rel=1e-6)
    assert min_snr_eps_loss(zero, sched, x0[:2], None, t=clean, eps=eps[:2]) < eps_loss(
        zero, sched, x0[:2], None, t=clean, eps=eps[:2])


def test_the_min_snr_objective_samples_like_eps_and_an_oracle_has_zero_loss():
    from minilineage.diffusion import get_objective

    sched = NoiseSchedule.named("cosine", 100)
    x0 = torch.rand(32, 1, 3, 3, generator=seeded(1)) * 2 - 1
    oracle = lambda xt, t: predict_eps(sched, xt, t, x0)  # noqa: E731
    objective, plain = get_objective("eps-min-snr"), get_objective("eps")
    assert objective.loss(oracle, sched, x0, seeded(2)).item() < 1e-8
    assert objective.prediction is plain.prediction and objective.sample is plain.sample


def test_min_snr_v_loss_is_the_x0_loss_weighted_by_min_snr_gamma():
    """||v - v_hat||^2 = (SNR + 1) ||x0 - x0_hat||^2, so the v-weight min(SNR, 5) / (SNR + 1) is an x0-weight min(SNR, 5)."""
    from minilineage.diffusion import gather, get_objective, min_snr_v_loss

    sched = NoiseSchedule.named("cosine", 100)
    x0 = torch.rand(4, 1, 3, 3, generator=seeded(0)) * 2 - 1
    eps = torch.randn(4, 1, 3, 3, generator=seeded(1))
    t = torch.tensor([0, 10, 60, 99])  # capped on the first two, not on the last two
    guess = torch.randn(4, 1, 3, 3, generator=seeded(2))
    model = lambda xt, t: guess  # noqa: E731 - any prediction of v
    xt = q_sample(sched, x0, t, eps)
    x0_hat = gather(sched.sqrt_alpha_bar, t, 4) * xt - gather(sched.sqrt_one_minus_alpha_bar, t, 4) * guess
    expected = (sched.snr(t).clamp(max=5.0) * (x0 - x0_hat).square().flatten(1).mean(1)).mean()
    assert min_snr_v_loss(model, sched, x0, None, t=t, eps=eps).item() == pytest.approx(expected.item(), rel=1e-4)
    assert min_snr_v_loss(model, sched, x0, None, t=t, eps=eps) < v_loss(model, sched, x0, None, t=t, eps=eps)

    oracle = lambda xt, t: v_target(sched, x0, t, predict_eps(sched, xt, t, x0))  # noqa: E731
    objective, plain = get_objective("v-min-snr"), get_objective("v")
    assert objective.loss(oracle, sched, x0, seeded(3)).item() < 1e-8
    assert objective.prediction is plain.prediction and objective.sample is plain.sample
