"""Chapter 2's beta player with models trained at another decoder variance: the caption names the knob."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from minilineage.widgets import beta_player, decode_png, grid, to_pixels


class ScaleVAE:
    """A fake VAE on (1, 1, D) images: mu = x, sigma = 1/2, decode(z) = gain * z; config like VAEConfig's."""

    def __init__(self, gain: float, beta: float, decoder_var: float):
        self.gain, self.config = gain, SimpleNamespace(beta=beta, decoder_var=decoder_var)

    def encode(self, x):
        mu = x[:, 0, 0, :]  # (B, D)
        return mu, torch.full_like(mu, 2 * np.log(0.5))

    def decode(self, z):
        return (self.gain * z)[:, None, None, :]  # (B, 1, 1, D)


def test_beta_player_names_the_decoder_variance_and_shows_each_models_reconstruction():
    x = torch.tensor([[[[0.5, -0.5, 0.25]]], [[[0.0, 1.0, -1.0]]]])  # (2, 1, 1, 3)
    matched, plain = ScaleVAE(1.0, beta=1.0, decoder_var=0.05), ScaleVAE(0.5, beta=1.0, decoder_var=0.5)
    player = beta_player({1.0: plain, 0.1: matched}, x, generator=torch.Generator().manual_seed(0),
                         samples_per_row=2, scale=1)
    assert player.captions[0].value.startswith("β = 0.1 (β = 1 at σ² = 0.05) · reconstruction MSE 0.0000")
    assert player.captions[1].value.startswith("β = 1 · reconstruction MSE")
    width = grid(x, nrow=1).shape[-1]
    first = decode_png(player.current_png())
    assert np.array_equal(first[:, width + 2 : 2 * width + 2], to_pixels(grid(x, nrow=1)))  # matched rebuilds x
    player.slider.value = 1
    second = decode_png(player.current_png())
    assert np.array_equal(second[:, width + 2 : 2 * width + 2], to_pixels(grid(0.5 * x, nrow=1)))  # plain halves it
