"""Samplers: pinned numbers, analytic checks on Gaussian data, DDIM/DDPM agreement, guidance, SDEdit."""

from __future__ import annotations

import pytest
import torch

from minilineage.diffusion import NoiseSchedule, gather, q_sample
from minilineage.diffusion.samplers import (
    ddim_denoise,
    ddim_invert,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    guided,
    sdedit,
)
from minilineage.diffusion.schedules import linear_betas

T = 50
SCHED = NoiseSchedule.named("linear", T)
DATA_STD = 0.3


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dummy(x, t, **cond):
    return 0.1 * x + 0.01 * t.view(-1, 1, 1, 1)


def gaussian_oracle(x, t, **cond):
    """The exact optimal eps for data x0 ~ N(0, DATA_STD^2): E[eps | x_t] = sqrt(1 - abar) x_t / Var(x_t)."""
    alpha_bar = gather(SCHED.alpha_bar, t, x.ndim)
    return (1 - alpha_bar).sqrt() * x / (DATA_STD**2 * alpha_bar + 1 - alpha_bar)


def float64_schedule():
    betas = linear_betas(T)
    alpha_bar = torch.cumprod(1 - betas, 0)
    return betas, alpha_bar, torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])


# ---- pinned numbers (computed once with this code, torch 2.x CPU generator) --------------------


def test_ddpm_sample_pins_numbers_for_a_dummy_model():
    x = ddpm_sample(dummy, SCHED, (2, 1, 2, 2), seeded(0))
    expected = [0.370286, 0.922587, -0.034194, -0.658836, -0.240060, 0.289365, 0.239675, 0.411311]
    assert x.shape == (2, 1, 2, 2)
    assert torch.allclose(x.flatten(), torch.tensor(expected), atol=1e-5)


def test_ddim_sample_pins_numbers_for_eta_0_and_eta_half():
    x = ddim_sample(gaussian_oracle, SCHED, (2, 1, 2, 2), 10, seeded(0))
    expected = [0.308986, -0.058836, -0.436871, 0.113977, -0.217458, -0.280433, 0.080875, 0.168033]
    assert torch.allclose(x.flatten(), torch.tensor(expected), atol=1e-5)
    x = ddim_sample(gaussian_oracle, SCHED, (2, 1, 2, 2), 10, seeded(0), eta=0.5)
    expected = [0.060384, 0.043033, -0.466541, -0.064368, -0.076989, 0.203343, 0.255688, -0.003570]
    assert torch.allclose(x.flatten(), torch.tensor(expected), atol=1e-5)


# ---- analytic checks with Gaussian data, where every step is a known linear map ---------------


def test_ddpm_sample_variance_matches_the_analytic_recursion_for_gaussian_data():
    # With x0_hat = k_t x_t, a DDPM step is x_{t-1} = (coef1 k_t + coef2) x_t + sqrt(beta_tilde) z,
    # so Var(x_{t-1}) = (coef1 k_t + coef2)^2 Var(x_t) + beta_tilde, starting from Var(x_T) = 1.
    betas, alpha_bar, alpha_bar_prev = float64_schedule()
    var = torch.tensor(1.0, dtype=torch.float64)
    for t in reversed(range(T)):
        k = alpha_bar[t].sqrt() * DATA_STD**2 / (DATA_STD**2 * alpha_bar[t] + 1 - alpha_bar[t])
        coef1 = betas[t] * alpha_bar_prev[t].sqrt() / (1 - alpha_bar[t])
        coef2 = (1 - alpha_bar_prev[t]) * (1 - betas[t]).sqrt() / (1 - alpha_bar[t])
        var = (coef1 * k + coef2) ** 2 * var + betas[t] * (1 - alpha_bar_prev[t]) / (
            1 - alpha_bar[t]
        )
    x = ddpm_sample(gaussian_oracle, SCHED, (8000, 1, 2, 2), seeded(1), clip_x0=None)
    assert x.mean().abs().item() < 0.005
    assert x.std().item() == pytest.approx(
        var.sqrt().item(), abs=0.005
    )  # 0.2528, not 0.3: see Ho et al. Sec. 3.2


def test_ddim_eta_0_applies_the_analytic_linear_map_to_x_T_for_gaussian_data():
    _, alpha_bar, _ = float64_schedule()
    timesteps = ddim_timesteps(T, 10).tolist()
    gain = torch.tensor(1.0, dtype=torch.float64)
    for t, t_prev in zip(timesteps, timesteps[1:] + [-1], strict=True):
        a, a_prev = (
            alpha_bar[t],
            (alpha_bar[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)),
        )
        k = a.sqrt() * DATA_STD**2 / (DATA_STD**2 * a + 1 - a)  # x0_hat = k x_t
        gain = gain * (
            a_prev.sqrt() * k + (1 - a_prev).sqrt() * (1 - a.sqrt() * k) / (1 - a).sqrt()
        )
    xT = torch.randn(3, 1, 2, 2, generator=seeded(2))
    x = ddim_sample(gaussian_oracle, SCHED, (3, 1, 2, 2), 10, seeded(2), clip_x0=None)
    assert torch.allclose(x.double(), gain * xT.double(), rtol=1e-4, atol=1e-6)


# ---- DDIM versus DDPM ------------------------------------------------------------------------


def test_ddim_with_every_step_and_eta_1_is_ddpm_for_the_same_seed():
    # Eq. (16) with eta = 1 gives sigma^2 = beta_tilde, and the mean of Eq. (12) becomes Eq. (7).
    ddpm = ddpm_sample(dummy, SCHED, (4, 1, 3, 3), seeded(3))
    ddim = ddim_sample(dummy, SCHED, (4, 1, 3, 3), T, seeded(3), eta=1.0)
    assert torch.allclose(ddim, ddpm, atol=1e-5)
    assert not torch.allclose(
        ddim_sample(dummy, SCHED, (4, 1, 3, 3), T, seeded(3), eta=0.0), ddpm, atol=1e-2
    )


def test_ddim_with_eta_1_and_ddpm_agree_in_distribution_for_different_seeds():
    ddpm = ddpm_sample(gaussian_oracle, SCHED, (8000, 1, 2, 2), seeded(4))
    ddim = ddim_sample(gaussian_oracle, SCHED, (8000, 1, 2, 2), T, seeded(5), eta=1.0)
    assert (ddpm.mean() - ddim.mean()).abs().item() < 0.01
    assert ddpm.std().item() == pytest.approx(ddim.std().item(), abs=0.006)


def test_ddim_eta_0_is_deterministic_given_x_t_and_eta_1_is_not():
    xt = torch.randn(2, 1, 4, 4, generator=seeded(6))
    steps = ddim_timesteps(T, 8)
    same = [ddim_denoise(dummy, SCHED, xt, steps, seeded(seed)) for seed in (7, 8)]
    assert torch.equal(same[0], same[1])
    differ = [ddim_denoise(dummy, SCHED, xt, steps, seeded(seed), eta=1.0) for seed in (7, 8)]
    assert not torch.allclose(differ[0], differ[1])


def test_ddim_timesteps_are_evenly_spaced_from_T_minus_1_to_0():
    assert ddim_timesteps(1000, 5).tolist() == [999, 749, 500, 250, 0]
    assert ddim_timesteps(50, 50).tolist() == list(range(49, -1, -1))
    assert ddim_timesteps(50, 1).tolist() == [49]
    assert ddim_timesteps(50, 4, t_start=24).tolist() == [24, 16, 8, 0]
    for steps in (2, 3, 7, 33):
        ts = ddim_timesteps(50, steps)
        assert len(ts) == steps and ts.dtype == torch.long and (ts.diff() < 0).all()


@pytest.mark.parametrize("steps, t_start", [(0, None), (51, None), (6, 4), (2, 50)])
def test_ddim_timesteps_reject_impossible_step_counts(steps, t_start):
    with pytest.raises(ValueError):
        ddim_timesteps(50, steps, t_start)


# ---- trajectories, clipping, video ----------------------------------------------------------


@pytest.mark.parametrize(
    "sampler, n_frames",
    [(lambda **kw: ddpm_sample(**kw), T), (lambda **kw: ddim_sample(steps=7, **kw), 7)],
)
def test_trajectory_has_one_cpu_frame_per_step_from_x_T_to_the_sample(sampler, n_frames):
    x, frames = sampler(
        model=dummy, sched=SCHED, shape=(2, 1, 3, 3), generator=seeded(9), trajectory=True
    )
    assert len(frames) == n_frames
    assert frames[0]["t"] == T - 1 and frames[-1]["t"] == 0
    assert [f["t"] for f in frames] == sorted((f["t"] for f in frames), reverse=True)
    for frame in frames:
        assert set(frame) == {"t", "xt", "x0_hat", "eps_hat"}
        assert all(
            frame[k].shape == (2, 1, 3, 3) and frame[k].dtype == torch.float32
            for k in ("xt", "x0_hat", "eps_hat")
        )
        assert frame["xt"].device.type == "cpu"
    assert torch.equal(frames[0]["xt"], torch.randn(2, 1, 3, 3, generator=seeded(9)))
    assert torch.allclose(frames[-1]["x0_hat"], x)  # the last step returns its x0 estimate
    assert torch.equal(
        sampler(model=dummy, sched=SCHED, shape=(2, 1, 3, 3), generator=seeded(9)), x
    )


def test_clipping_keeps_samples_in_the_data_range_and_none_disables_it():
    wild = lambda x, t, **c: -5 * torch.ones_like(x)  # noqa: E731
    assert ddpm_sample(wild, SCHED, (2, 1, 2, 2), seeded(0)).abs().max() <= 1
    assert ddim_sample(wild, SCHED, (2, 1, 2, 2), 5, seeded(0)).abs().max() <= 1
    assert ddpm_sample(wild, SCHED, (2, 1, 2, 2), seeded(0), clip_x0=None).abs().max() > 10


def test_samplers_handle_5d_video_tensors():
    video_model = lambda x, t, **c: 0.1 * x  # noqa: E731
    assert ddpm_sample(video_model, SCHED, (2, 3, 4, 5, 5), seeded(0)).shape == (2, 3, 4, 5, 5)
    assert ddim_sample(video_model, SCHED, (2, 3, 4, 5, 5), 5, seeded(0), eta=0.5).shape == (
        2,
        3,
        4,
        5,
        5,
    )


# ---- classifier-free guidance ---------------------------------------------------------------


class Conditional:
    """A conditional eps model that depends on labels y and text tokens context, and counts calls."""

    def __init__(self):
        self.batch_sizes = []

    def __call__(self, x, t, y, context, mask=None):
        self.batch_sizes.append(x.shape[0])
        shift = 0.05 * y.float().view(-1, 1, 1, 1) + context.mean(dim=(1, 2)).view(
            -1, 1, 1, 1
        )  # (B, 1, 1, 1)
        return 0.1 * x + 0.001 * t.view(-1, 1, 1, 1) + shift + (0 if mask is None else mask)


def _inputs(batch=3, tokens=4, width=8):
    x = torch.randn(batch, 1, 2, 2, generator=seeded(10))
    t = torch.tensor([0, 20, 49])[:batch]
    cond = {
        "y": torch.tensor([1, 7, 3])[:batch],
        "context": torch.randn(batch, tokens, width, generator=seeded(11)),
    }
    null = {"y": torch.tensor(10), "context": torch.zeros(1, tokens, width)}
    return x, t, cond, null


def test_guidance_scale_1_is_the_conditional_model_and_scale_0_the_unconditional():
    x, t, cond, null = _inputs()
    model = Conditional()
    assert torch.allclose(guided(model, 1.0, null)(x, t, **cond), model(x, t, **cond), atol=1e-6)
    unconditional = model(x, t, y=torch.full((3,), 10), context=torch.zeros(3, 4, 8))
    assert torch.allclose(guided(model, 0.0, null)(x, t, **cond), unconditional, atol=1e-6)


def test_guidance_extrapolates_by_scale_in_one_batched_forward_pass():
    x, t, cond, null = _inputs()
    model = Conditional()
    eps_cond, eps_uncond = (
        model(x, t, **cond),
        model(x, t, y=torch.full((3,), 10), context=torch.zeros(3, 4, 8)),
    )
    model.batch_sizes.clear()
    eps = guided(model, 3.0, null)(x, t, **cond)
    assert model.batch_sizes == [6]
    assert torch.allclose(eps, eps_uncond + 3.0 * (eps_cond - eps_uncond), atol=1e-5)


def test_guidance_accepts_batch_shaped_nulls_and_shares_unguided_keywords():
    x, t, cond, _ = _inputs()
    model = Conditional()
    null = {"y": torch.full((3,), 10)}  # guide on the label only; context and mask are shared
    mask = torch.arange(3.0).view(3, 1, 1, 1)
    eps = guided(model, 2.0, null)(x, t, mask=mask, **cond)
    eps_cond = model(x, t, mask=mask, **cond)
    eps_uncond = model(x, t, y=torch.full((3,), 10), context=cond["context"], mask=mask)
    assert torch.allclose(eps, eps_uncond + 2.0 * (eps_cond - eps_uncond), atol=1e-5)


def test_guided_model_called_without_a_guided_keyword_raises():
    x, t, cond, null = _inputs()
    with pytest.raises(ValueError, match="context"):
        guided(Conditional(), 2.0, null)(x, t, y=cond["y"])


def test_samplers_run_a_guided_model_once_per_step():
    _, _, cond, null = _inputs(batch=3)
    model = Conditional()
    x = ddim_sample(guided(model, 4.0, null), SCHED, (3, 1, 2, 2), 6, seeded(0), **cond)
    assert x.shape == (3, 1, 2, 2) and model.batch_sizes == [6] * 6


# ---- SDEdit ---------------------------------------------------------------------------------


def test_sdedit_is_q_sample_to_strength_times_T_then_ddim():
    x0 = torch.linspace(-1, 1, 8).view(2, 1, 2, 2)
    got = sdedit(gaussian_oracle, SCHED, x0, 0.4, 5, seeded(12))
    gen = seeded(12)
    xt = q_sample(
        SCHED, x0, torch.full((2,), 19), torch.randn(2, 1, 2, 2, generator=gen)
    )  # 0.4 * 50 = paper's 20
    expected = ddim_denoise(gaussian_oracle, SCHED, xt, torch.tensor([19, 14, 10, 5, 0]), gen)
    assert torch.allclose(got, expected)
    pinned = [-0.139716, -0.346540, -0.052424, 0.077126, 0.172061, -0.177768, -0.043709, -0.091358]
    assert torch.allclose(got.flatten(), torch.tensor(pinned), atol=1e-5)


def test_sdedit_strength_trades_fidelity_for_freedom():
    x0 = torch.linspace(-0.6, 0.6, 8).view(2, 1, 2, 2).repeat(50, 1, 1, 1)  # (100, 1, 2, 2)
    assert torch.equal(sdedit(gaussian_oracle, SCHED, x0, 0.0, 5, seeded(0)), x0)
    distance = [
        (sdedit(gaussian_oracle, SCHED, x0, s, 5, seeded(0)) - x0).abs().mean().item()
        for s in (0.1, 0.5, 1.0)
    ]
    assert distance[0] < distance[1] < distance[2]
    calls = []
    sdedit(lambda x, t: (calls.append(t[0].item()), 0 * x)[1], SCHED, x0, 0.1, 20, seeded(0))
    assert calls == [4, 3, 2, 1, 0]  # steps capped by the 5 timesteps below strength * T


def test_sdedit_rejects_strength_outside_0_1():
    with pytest.raises(ValueError, match="strength"):
        sdedit(dummy, SCHED, torch.zeros(1, 1, 2, 2), 1.5, 5, seeded(0))


def test_a_model_returning_the_wrong_shape_is_rejected():
    doubled = lambda x, t, **c: torch.cat([x, x], dim=1)  # noqa: E731  e.g. a learned-variance head
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 2\)"):
        ddpm_sample(doubled, SCHED, (1, 1, 2, 2), seeded(0))


# ---- DDIM inversion: the deterministic sampler run from data to noise ---------------------------


def test_ddim_invert_follows_the_exact_ode_map_of_gaussian_data_to_first_order():
    """For x0 ~ N(0, s^2) the probability-flow ODE is linear: x_t = x0 sqrt(abar s^2 + 1 - abar) / s."""
    sched, s = NoiseSchedule.named("linear", 1000), DATA_STD

    def oracle(x, t, **cond):  # E[eps | x_t] for this schedule and data
        alpha_bar = gather(sched.alpha_bar, t, x.ndim)
        return (1 - alpha_bar).sqrt() * x / (s**2 * alpha_bar + 1 - alpha_bar)

    x0 = s * torch.randn(4, 1, 2, 2, generator=seeded(0))
    alpha_bar_T = sched.alpha_bar[-1]
    exact = x0 * (alpha_bar_T * s**2 + 1 - alpha_bar_T).sqrt() / s
    errors = {}
    for steps in (100, 1000):
        timesteps = ddim_timesteps(1000, steps)
        xT = ddim_invert(oracle, sched, x0, timesteps.flip(0), clip_x0=None)
        back = ddim_denoise(oracle, sched, xT, timesteps, None, clip_x0=None)
        errors[steps] = ((xT / exact - 1).abs().max().item(), ((back - x0).abs().max() / x0.abs().max()).item())
    assert errors[1000][0] < 0.01 and errors[1000][1] < 0.02  # encode and round trip, both within ~1 %
    assert 5 < errors[100][0] / errors[1000][0] < 20  # Euler steps: ten times the steps, about a tenth of the error
    assert 5 < errors[100][1] / errors[1000][1] < 20


def test_ddim_invert_passes_conditioning_and_rejects_falling_timesteps():
    seen = []

    def model(x, t, y):
        seen.append((int(t[0]), y.tolist()))
        return 0.1 * x

    x0 = torch.zeros(2, 1, 2, 2)
    ddim_invert(model, SCHED, x0, [0, 20, 49], y=torch.tensor([3, 7]))
    assert seen == [(0, [3, 7]), (20, [3, 7])]  # one call per step, at the step's start
    with pytest.raises(ValueError, match="rising timesteps"):
        ddim_invert(model, SCHED, x0, [49, 20, 0], y=torch.tensor([3, 7]))
