"""Chapter 7 widgets: moving each player's slider shows the frame, step or strength it names."""

from __future__ import annotations

import pytest
import torch

from minilineage.diffusion import DiffusionPipeline, PipelineConfig
from minilineage.widgets import (
    denoising_player,
    grid,
    png_bytes,
    sdedit_player,
    side_by_side,
    strip,
    strips,
    video_player,
)

VOCAB = ["<pad>", "<bos>", "<eos>", "<unk>", "a", *"0123456789"]


def clips(seed: int, n: int = 2, frames: int = 5, size: int = 8) -> torch.Tensor:
    return torch.rand(n, frames, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_video_player_frame_slider_shows_frame_f_of_every_clip_of_every_panel():
    a, b = clips(0), clips(1)
    player = video_player([a, b], titles=["real", "generated"], scale=2)
    assert len(player) == 5
    player.slider.value = 3
    assert player.stack.selected_index == 3
    expected = side_by_side([grid(a[:, 3], nrow=1), grid(b[:, 3], nrow=1)], gap=2)
    assert player.current_png() == png_bytes(expected, 2)
    with pytest.raises(ValueError, match="same number of frames"):
        video_player([a, clips(2, frames=3)])


def test_strips_lay_a_clip_out_as_a_row_of_frames_one_setting_per_step():
    short, wide = clips(0, n=1, frames=3), clips(1, n=2, frames=1, size=12)
    frame = strip(short)
    assert frame.shape == (1, 8 + 2, 3 * 9 + 1)  # one row of 3 frames, 1 pixel of padding around each
    player = strips([short, wide], ["three frames", "two images"], scale=1)
    first = player.current_png()
    player.slider.value = 1
    assert player.current_png() == png_bytes(strip(wide), 1) and player.current_png() != first


def test_sdedit_player_shows_the_input_above_its_edit_at_each_strength():
    x = clips(3)
    edit = lambda c, prompts, strength, generator: c * (1 - strength)  # noqa: E731  fades to grey with strength
    player = sdedit_player(edit, x, ["a 1", "a 2"], strengths=(0.0, 0.5, 1.0), scale=1)
    player.slider.value = 2
    assert player.current_png() == png_bytes(strip(torch.cat([x[:1], x * 0])), 1)
    player.slider.value = 0
    assert player.current_png() == png_bytes(strip(torch.cat([x[:1], x])), 1)


def test_denoising_player_steps_through_the_decoded_predictions():
    torch.manual_seed(0)
    config = PipelineConfig(
        denoiser={"cls": "VideoDiT", "config": {"in_channels": 2, "patch": 1, "width": 16, "depth": 1, "heads": 2,
                                                "context_dim": 16}},
        autoencoder={"cls": "VAE3d", "config": {"width": 4, "latent_channels": 2, "frames": 5, "size": 8}},
        text={"vocab": VOCAB, "context_length": 6, "text_width": 16, "text_layers": 1, "text_heads": 2},
        shape=(2, 2, 2, 2), T=20)
    pipe = DiffusionPipeline(config).eval()
    torch.nn.init.normal_(pipe.net.final.linear.weight, std=0.3)  # a fresh DiT predicts 0: give it a prediction
    player = denoising_player(pipe, ["a 1"], steps=3, seed=0)
    assert len(player) == 4  # three steps and the sample
    sample, records = pipe.sample(1, torch.Generator().manual_seed(0), prompt=["a 1"], steps=3, trajectory=True)
    player.slider.value = 1
    assert player.current_png() == png_bytes(strip(pipe.decode(records[1]["x0_hat"]).clamp(-1, 1)), 3)
    player.slider.value = 3
    assert player.current_png() == png_bytes(strip(sample), 3)
    both = denoising_player(pipe, ["a 1"], steps=3, seed=0, show=("xt", "x0_hat"))  # the noisy clip above the guess
    both.slider.value = 1
    rows = torch.cat([pipe.decode(records[1][key]).clamp(-1, 1) for key in ("xt", "x0_hat")])
    assert both.current_png() == png_bytes(strip(rows), 3) and "x_t" in both.captions[1].value
    with pytest.raises(ValueError, match="one or more of xt, x0_hat"):
        denoising_player(pipe, ["a 1"], steps=3, show=("noise",))
