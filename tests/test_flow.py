"""Rectified flow: the path, the loss, logit-normal times, Euler sampling against exact answers, and the
objective dispatch of the pipeline (flow samples through `guided`; eps keeps its DDPM/DDIM path)."""

from __future__ import annotations

import pytest
import torch

from minilineage.diffusion import (
    DiffusionPipeline,
    GivenNoised,
    NoiseSchedule,
    PipelineConfig,
    ddim_step,
    guided,
    sample_with_steps,
)
from minilineage.diffusion.flow import (
    TIME_SCALE,
    ddim_levels,
    euler,
    euler_levels,
    flow_alpha_bar,
    flow_loss,
    flow_point,
    flow_sample,
    flow_time,
    flow_timesteps,
    flow_xt,
    logit_normal_t,
    nearest_timesteps,
    sample_at_levels,
    velocity,
)
from minilineage.diffusion.objectives import OBJECTIVES, get_objective

MU, SIGMA = torch.tensor([1.5, -0.5, 0.0]), torch.tensor([0.5, 2.0, 0.1])  # Gaussian data, per dimension


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def exact_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[eps - x0 | x_t] for x0 ~ N(MU, SIGMA^2), eps ~ N(0, 1), x_t = (1 - t) x0 + t eps: Gaussian regression.

    Var(x_t) = (1 - t)^2 SIGMA^2 + t^2; Cov(eps - x0, x_t) = t - (1 - t) SIGMA^2; E[eps - x0] = -MU.
    """
    t = t[:, None]
    var = (1 - t) ** 2 * SIGMA**2 + t**2
    cov = t - (1 - t) * SIGMA**2
    return -MU + cov / var * (x - (1 - t) * MU)


def test_the_path_runs_straight_from_the_data_at_0_to_the_noise_at_1():
    x0, eps = torch.randn(4, 3, generator=seeded(0)), torch.randn(4, 3, generator=seeded(1))
    assert torch.equal(flow_xt(x0, torch.zeros(4), eps), x0)
    assert torch.equal(flow_xt(x0, torch.ones(4), eps), eps)
    t = torch.tensor([0.25, 0.5, 0.75, 0.1])
    torch.testing.assert_close(flow_xt(x0, t, eps), x0 + t[:, None] * (eps - x0))  # velocity eps - x0 everywhere
    per_frame = flow_xt(x0[:, :, None], torch.tensor([[0.0, 1.0, 0.5]]).expand(4, 3), eps[:, :, None])  # (B, F, 1)
    torch.testing.assert_close(per_frame[:, :, 0], torch.stack([x0[:, 0], eps[:, 1], (x0[:, 2] + eps[:, 2]) / 2], 1))


def test_the_loss_is_the_squared_error_to_eps_minus_x0_with_the_network_at_1000_t():
    seen = {}

    def model(x, t, **cond):
        seen.update(x=x, t=t, **cond)
        return 0.5 * x

    x0, eps, t = torch.randn(3, 2, generator=seeded(0)), torch.randn(3, 2, generator=seeded(1)), torch.tensor([0.1, 0.5, 0.9])
    loss = flow_loss(model, x0, None, t=t, eps=eps, y=torch.tensor([1, 2, 3]))
    xt = (1 - t[:, None]) * x0 + t[:, None] * eps
    torch.testing.assert_close(loss, (0.5 * xt - (eps - x0)).square().mean())
    torch.testing.assert_close(seen["t"], 1000 * t)
    assert TIME_SCALE == 1000 and torch.equal(seen["y"], torch.tensor([1, 2, 3]))


def test_logit_normal_times_have_a_standard_normal_logit():
    t = logit_normal_t(20_000, seeded(0), "cpu")
    assert ((t > 0) & (t < 1)).all()
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean().item()) < 0.03 and abs(logit.std().item() - 1) < 0.03
    assert abs(t.median().item() - 0.5) < 0.01 and (t < 0.1).float().mean() < 0.02  # few times near the ends


def test_the_exact_velocity_minimises_the_loss_at_the_conditional_variance():
    """At fixed t the best loss is E Var(eps - x0 | x_t) = Var(eps - x0) - Cov^2 / Var(x_t), per dimension."""
    n, t_value = 200_000, 0.3
    x0 = MU + SIGMA * torch.randn(n, 3, generator=seeded(0))
    t = torch.full((n,), t_value)
    oracle = lambda x, s: exact_velocity(x, s / TIME_SCALE)  # noqa: E731
    best = flow_loss(oracle, x0, seeded(1), t=t)
    var, cov = (1 - t_value) ** 2 * SIGMA**2 + t_value**2, t_value - (1 - t_value) * SIGMA**2
    assert best.item() == pytest.approx((1 + SIGMA**2 - cov**2 / var).mean().item(), rel=0.01)
    worse = flow_loss(lambda x, s: oracle(x, s) + 0.1, x0, seeded(1), t=t)
    assert worse.item() == pytest.approx(best.item() + 0.01, rel=0.01)  # + 0.1^2: the oracle is the minimum


def test_euler_on_the_exact_velocity_carries_noise_to_the_gaussian_data():
    """The flow of Gaussian data is linear: x_1 = eps is carried to x_0 = MU + SIGMA eps, sample by sample."""
    eps = torch.randn(5000, 3, generator=seeded(0))
    x0 = euler(exact_velocity, eps.clone(), flow_timesteps(1000))  # Euler's error shrinks as 1 / steps
    torch.testing.assert_close(x0, MU + SIGMA * eps, atol=0.02, rtol=0)
    torch.testing.assert_close(x0.mean(0), MU, atol=0.05, rtol=0)
    torch.testing.assert_close(x0.std(0), SIGMA, atol=0.05, rtol=0)
    coarse = euler(exact_velocity, eps.clone(), flow_timesteps(4))
    assert (coarse - (MU + SIGMA * eps)).abs().max() > 0.05  # few steps of a curved path: the check can fail


def test_one_euler_step_is_exact_when_the_paths_are_straight():
    """A single training point: every path is a straight line to it, and one step of length 1 lands on it."""
    point = torch.tensor([0.3, -1.2])
    v_star = lambda x, t: (x - point) / t[:, None]  # E[eps - x0 | x_t] = (x_t - x0) / t for x0 = point  # noqa: E731
    out = flow_sample(v_star, (6, 2), 1, seeded(0))
    torch.testing.assert_close(out, point.expand(6, 2))


def test_trajectory_records_each_step_from_noise_to_data():
    x, frames = flow_sample(lambda x, t: x, (2, 3), 4, seeded(0), trajectory=True)
    assert [f["t"] for f in frames] == [1.0, 0.75, 0.5, 0.25]
    first = frames[0]
    torch.testing.assert_close(first["x0_hat"], first["xt"] - first["xt"])  # x0_hat = x_t - t v, here v = x_t
    torch.testing.assert_close(first["eps_hat"], first["xt"])  # eps_hat = x_t + (1 - t) v at t = 1
    assert x.shape == (2, 3)


def tiny_pipeline(objective: str) -> DiffusionPipeline:
    torch.manual_seed(0)
    den = {"cls": "DiT", "config": {"in_channels": 1, "patch": 7, "width": 16, "depth": 1, "heads": 2, "num_classes": 10}}
    model = DiffusionPipeline(PipelineConfig(denoiser=den, T=50, objective=objective)).eval()
    torch.nn.init.normal_(model.net.final.linear.weight, std=0.1)  # a non-zero output, so differences show
    return model


def test_a_flow_pipeline_trains_on_the_velocity_and_samples_by_euler_with_guidance():
    model = tiny_pipeline("flow")
    x, y = torch.randn(3, 1, 28, 28, generator=seeded(1)), torch.tensor([1, 2, 3])
    g = seeded(2)
    drop = torch.rand(y.shape, generator=g) < 0.1  # the label dropout draws first, as in the pipeline
    expected = flow_loss(model, x, g, y=torch.where(drop, 10, y))
    torch.testing.assert_close(model.loss({"x": x, "y": y}, seeded(2)), expected)
    t = torch.tensor([0.2, 0.5, 0.9])
    torch.testing.assert_close(model.predict(x, t, y=y), model(x, 1000 * t, y=y))
    null = {"y": torch.tensor(10)}
    expected = flow_sample(guided(velocity(model), 2.0, null), (3, 1, 28, 28), 5, seeded(0), y=y)
    assert torch.equal(model.sample(3, seeded(0), labels=y, steps=5, guidance=2.0), expected.clamp(-1, 1))
    with pytest.raises(ValueError, match="predicts a velocity"):
        model.predict_eps(x, t, y=y)
    with pytest.raises(ValueError, match="GivenFrames"):
        model.sample(3, seeded(0), given=GivenNoised(x, torch.ones(3, dtype=torch.bool)))


def test_an_eps_pipeline_still_samples_with_ddim_on_the_guided_noise_prediction():
    model = tiny_pipeline("eps")
    y = torch.tensor([4, 5])
    expected = sample_with_steps(guided(model, 2.0, {"y": torch.tensor(10)}), model.sched, (2, 1, 28, 28), 5,
                                 seeded(0), "cpu", y=y)
    assert torch.equal(model.sample(2, seeded(0), labels=y, steps=5, guidance=2.0), expected.clamp(-1, 1))


def test_every_objective_names_its_loss_prediction_and_sampler():
    assert list(OBJECTIVES) == ["eps", "eps-min-snr", "v", "v-min-snr", "flow"]
    for objective in OBJECTIVES.values():
        assert callable(objective.loss) and callable(objective.prediction) and callable(objective.sample)
    with pytest.raises(ValueError, match="unknown objective 'x0'; choose one of: eps, eps-min-snr, v, v-min-snr, flow"):
        get_objective("x0")


def test_flow_time_matches_the_ddpm_signal_to_noise_ratio_and_inverts():
    alpha_bar = torch.tensor([0.999, 0.5, 0.2, 1e-4], dtype=torch.float64)
    t = flow_time(alpha_bar)
    torch.testing.assert_close((1 - t) ** 2 / t**2, alpha_bar / (1 - alpha_bar))  # the same SNR
    assert t[1].item() == pytest.approx(0.5) and torch.all(t[1:] > t[:-1])  # alpha_bar 1/2 is the midpoint
    torch.testing.assert_close(flow_alpha_bar(t), alpha_bar)


def test_a_ddim_step_is_an_euler_step_of_the_flow_velocity_in_rescaled_coordinates():
    """Karras et al. 2022 / Gao et al. 2024: x_t / (sqrt(a) + sqrt(1 - a)) moves by (t_s - t) (eps_hat - x0_hat)."""
    sched = NoiseSchedule.named("cosine", 1000)
    x = torch.randn(3, 1, 4, 4, generator=seeded(0))
    eps_hat = torch.randn(3, 1, 4, 4, generator=seeded(1))
    t, s = torch.full((3,), 700), torch.full((3,), 400)
    ddim, x0_hat, _ = ddim_step(sched, x, t, s, eps_hat, clip_x0=None)
    a_t, a_s = sched.alpha_bar[700].double(), sched.alpha_bar[400].double()
    scale = lambda a: a.sqrt() + (1 - a).sqrt()  # noqa: E731
    euler_step = x.double() / scale(a_t) + (flow_time(a_s) - flow_time(a_t)) * (eps_hat - x0_hat).double()
    torch.testing.assert_close(ddim.double(), euler_step * scale(a_s), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flow_point(sched, ddim, s).double(), euler_step, atol=1e-5, rtol=1e-5)
    x0, eps = torch.randn(3, 1, 4, 4, generator=seeded(2)), torch.randn(3, 1, 4, 4, generator=seeded(3))
    xt = sched.sqrt_alpha_bar[700] * x0 + sched.sqrt_one_minus_alpha_bar[700] * eps  # the paper's Eq. (4)
    torch.testing.assert_close(flow_point(sched, xt, t), flow_xt(x0, flow_time(a_t).float().expand(3), eps))
    off = x.double() / scale(a_t) + (flow_time(a_s) - flow_time(a_t)) * eps_hat.double()  # a wrong velocity
    assert (off * scale(a_s) - ddim.double()).abs().max() > 0.1


def test_each_sampler_on_its_own_levels_is_the_pipeline_s_sampler():
    for objective, levels in (("v", ddim_levels), ("flow", lambda sched, k: euler_levels(k))):
        model = tiny_pipeline(objective)
        y = torch.tensor([3, 8])
        expected = model.sample(2, seeded(4), labels=y, steps=5, guidance=1.5)
        got = sample_at_levels(model, 2, seeded(4), levels(model.sched, 5), labels=y, guidance=1.5)
        assert torch.equal(got, expected), objective


def test_levels_map_to_ddpm_steps_and_each_model_runs_on_the_other_s_levels():
    sched = NoiseSchedule.named("cosine", 1000)
    assert nearest_timesteps(sched, ddim_levels(sched, 5)).tolist() == [999, 749, 500, 250, 0]
    assert nearest_timesteps(sched, euler_levels(5)).tolist() == [999, 842, 622, 368, 148]  # by hand from Eq. (17)
    assert [round(float(t), 3) for t in ddim_levels(sched, 5)] == [1.0, 0.709, 0.504, 0.299, 0.006]  # cos, sin of Eq. (17)
    with pytest.raises(ValueError, match="repeated or rising"):
        nearest_timesteps(sched, torch.tensor([0.5, 0.5]))
    model = tiny_pipeline("v")
    on_flow_levels = sample_at_levels(model, 2, seeded(4), euler_levels(5), labels=torch.tensor([1, 2]))
    assert not torch.equal(on_flow_levels, model.sample(2, seeded(4), labels=torch.tensor([1, 2]), steps=5))
