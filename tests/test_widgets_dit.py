"""Chapter 6 widget: the token player shows a DiT's reverse process frame by frame, and plays without a kernel."""

from __future__ import annotations

import json
import re

import pytest
import torch

from minilineage.diffusion import DiffusionPipeline, PipelineConfig
from minilineage.widgets import (
    decode_png,
    denoised_tokens,
    png_bytes,
    side_by_side,
    token_player,
    token_tiles,
)
from minilineage.widgets.dit import _column


def pipeline(objective: str = "eps", latent: bool = False) -> DiffusionPipeline:
    torch.manual_seed(0)
    channels, patch = (4, 1) if latent else (1, 4)
    den = {"cls": "DiT", "config": {"in_channels": channels, "patch": patch, "width": 16, "depth": 1, "heads": 2,
                                    "num_classes": 10}}
    autoencoder = {"cls": "LatentVAE", "config": {"width": 8}} if latent else None
    shape = (4, 7, 7) if latent else (1, 28, 28)
    model = DiffusionPipeline(PipelineConfig(denoiser=den, shape=shape, autoencoder=autoencoder, T=50,
                                             objective=objective, clip_x0=None if latent else 1.0)).eval()
    torch.nn.init.normal_(model.net.final.linear.weight, std=0.3)  # an untrained DiT predicts 0: give it a prediction
    return model


@pytest.mark.parametrize("objective", ["eps", "flow"])
def test_moving_the_step_slider_shows_that_steps_tokens_and_prediction(objective):
    model = pipeline(objective)
    player = token_player(model, labels=(1, 2), steps=3, seed=0, scale=2)
    assert len(player) == 4  # three steps and the finished sample
    _, frames = model.sample(2, torch.Generator().manual_seed(0), labels=torch.tensor([1, 2]), steps=3, trajectory=True)
    first = player.current_png()
    expected = side_by_side([_column(frames[0]["xt"], 4), _column(frames[0]["x0_hat"], 4)], gap=2)
    assert first == png_bytes(expected, 2)
    player.slider.value = 2
    assert player.stack.selected_index == 2 and player.current_png() != first
    expected = side_by_side([_column(frames[2]["xt"], 4), _column(frames[2]["x0_hat"], 4)], gap=2)
    assert player.current_png() == png_bytes(expected, 2)
    t = "t = 0.667 (rectified flow)" if objective == "flow" else "t = 24"
    assert player.captions[1].value == f"step 2 of 3 · {t} · 49 tokens, each cell one token"


def test_latent_tokens_are_drawn_as_squares_of_their_four_channels_next_to_the_decoded_prediction():
    z = torch.arange(2 * 4 * 7 * 7, dtype=torch.float32).reshape(2, 4, 7, 7) / 400
    tiles, p = token_tiles(z, 1)
    assert tiles.shape == (2, 1, 14, 14) and p == 2
    assert torch.equal(tiles[0, 0, 0:2, 0:2], (z[0, :, 0, 0].reshape(2, 2) / 2.5).clamp(-1, 1))  # token (0, 0)
    player = token_player(pipeline(latent=True), labels=(5,), steps=2, scale=1)
    pixels = decode_png(player.current_png())
    assert pixels.shape[0] == 1 + 7 * 5  # one digit: 7 tokens of 4 x 4 decoded pixels, each with a 1-pixel gap
    with pytest.raises(ValueError, match="1-, 3- or 4-channel"):
        token_tiles(torch.zeros(1, 2, 7, 7), 1)


def test_the_exported_page_holds_every_frame_and_the_links(tmp_path):
    player = token_player(pipeline(), labels=(0,), steps=2, scale=1)
    html = player.save_html(tmp_path / "tokens.html").read_text()
    state = json.loads(re.search(r'widget-state\+json">(.*?)</script>', html, re.S).group(1))["state"]
    names = [model["model_name"] for model in state.values()]
    assert names.count("ImageModel") == 3 and names.count("LinkModel") == 2  # play -> slider -> frame


def test_moving_t_shows_the_noised_tokens_and_one_call_s_prediction_with_and_without_the_label():
    model = pipeline("v")
    x0 = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(5)) * 2 - 1
    labels = torch.tensor([4, 9])
    player = denoised_tokens(model, x0, labels, timesteps=(10, 40), generator=torch.Generator().manual_seed(6), scale=1)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(6))

    def shown(t_value: int) -> bytes:
        t = torch.full((2,), t_value)
        xt = model.sched.sqrt_alpha_bar[t_value] * x0 + model.sched.sqrt_one_minus_alpha_bar[t_value] * eps
        with torch.no_grad():
            v_label, v_null = model.net(xt, t, y=labels), model.net(xt, t, y=torch.tensor([10, 10]))
        a, s = model.sched.sqrt_alpha_bar[t_value], model.sched.sqrt_one_minus_alpha_bar[t_value]
        guesses = [(a * xt - s * v).clamp(-1, 1) for v in (v_label, v_null)]  # x0 = sqrt(a) x_t - sqrt(1 - a) v
        return png_bytes(side_by_side([_column(xt, 4), *(_column(g, 4) for g in guesses), _column(x0, 4)], gap=2), 1)

    first = player.current_png()
    assert first == shown(10)
    player.slider.value = 1
    assert player.current_png() == shown(40) != first
    assert player.captions[1].value.startswith("t = 40 · ᾱ_t = ")
    assert "with the label" in player.captions[1].value and len(player) == 2


def test_the_denoised_tokens_page_holds_every_frame_and_the_links(tmp_path):
    player = denoised_tokens(pipeline("v"), torch.zeros(1, 1, 28, 28), [3], timesteps=(5, 25, 45), scale=1)
    html = player.save_html(tmp_path / "denoised.html").read_text()
    state = json.loads(re.search(r'widget-state\+json">(.*?)</script>', html, re.S).group(1))["state"]
    names = [model["model_name"] for model in state.values()]
    assert names.count("ImageModel") == 3 and names.count("LinkModel") == 2  # play -> slider -> frame


def test_denoised_tokens_refuses_a_latent_dit():
    with pytest.raises(ValueError, match="pixel-space DiT"):
        denoised_tokens(pipeline(latent=True), torch.zeros(1, 1, 28, 28), [1])
