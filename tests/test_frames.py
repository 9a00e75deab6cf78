"""Video-ready diffusion: per-frame timesteps, 5-D samples, and sampling with some frames given.

The masked checks use Gaussian "videos" of two one-pixel frames whose exact conditional law is
known, and a noise predictor that is exactly right for it, so what the sampler produces can be
compared with the true answer.
"""

from __future__ import annotations

import math

import pytest
import torch

from minilineage.diffusion import (
    DiffusionPipeline,
    GivenFrames,
    GivenNoised,
    NoiseSchedule,
    PipelineConfig,
    ddim_sample,
    ddpm_sample,
    eps_loss,
    gather,
    masked_eps_loss,
    masked_v_loss,
    q_sample,
    v_loss,
    v_target,
)

SCHED = NoiseSchedule.named("cosine", 200)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def toy_model(x, t):
    """A made-up elementwise noise predictor that reads t: the same function on 4-D and 5-D input."""
    return 0.4 * x * gather(SCHED.sqrt_one_minus_alpha_bar, t, x.ndim) + 0.1


def test_gather_broadcasts_per_sample_and_per_frame_timesteps():
    coef = torch.arange(10.0)
    assert gather(coef, torch.tensor([1, 2]), 4).shape == (2, 1, 1, 1)
    assert gather(coef, torch.tensor([1, 2]), 5).shape == (2, 1, 1, 1, 1)
    per_frame = gather(coef, torch.tensor([[1, 2, 3], [4, 5, 6]]), 5)  # (B, F) -> (B, F, 1, 1, 1)
    assert per_frame.shape == (2, 3, 1, 1, 1) and per_frame[1, 2].item() == 6
    assert gather(coef, torch.tensor(7), 4).shape == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="more axes"):
        gather(coef, torch.zeros(2, 3, dtype=torch.long), 1)


def test_per_frame_q_sample_noises_each_frame_to_its_own_step():
    x0, eps = torch.randn(2, 3, 1, 4, 4, generator=seeded(1)), torch.randn(2, 3, 1, 4, 4, generator=seeded(2))
    t = torch.tensor([[0, 50, 199], [10, 10, 10]])
    xt = q_sample(SCHED, x0, t, eps)
    for b in range(2):
        for f in range(3):
            one = q_sample(SCHED, x0[b, f][None], t[b, f][None], eps[b, f][None])
            torch.testing.assert_close(xt[b, f], one[0])


@pytest.mark.parametrize("sampler", ["ddpm", "ddim-eta0", "ddim-eta1"])
def test_a_5d_run_equals_the_same_run_reshaped_to_4d(sampler):
    B, F = 3, 4
    run = {
        "ddpm": lambda shape, model: ddpm_sample(model, SCHED, shape, seeded(5)),
        "ddim-eta0": lambda shape, model: ddim_sample(model, SCHED, shape, 20, seeded(5)),
        "ddim-eta1": lambda shape, model: ddim_sample(model, SCHED, shape, 20, seeded(5), eta=1.0),
    }[sampler]
    video = run((B, F, 1, 5, 5), toy_model)
    frames = run((B * F, 1, 5, 5), toy_model)  # the noise is drawn in the same memory order
    torch.testing.assert_close(video.reshape(B * F, 1, 5, 5), frames, rtol=0, atol=1e-6)


def test_the_loss_on_videos_equals_the_loss_on_their_frames():
    B, F = 4, 3
    x0 = torch.randn(B, F, 1, 6, 6, generator=seeded(3))
    t, eps = torch.randint(0, SCHED.T, (B,), generator=seeded(4)), torch.randn(x0.shape, generator=seeded(6))
    video = eps_loss(toy_model, SCHED, x0, None, t=t, eps=eps)
    frames = eps_loss(toy_model, SCHED, x0.flatten(0, 1), None, t=t.repeat_interleave(F), eps=eps.flatten(0, 1))
    torch.testing.assert_close(video, frames)


# ---- Two correlated one-pixel frames: x = (a, b) ~ N(0, [[1, rho], [rho, 1]]) -----------------------
RHO = 0.8


def exact_conditional_model(x, t):
    """The ideal eps predictor for frame 1 when frame 0 is given clean (with t = 0), as masked training makes it.

    b | a ~ N(rho a, 1 - rho^2); with b_t = sqrt(ab) b + sqrt(1 - ab) eps,
    E[eps | b_t, a] = sqrt(1 - ab) (b_t - sqrt(ab) rho a) / (ab (1 - rho^2) + 1 - ab).
    """
    assert t.shape == x.shape[:2] and (t[:, 0] == 0).all()  # per-frame timesteps, given frame at 0
    a, bt = x[:, 0], x[:, 1]
    ab = gather(SCHED.alpha_bar, t[:, 1], bt.ndim)
    eps_b = (1 - ab).sqrt() * (bt - ab.sqrt() * RHO * a) / (ab * (1 - RHO**2) + 1 - ab)
    return torch.stack([torch.zeros_like(a), eps_b], dim=1)


def exact_marginal_model(x, t):
    """The ideal eps predictor of independent unit-variance pixels: E[eps | x_t] = sqrt(1 - ab) x_t."""
    return gather(SCHED.sqrt_one_minus_alpha_bar, t, x.ndim) * x


def given_first_frames(n: int) -> tuple[torch.Tensor, GivenFrames]:
    a = torch.linspace(-1.5, 1.5, n)  # the given first frames
    x0 = torch.zeros(n, 2, 1, 1, 1)
    x0[:, 0, 0, 0, 0] = a
    return a, GivenFrames(x0, torch.tensor([True, False]).expand(n, 2))


def test_given_frames_are_kept_exactly_and_the_rest_follows_the_true_conditional():
    n = 20_000
    a, given = given_first_frames(n)
    x = ddpm_sample(exact_conditional_model, SCHED, (n, 2, 1, 1, 1), seeded(7), clip_x0=None, given=given)
    assert torch.equal(x[:, 0, 0, 0, 0], a)  # the given frame, bit for bit
    residual = x[:, 1, 0, 0, 0] - RHO * a  # b - E[b | a] should be N(0, 1 - rho^2), independent of a
    assert residual.mean().abs().item() < 0.02
    assert residual.std().item() == pytest.approx(math.sqrt(1 - RHO**2), rel=0.03)
    assert torch.corrcoef(torch.stack([residual, a]))[0, 1].abs().item() < 0.03


def test_masked_ddim_matches_ddim_on_the_conditional_law_itself():
    """DDIM with 50 of 200 steps shrinks a Gaussian's spread a little (a discretisation error, about 3 %
    here); conditioning on a given frame must add nothing to that: compare with DDIM run directly on
    the conditional law N(rho a, 1 - rho^2) through its own exact predictor."""
    n, s2 = 20_000, 1 - RHO**2
    a, given = given_first_frames(n)
    x = ddim_sample(exact_conditional_model, SCHED, (n, 2, 1, 1, 1), 50, seeded(7), clip_x0=None, given=given)
    assert torch.equal(x[:, 0, 0, 0, 0], a)

    def centred_conditional(x, t):  # exact eps predictor of N(0, s2) data
        ab = gather(SCHED.alpha_bar, t, x.ndim)
        return (1 - ab).sqrt() * x / (ab * s2 + 1 - ab)

    direct = ddim_sample(centred_conditional, SCHED, (n, 1, 1, 1), 50, seeded(8), clip_x0=None).flatten()
    residual = x[:, 1, 0, 0, 0] - RHO * a
    assert residual.mean().abs().item() < 0.02
    assert residual.std().item() == pytest.approx(direct.std().item(), rel=0.01)
    assert residual.std().item() < math.sqrt(s2)  # the known DDIM shrinkage, so the comparison above matters


def test_noised_replacement_keeps_known_pixels_and_samples_independent_ones_exactly():
    n = 20_000
    known = torch.full((n, 2, 1, 1, 1), 0.7)
    given = GivenNoised(known, torch.tensor([True, False]).expand(n, 2))
    x = ddpm_sample(exact_marginal_model, SCHED, (n, 2, 1, 1, 1), seeded(8), clip_x0=None, given=given)
    assert torch.equal(x[:, 0], known[:, 0])
    free = x[:, 1].flatten()
    assert free.mean().abs().item() < 0.03 and free.std().item() == pytest.approx(1.0, rel=0.03)


def test_masked_loss_gives_frames_clean_at_t0_and_scores_only_the_others():
    B, F = 3, 4
    x0, eps = torch.randn(B, F, 1, 2, 2, generator=seeded(9)), torch.randn(B, F, 1, 2, 2, generator=seeded(10))
    t = torch.tensor([5, 100, 199])
    given = torch.tensor([[True, False, False, False], [False, False, False, False], [True, True, False, True]])
    seen = {}

    def model(xt, t_frames):
        seen["xt"], seen["t"] = xt, t_frames
        return torch.where(given[..., None, None, None], 1e6, 0.5 * xt)  # garbage on given frames: ignored

    loss = masked_eps_loss(model, SCHED, x0, given, None, t=t, eps=eps)
    assert torch.equal(seen["t"], torch.where(given, 0, t[:, None]))
    assert torch.equal(seen["xt"][given], x0[given])  # given frames enter clean
    free = ~given
    expected = (0.5 * q_sample(SCHED, x0, t, eps) - eps)[free].square().mean()
    torch.testing.assert_close(loss, expected)
    none = masked_eps_loss(lambda x, tf: 0.5 * x, SCHED, x0, torch.zeros(B, F, dtype=torch.bool), None, t=t, eps=eps)
    torch.testing.assert_close(none, eps_loss(lambda x, tt: 0.5 * x, SCHED, x0, None, t=t, eps=eps))
    with pytest.raises(ValueError, match="bool mask"):
        masked_eps_loss(model, SCHED, x0, given.long(), None)


def test_the_masked_v_loss_regresses_v_on_generated_frames_and_equals_v_loss_with_none_given():
    B, F = 3, 4
    x0, eps = torch.randn(B, F, 1, 2, 2, generator=seeded(11)), torch.randn(B, F, 1, 2, 2, generator=seeded(12))
    t = torch.tensor([5, 100, 199])
    given = torch.tensor([[True, False, False, False], [False, False, False, False], [True, True, False, True]])
    model = lambda xt, t_frames: torch.where(given[..., None, None, None], 1e6, 0.5 * xt)  # garbage where given
    loss = masked_v_loss(model, SCHED, x0, given, None, t=t, eps=eps)
    target = v_target(SCHED, x0, t, eps)  # (B, F, ...) with t per sample: the same on every generated frame
    expected = (0.5 * q_sample(SCHED, x0, t, eps) - target)[~given].square().mean()
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, masked_eps_loss(model, SCHED, x0, given, None, t=t, eps=eps))  # a different target
    none = masked_v_loss(lambda x, tf: 0.5 * x, SCHED, x0, torch.zeros(B, F, dtype=torch.bool), None, t=t, eps=eps)
    torch.testing.assert_close(none, v_loss(lambda x, tt: 0.5 * x, SCHED, x0, None, t=t, eps=eps))


def test_a_pipeline_samples_sizes_it_was_not_trained_at():
    torch.manual_seed(0)
    unet = {"cls": "UNet", "config": {"width": 8, "channel_mults": (1, 2), "attention_levels": (), "num_classes": 10}}
    model = DiffusionPipeline(PipelineConfig(denoiser=unet, T=50)).eval()
    assert model.sample(2, seeded(0), steps=3).shape == (2, 1, 28, 28)
    assert model.sample(2, seeded(0), steps=3, shape=(1, 16, 20)).shape == (2, 1, 16, 20)
    with pytest.raises(ValueError, match="classes 0..9"):
        model.sample(2, seeded(0), labels=torch.tensor([3, 12]))
    with pytest.raises(ValueError, match="positive number"):
        model.sample(0, seeded(0))


def test_a_v_prediction_pipeline_trains_on_v_and_samples_through_eps():
    torch.manual_seed(0)
    unet = {"cls": "UNet", "config": {"width": 8, "channel_mults": (1,), "attention_levels": (), "num_classes": 10}}
    model = DiffusionPipeline(PipelineConfig(denoiser=unet, T=50, objective="v")).eval()
    torch.nn.init.normal_(model.net.out_conv.weight, std=0.1)  # a non-zero output, so the conversion shows
    x, t, y = torch.randn(3, 1, 28, 28, generator=seeded(1)), torch.tensor([0, 20, 49]), torch.tensor([1, 2, 3])
    v_hat = model(x, t, y=y)
    ab = gather(model.sched.alpha_bar, t, 4)
    torch.testing.assert_close(model.predict_eps(x, t, y=y), ab.sqrt() * v_hat + (1 - ab).sqrt() * x)
    torch.testing.assert_close(model.denoiser(1.0)(x, t, y=y), model.predict_eps(x, t, y=y))
    batch = {"x": x, "y": y}
    loss = model.loss(batch, seeded(2))
    g = seeded(2)
    drop = torch.rand(y.shape, generator=g) < 0.1  # the label dropout draws first, as in the pipeline
    expected = v_loss(model, model.sched, x, g, y=torch.where(drop, 10, y))
    torch.testing.assert_close(loss, expected)
    assert model.sample(2, seeded(0), steps=3).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="unknown objective 'x0'; choose one of: eps, eps-min-snr, v"):
        DiffusionPipeline(PipelineConfig(denoiser=unet, objective="x0"))
