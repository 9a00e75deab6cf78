"""Chapter 2 and 3 widget behaviour: move each control and check the frame shown, pixel for pixel."""

from __future__ import annotations

import json
import math
import re

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: tests never open a window

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget_link import Link

from minilineage.diffusion import NoiseSchedule, q_sample
from minilineage.diffusion.samplers import ddim_denoise, ddim_sample, ddim_timesteps, ddpm_sample
from minilineage.widgets import (
    FramePlayer,
    PlayerSwitch,
    beta_player,
    decode_png,
    grid,
    noising_explorer,
    png_bytes,
    posterior_sampler,
    reverse_player,
    schedule_figure,
    step_comparison,
    to_pixels,
    traversal_player,
)
from minilineage.widgets.diffusion import interpolation_player, slerp


class PaintVAE:
    """A fake VAE on (1, 2, D) images: decode paints z[j] * gain / 3 into column j.

    encode reads the code back from the first row (mu = 3 x, exact when gain = 1) and reports a
    fixed sigma, so every number a widget shows can be computed by hand.
    """

    def __init__(self, D: int = 4, gain: float = 1.0, sigma: float = 0.5):
        self.D, self.gain, self.sigma = D, gain, sigma

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = 3 * x[:, 0, 0, :]  # (B, D)
        return mu, torch.full_like(mu, 2 * math.log(self.sigma))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (self.gain * z / 3)[:, None, None, :].expand(-1, 1, 2, self.D)  # (B, 1, 2, D)


def panel(pixels: np.ndarray, widths: list[int], index: int, gap: int = 2) -> np.ndarray:
    """The index-th panel of a frame laid out by `FramePlayer.from_panels`."""
    start = sum(widths[:index]) + gap * index
    return pixels[:, start : start + widths[index]]


def codes(B: int = 2, D: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(B, D, generator=torch.Generator().manual_seed(seed)) * 2 - 1  # in [-1, 1]


# --- Chapter 2: VAE --------------------------------------------------------------------------


def test_posterior_sampler_decodes_the_mean_at_zero_and_seeded_draws_at_temperature():
    vae = PaintVAE()
    x = vae.decode(codes())  # (2, 1, 2, 4), codes read back exactly by encode
    player = posterior_sampler(
        vae,
        x,
        temperatures=(0.0, 1.5),
        n_draws=3,
        generator=torch.Generator().manual_seed(5),
        scale=1,
    )
    widths = [grid(x, nrow=1).shape[-1], 2 + 3 * (4 + 2)]
    mu = vae.encode(x)[0]
    at_zero = panel(decode_png(player.current_png()), widths, 1)
    assert np.array_equal(at_zero, to_pixels(grid(vae.decode(mu.repeat_interleave(3, 0)), nrow=3)))

    player.slider.value = 1
    eps = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(5))  # (n, B, D)
    z = torch.stack(
        [mu[b] + 1.5 * 0.5 * eps[n, b] for b in range(2) for n in range(3)]
    )  # digit-major
    pixels = decode_png(player.current_png())
    assert np.array_equal(panel(pixels, widths, 1), to_pixels(grid(vae.decode(z), nrow=3)))
    assert np.array_equal(panel(pixels, widths, 0), to_pixels(grid(x, nrow=1)))
    assert player.captions[1].value.startswith("temperature 1.5")


def test_traversal_frame_k_sets_value_k_in_each_rows_dimension():
    vae, z = PaintVAE(), codes(B=2)
    values = [-3.0, 0.0, 1.5]
    player = traversal_player(vae, z, dims=(1, 3), values=values, scale=1)
    player.slider.value = 2
    expected = []
    for d in (1, 3):  # one row per dimension, one column per code
        for b in range(2):
            row = z[b].clone()
            row[d] = 1.5
            expected.append(row)
    assert np.array_equal(
        decode_png(player.current_png()), to_pixels(grid(vae.decode(torch.stack(expected)), nrow=2))
    )
    assert decode_png(player.current_png())[2, 2 + 1] == round(
        (0.5 + 1) * 127.5
    )  # z_1 = 1.5 painted as 0.5
    assert player.captions[0].value.startswith("z_d = -3.00")


def test_traversal_of_an_image_starts_from_its_mean_code():
    vae, z = PaintVAE(), codes(B=1)
    from_image = traversal_player(vae, vae.decode(z)[0], dims=(0,), values=[2.0])  # one (C, H, W)
    from_code = traversal_player(vae, z[0], dims=(0,), values=[2.0])  # one (D,)
    assert from_image.current_png() == from_code.current_png()
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        traversal_player(vae, z, dims=(4,))


def test_beta_player_slider_switches_models_in_beta_order():
    sharp, smooth = PaintVAE(gain=1.0), PaintVAE(gain=-0.5)  # decodings differ in sign and size
    x = sharp.decode(codes())
    player = beta_player(
        {1.0: smooth, 0.2: sharp},
        x,
        generator=torch.Generator().manual_seed(2),
        samples_per_row=3,
        scale=1,
    )
    assert len(player) == 2 and player.captions[0].value.startswith("β = 0.2 ")
    widths = [grid(x, nrow=1).shape[-1]] * 2 + [2 + 3 * (4 + 2)]
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))  # the same z for both models
    for index, vae in enumerate((sharp, smooth)):
        player.slider.value = index
        pixels = decode_png(player.current_png())
        reconstruction = vae.decode(vae.encode(x)[0])
        assert np.array_equal(panel(pixels, widths, 1), to_pixels(grid(reconstruction, nrow=1)))
        assert np.array_equal(panel(pixels, widths, 2), to_pixels(grid(vae.decode(z), nrow=3)))
    kl = (
        0.5 * (0.25 - 1 - math.log(0.25)) * 4 + 0.5 * sharp.encode(x)[0].pow(2).sum(1).mean().item()
    )
    assert f"MSE 0.0000 · KL {kl:.1f} nats" in player.captions[0].value  # sharp rebuilds x exactly
    mse = ((-0.5 * x - x) / 2).pow(2).mean().item()  # smooth rebuilds -x / 2, pixels on [0, 1]
    assert f"MSE {mse:.4f}" in player.captions[1].value


def test_vae_widgets_reject_unbatched_images():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        posterior_sampler(PaintVAE(), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        beta_player({1.0: PaintVAE()}, torch.zeros(1, 2, 4))


# --- Chapter 3: noising explorer -------------------------------------------------------------


def digits(B: int = 2) -> torch.Tensor:
    return (
        torch.randint(0, 256, (B, 1, 4, 4), generator=torch.Generator().manual_seed(1)).float()
        / 127.5
        - 1
    )


def test_noising_explorer_frame_k_of_each_schedule_is_q_sample_at_t_k():
    x0 = digits()
    explorer = noising_explorer(
        x0, T=100, n_frames=5, generator=torch.Generator().manual_seed(3), scale=2
    )
    assert explorer.timesteps == [0, 25, 50, 74, 99]  # linspace(0, 99, 5), rounded half to even
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    for s, name in enumerate(("linear", "quadratic", "cosine")):
        explorer.selector.index = s
        sched = NoiseSchedule.named(name, 100)
        for k in (1, 4):
            explorer.slider.value = k
            xt = q_sample(sched, x0, torch.full((2,), explorer.timesteps[k]), eps)
            assert explorer.current_png() == png_bytes(grid(xt.clamp(-1, 1)), scale=2)
    assert explorer.current is explorer.players["cosine"]


def test_noising_explorer_kernel_links_keep_the_frame_when_switching_schedule():
    explorer = noising_explorer(digits(), T=100, n_frames=5)
    explorer.slider.value = 3
    assert [p.slider.value for p in explorer.players.values()] == [3, 3, 3]
    assert [p.stack.selected_index for p in explorer.players.values()] == [3, 3, 3]
    explorer.selector.value = "quadratic"
    assert explorer.stack.selected_index == 1
    assert explorer.current_png() == explorer.players["quadratic"].images[3].value
    assert explorer.current_png() != explorer.players["linear"].images[3].value


def test_noising_explorer_captions_give_alpha_bar_and_snr():
    explorer = noising_explorer(digits(), T=1000, n_frames=3)  # t = 0, 500 (499.5 to even), 999
    assert explorer.timesteps == [0, 500, 999]
    betas = np.linspace(1e-4, 0.02, 1000)
    alpha_bar = np.cumprod(1 - betas)  # float64, independent of the package
    linear = [c.value for c in explorer.players["linear"].captions]
    assert linear[2].startswith("linear: t = 999 · ᾱ_t = 4.04e-05 · SNR(t) = 4.04e-05")
    snr = alpha_bar[500] / (1 - alpha_bar[500])
    assert (
        f"ᾱ_t = {alpha_bar[500]:.4g} · SNR(t) = {snr:.4g} (log SNR {math.log(snr):+.2f})"
        in linear[1]
    )
    f = lambda t: (
        math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    )  # Nichol & Dhariwal Eq. (17)
    cosine_mid = f(501) / f(0)  # index 500 is the paper's step 501
    assert f"ᾱ_t = {cosine_mid:.4g}" in explorer.players["cosine"].captions[1].value
    assert "SNR(t) = 9999" in linear[0]  # alpha_bar_1 = 1 - 1e-4


def test_noising_explorer_jslinks_selector_to_stack_and_shared_slider_to_every_player(tmp_path):
    explorer = noising_explorer(digits(), T=100, n_frames=4)
    assert all(type(link) is Link for link in explorer.links)  # two-way jslinks
    ends = {(link.source, link.target) for link in explorer.links}
    assert ((explorer.selector, "index"), (explorer.stack, "selected_index")) in ends
    assert ((explorer.play, "value"), (explorer.slider, "value")) in ends
    for player in explorer.players.values():
        assert ((explorer.slider, "value"), (player.slider, "value")) in ends
        assert player.play.layout.display == "none"  # one visible Play button, one timer
    html = explorer.save_html(tmp_path / "noising.html").read_text()
    script = r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>'
    state = json.loads(re.search(script, html, re.S).group(1))["state"]
    assert [m["model_name"] for m in state.values()].count("ImageModel") == 3 * 4
    links = [m["state"] for m in state.values() if m["model_name"] == "LinkModel"]
    ref = lambda w: f"IPY_MODEL_{w.model_id}"
    pairs = {(tuple(link["source"]), tuple(link["target"])) for link in links}
    assert ((ref(explorer.selector), "index"), (ref(explorer.stack), "selected_index")) in pairs


def test_player_switch_rejects_players_of_different_lengths():
    frames = torch.zeros(3, 1, 2, 2)
    with pytest.raises(ValueError, match="same number of frames"):
        PlayerSwitch({"a": FramePlayer(frames), "b": FramePlayer(frames[:2])})


def test_schedule_figure_plots_alpha_bar_and_log_snr_without_pyplot():
    figure = schedule_figure(T=50)
    left, right = figure.axes
    sched = NoiseSchedule.named("cosine", 50)
    assert [line.get_label() for line in left.lines] == ["linear", "quadratic", "cosine"]
    np.testing.assert_allclose(left.lines[2].get_ydata(), sched.alpha_bar.numpy())
    np.testing.assert_allclose(
        right.lines[2].get_ydata(), sched.snr(torch.arange(50)).log().numpy()
    )
    assert plt.get_fignums() == []


# --- Chapter 3: reverse process --------------------------------------------------------------


def test_reverse_player_shows_xt_x0_hat_and_scaled_eps_every_kth_step():
    constant = lambda v: torch.full((2, 1, 3, 3), float(v))
    trajectory = [
        {
            "t": t,
            "xt": constant(0.1 * t),
            "x0_hat": constant(-0.1 * t),
            "eps_hat": constant(0.3 * t),
        }
        for t in reversed(range(6))
    ]
    player = reverse_player(trajectory, every=2, scale=1, nrow=2)
    assert len(player) == 6 // 2 + 1  # every 2nd step back from the last, and x_T first
    assert [c.value for c in player.captions] == [
        f"t = {t} · reverse step {6 - t} of 6" for t in (5, 4, 2, 0)
    ]
    player.slider.value = 2  # t = 2
    widths = [grid(constant(0), nrow=2).shape[-1]] * 3
    pixels = decode_png(player.current_png())
    for index, value in enumerate((0.2, -0.2, 0.6 / 3)):
        assert np.array_equal(panel(pixels, widths, index), to_pixels(grid(constant(value), nrow=2)))


def test_reverse_player_of_a_ddpm_run_ends_at_the_sample():
    sched = NoiseSchedule.named("cosine", 10)
    x0, trajectory = ddpm_sample(
        lambda x, t, **c: 0.5 * x,
        sched,
        (3, 1, 4, 4),
        torch.Generator().manual_seed(0),
        trajectory=True,
    )
    player = reverse_player(trajectory, every=5, scale=1)
    assert len(player) == 3 and player.captions[-1].value.startswith("t = 0 ")
    assert player.captions[0].value.startswith("t = 9 ")  # the chain starts at x_T
    torch.testing.assert_close(trajectory[0]["xt"], torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)))
    player.slider.value = 2
    widths = [grid(x0, nrow=4).shape[-1]] * 3
    assert np.array_equal(
        panel(decode_png(player.current_png()), widths, 1), to_pixels(grid(x0, nrow=4))
    )


def test_step_comparison_starts_every_run_from_the_same_noise_and_counts_evaluations():
    sched = NoiseSchedule.named("linear", 50)
    seen = []

    def model(x, t, y):
        seen.append((x.clone(), y))
        return 0.3 * x

    shape = (2, 1, 4, 4)
    player = step_comparison(
        model,
        sched,
        shape,
        steps_list=(1, 4),
        generator=torch.Generator().manual_seed(9),
        scale=1,
        y=torch.tensor([3, 7]),
    )
    xT = torch.randn(shape, generator=torch.Generator().manual_seed(9))
    assert len(seen) == 1 + 4 and all(y.tolist() == [3, 7] for _, y in seen)
    torch.testing.assert_close(seen[0][0], xT)
    torch.testing.assert_close(seen[1][0], xT)  # the second run starts from the same x_T
    assert [c.value.split(" (")[0] for c in player.captions] == [
        "DDIM, 1 steps · 1 network evaluations",
        "DDIM, 4 steps · 4 network evaluations",
    ]
    player.slider.value = 1
    expected = ddim_sample(
        model, sched, shape, 4, torch.Generator().manual_seed(9), y=torch.tensor([3, 7])
    )
    assert player.current_png() == png_bytes(grid(expected), scale=1)
    player.slider.value = 0
    one_jump = (xT - 0.3 * xT * sched.sqrt_one_minus_alpha_bar[49]) / sched.sqrt_alpha_bar[
        49
    ]  # Eq. (15)
    assert player.current_png() == png_bytes(grid(one_jump.clamp(-1, 1)), scale=1)


# --- Chapter 3: interpolation through DDIM's noise space --------------------------------------


def test_slerp_keeps_the_norm_of_equal_norm_noises_and_hits_both_ends():
    a, b = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).unbind(0)
    a, b = a[None], b[None] * a.norm() / b.norm()  # (1, 3, 8, 8) each, equal norms
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    middle = slerp(a, b, 0.5)
    assert middle.norm().item() == pytest.approx(a.norm().item(), rel=1e-5)  # on the sphere
    assert ((a + b) / 2).norm().item() < 0.8 * a.norm().item()  # the straight line is not
    cos = lambda u, v: (u * v).sum() / (u.norm() * v.norm())
    assert cos(middle, a).item() == pytest.approx(cos(middle, b).item(), rel=1e-5)  # halfway in angle


def test_interpolation_player_decodes_each_slerped_noise_with_ddim():
    sched = NoiseSchedule.named("linear", 50)
    model = lambda x, t, y: 0.2 * x + 0.05 * y.view(-1, 1, 1, 1)
    xT_a = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    xT_b = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([3])
    player = interpolation_player(model, sched, xT_a, xT_b, steps=5, n_frames=3, scale=1, y=y)
    assert len(player) == 3 and player.captions[1].value.startswith("weight 0.50 of the second noise")
    widths = [grid(xT_a, nrow=1).shape[-1]] * 2
    for k, weight in enumerate((0.0, 0.5, 1.0)):
        player.slider.value = k
        noise = slerp(xT_a, xT_b, weight)
        decoded = ddim_denoise(model, sched, noise, ddim_timesteps(50, 5), None, y=y)
        pixels = decode_png(player.current_png())
        assert np.array_equal(panel(pixels, widths, 0), to_pixels(grid(noise, nrow=1)))
        assert np.array_equal(panel(pixels, widths, 1), to_pixels(grid(decoded, nrow=1)))
    with pytest.raises(ValueError, match="two noises of one shape"):
        interpolation_player(model, sched, xT_a, xT_b[..., :2], y=y)
