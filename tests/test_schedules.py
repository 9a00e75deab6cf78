"""Beta schedules: shapes, endpoints, and the cosine schedule against its defining formula."""

from __future__ import annotations

import math

import pytest
import torch

from minilineage.diffusion.schedules import (
    SCHEDULES,
    cosine_betas,
    linear_betas,
    make_betas,
    quadratic_betas,
)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("T", [50, 1000])
def test_every_schedule_gives_float64_betas_of_length_T_inside_0_1(name, T):
    betas = make_betas(name, T)
    assert betas.shape == (T,) and betas.dtype == torch.float64
    assert (betas > 0).all() and (betas < 1).all()


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_alpha_bar_decreases_strictly_from_near_one_to_near_zero(name):
    alpha_bar = torch.cumprod(1 - make_betas(name, 1000), dim=0)
    assert (alpha_bar[1:] < alpha_bar[:-1]).all()
    assert alpha_bar[0] > 0.999 and alpha_bar[-1] < 1e-3


def test_linear_betas_have_ho_endpoints_at_T_1000():
    betas = linear_betas(1000)
    assert betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    assert torch.allclose(
        betas.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64)
    )


def test_linear_endpoints_scale_with_1000_over_T():
    betas = linear_betas(250)
    assert betas[0].item() == pytest.approx(4e-4, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.08, rel=1e-12)


def test_scaled_linear_schedule_reaches_the_same_alpha_bar_at_the_same_fraction_of_T():
    alpha_bar_long = torch.cumprod(1 - linear_betas(1000), 0)
    alpha_bar_short = torch.cumprod(1 - linear_betas(100), 0)
    # Step 50 of 100 covers the same fraction of the process as step 500 of 1000 (unscaled
    # endpoints would give log alpha_bar = -0.25 instead of -2.5).
    assert alpha_bar_short[49].log().item() == pytest.approx(
        alpha_bar_long[499].log().item(), rel=0.05
    )


def test_quadratic_betas_are_linear_in_sqrt_beta_with_the_linear_endpoints():
    betas = quadratic_betas(1000)
    steps = betas.sqrt().diff()
    assert torch.allclose(steps, steps[0].expand_as(steps), rtol=1e-9)
    assert betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.02, rel=1e-12)


def test_quadratic_betas_lie_below_the_linear_ones_between_equal_endpoints():
    quadratic, linear = quadratic_betas(1000), linear_betas(1000)
    assert quadratic[0] == linear[0] and quadratic[-1] == pytest.approx(linear[-1].item(), rel=1e-12)
    assert (quadratic[1:-1] < linear[1:-1]).all()  # less noise at every step in between
    gap = linear - quadratic
    assert gap.argmax().item() in (499, 500)  # most of all in the middle
    alpha_bar_T = [torch.prod(1 - b).item() for b in (quadratic, linear)]
    assert alpha_bar_T[0] == pytest.approx(7.33e-4, rel=1e-2) and alpha_bar_T[1] == pytest.approx(4.04e-5, rel=1e-2)


def test_cosine_alpha_bar_follows_the_cos_squared_formula():
    T, s = 1000, 0.008
    alpha_bar = torch.cumprod(1 - cosine_betas(T), dim=0)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = torch.tensor([f(t) / f(0) for t in range(1, T + 1)], dtype=torch.float64)
    # Up to the last few steps, where beta is clipped at max_beta, the product is exact.
    assert torch.allclose(alpha_bar[:-1], expected[:-1], rtol=1e-10, atol=1e-12)


def test_cosine_betas_are_clipped_at_max_beta():
    betas = cosine_betas(1000, max_beta=0.999)
    assert betas.max().item() == 0.999
    assert cosine_betas(1000, max_beta=0.5).max().item() == 0.5


def test_make_betas_equals_calling_the_registered_function():
    assert torch.equal(make_betas("cosine", 200), cosine_betas(200))
    assert torch.equal(make_betas("linear", 200), linear_betas(200))


def test_unknown_schedule_name_error_lists_the_choices():
    with pytest.raises(ValueError) as error:
        make_betas("sigmoid", 1000)
    for name in ("sigmoid", "linear", "quadratic", "cosine"):
        assert name in str(error.value)


def test_linear_schedule_refuses_a_T_so_short_that_beta_reaches_one():
    with pytest.raises(ValueError, match="T=20"):
        linear_betas(20)
    assert linear_betas(21)[-1] < 1
