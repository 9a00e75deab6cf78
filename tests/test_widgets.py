"""Widget behaviour: move each control and check what is shown, byte for byte."""

from __future__ import annotations

import json
import re

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: tests never open a window

import ipywidgets
import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget_link import Link

from minilineage.widgets import (
    FramePlayer,
    LatentExplorer,
    LossPlot,
    decode_png,
    denoise_player,
    grid,
    in_notebook,
    lossplot,
    png_bytes,
    to_pixels,
)


def distinct_frames(n: int = 5) -> torch.Tensor:
    """n frames (T, 1, 6, 6), frame t a constant grey 40 t, exactly representable as uint8."""
    levels = torch.arange(n, dtype=torch.float32) * 40  # 0, 40, 80, ...
    return (levels / 127.5 - 1).view(n, 1, 1, 1).expand(n, 1, 6, 6).contiguous()


def embedded_state(path) -> dict:
    """The widget-state JSON that `embed_minimal_html` writes into the page."""
    html = path.read_text()
    pattern = r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>'
    match = re.search(pattern, html, re.S)
    return json.loads(match.group(1))["state"]


# --- image helpers ---------------------------------------------------------------------------


def test_to_pixels_round_trips_float_images():
    u = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    x = u.float() / 127.5 - 1  # the course's [-1, 1] scaling
    assert np.array_equal(to_pixels(x), u.permute(0, 2, 3, 1).numpy())
    assert np.array_equal(to_pixels(u[0]), u[0].permute(1, 2, 0).numpy())


def test_to_pixels_drops_single_channel_and_clamps():
    x = torch.tensor([[[-2.0, -1.0, 0.0, 1.0, 3.0]]])  # (1, 1, 5)
    assert to_pixels(x).tolist() == [[0, 0, 128, 255, 255]]  # 127.5 rounds to even: 128
    assert to_pixels(x.numpy()).shape == (1, 5)


def test_to_pixels_rejects_channels_last():
    with pytest.raises(ValueError, match="channels"):
        to_pixels(np.zeros((28, 28, 5), dtype=np.uint8))


def test_grid_tiles_with_white_padding():
    x = torch.tensor([10, 20, 30], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 4, 4)
    g = grid(x, nrow=3, padding=2)
    assert g.shape == (1, 8, 20)  # one channel kept; 2 + 3 * (4 + 2) wide
    assert g[0, 2:6, 2:6].eq(10).all() and g[0, 2:6, 14:18].eq(30).all()
    assert g[0, 0].eq(255).all() and g[0, :, 6:8].eq(255).all()


def test_png_bytes_upscales_with_nearest_neighbour():
    u = torch.randint(0, 256, (1, 3, 4), dtype=torch.uint8)
    pixels = decode_png(png_bytes(u, scale=4))
    assert pixels.shape == (12, 16)
    assert np.array_equal(pixels[::4, ::4], u[0].numpy())
    assert np.array_equal(pixels[3::4, 3::4], u[0].numpy())  # each pixel a 4x4 block


# --- FramePlayer -----------------------------------------------------------------------------


def test_moving_slider_selects_frame_and_shows_its_png():
    frames = distinct_frames(5)
    player = FramePlayer(frames, scale=2)
    assert player.current_png() == png_bytes(frames[0], scale=2)
    player.slider.value = 3
    assert player.stack.selected_index == 3
    assert player.current_png() == png_bytes(frames[3], scale=2)
    assert decode_png(player.current_png(), scale=2)[0, 0] == 120


def test_jslinks_tie_play_to_slider_and_slider_to_stack():
    player = FramePlayer(distinct_frames(4))
    assert all(type(link) is Link for link in player.links)  # two-way jslinks, not jsdlinks
    ends = {(link.source, link.target) for link in player.links}
    assert ends == {
        ((player.play, "value"), (player.slider, "value")),
        ((player.slider, "value"), (player.stack, "selected_index")),
    }
    assert (player.play.max, player.slider.max) == (3, 3)


def test_captions_sit_under_their_frames():
    player = FramePlayer(distinct_frames(3), captions=["a", "b", "c"])
    page = player.stack.children[2]
    assert page.children[0] is player.images[2] and page.children[1].value == "c"
    with pytest.raises(ValueError, match="3 frames but 2 captions"):
        FramePlayer(distinct_frames(3), captions=["a", "b"])


def test_list_of_frames_shows_the_same_as_a_tensor():
    frames = distinct_frames(3)
    as_list = FramePlayer([to_pixels(f)[None] for f in frames])  # (1, H, W) uint8 arrays
    as_tensor = FramePlayer(frames)
    assert [i.value for i in as_list.images] == [i.value for i in as_tensor.images]


def test_save_html_embeds_every_frame_and_the_jslinks(tmp_path):
    unrelated = ipywidgets.Image(value=b"not part of the player")
    player = FramePlayer(distinct_frames(6), captions=[str(t) for t in range(6)])
    state = embedded_state(player.save_html(tmp_path / "player.html", title="six frames"))
    names = [model["model_name"] for model in state.values()]
    assert names.count("ImageModel") == 6
    assert unrelated.model_id not in state  # only the player's own widgets are embedded
    links = [m["state"] for m in state.values() if m["model_name"] == "LinkModel"]
    ends = {(tuple(link["source"]), tuple(link["target"])) for link in links}
    ref = lambda w: f"IPY_MODEL_{w.model_id}"
    assert ((ref(player.play), "value"), (ref(player.slider), "value")) in ends
    assert ((ref(player.slider), "value"), (ref(player.stack), "selected_index")) in ends
    assert "<title>six frames</title>" in (tmp_path / "player.html").read_text()


def test_from_panels_lays_each_frame_side_by_side():
    a, b = distinct_frames(2), distinct_frames(4)[2:]  # panel a: 0, 40; panel b: 80, 120
    player = FramePlayer.from_panels([a, b], titles=["x_t", "x0_hat"], scale=3, gap=2)
    player.slider.value = 1
    pixels = decode_png(player.current_png(), scale=3)  # (6, 6 + 2 + 6)
    assert pixels.shape == (6, 14)
    assert (pixels[:, :6] == 40).all() and (pixels[:, 6:8] == 255).all() and (pixels[:, 8:] == 120).all()
    header = player.children[0]
    assert [h.layout.width for h in header.children] == ["18px", "18px"]
    assert "x0_hat" in header.children[1].value


# --- denoise_player --------------------------------------------------------------------------


def test_denoise_player_at_sigma_zero_shows_clean_input_left():
    x0 = torch.randint(0, 256, (3, 1, 5, 5)).float() / 127.5 - 1
    player = denoise_player(x0, reconstruct=lambda x: -x, levels=[0.0, 0.5], scale=2)
    left = to_pixels(grid(x0, nrow=1))  # (3 * 7 + 2, 9): one digit per row
    width = left.shape[1]
    pixels = decode_png(player.current_png(), scale=2)
    assert np.array_equal(pixels[:, :width], left)
    assert np.array_equal(pixels[:, width + 2 :], to_pixels(grid(-x0, nrow=1)))
    assert player.captions[0].value == "noise level σ = 0.00"


def test_denoise_player_slider_adds_the_seeded_noise():
    x0 = torch.zeros(2, 1, 4, 4)
    seen = []
    player = denoise_player(x0, reconstruct=lambda x: seen.append(x) or x, levels=[0.0, 0.5],
                            generator=torch.Generator().manual_seed(7), scale=1)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(seen[1], 0.5 * eps)
    before = player.current_png()
    player.slider.value = 1
    assert player.current_png() != before
    width = grid(x0, nrow=1).shape[-1]
    assert np.array_equal(decode_png(player.current_png())[:, :width], to_pixels(grid(0.5 * eps, nrow=1)))


# --- LatentExplorer --------------------------------------------------------------------------


class PaintZ:
    """A fake decoder that paints z1 into the left half and z2 into the right half of an image."""

    def __init__(self):
        self.calls = []

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.calls.append(z.clone())
        image = torch.empty(1, 1, 4, 4)
        image[..., :2], image[..., 2:] = z[0, 0] / 3, z[0, 1] / 3
        return image


def test_latent_explorer_decodes_the_slider_position():
    decode = PaintZ()
    codes, labels = torch.randn(50, 2, generator=torch.Generator().manual_seed(0)), torch.arange(50) % 10
    explorer = LatentExplorer(decode, codes=codes, labels=labels, extent=3.0, scale=2)
    assert decode.calls[-1].tolist() == [[0.0, 0.0]]
    image_before, plot_before = explorer.current_png(), explorer.plot.value
    explorer.sliders[0].value = 1.5
    explorer.sliders[1].value = -3.0
    assert decode.calls[-1].tolist() == [[1.5, -3.0]] and decode.calls[-1].shape == (1, 2)
    assert explorer.z.tolist() == [[1.5, -3.0]]
    assert explorer.current_png() != image_before and explorer.plot.value != plot_before
    pixels = decode_png(explorer.current_png(), scale=2)
    assert pixels[0, 0] == round((0.5 + 1) * 127.5) and pixels[0, 3] == 0  # 1.5 / 3, -3 / 3


def test_latent_explorer_z_setter_moves_the_sliders():
    decode = PaintZ()
    explorer = LatentExplorer(decode)  # no codes: the map shows only the marker
    explorer.z = torch.tensor([[0.5, 2.0]])
    assert [s.value for s in explorer.sliders] == [0.5, 2.0]
    assert decode.calls[-1].tolist() == [[0.5, 2.0]]


def test_latent_explorer_rejects_a_batch_from_decode():
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        LatentExplorer(lambda z: torch.zeros(2, 1, 4, 4))


# --- LossPlot --------------------------------------------------------------------------------


def test_loss_plot_is_a_no_op_outside_a_notebook(monkeypatch):
    assert not in_notebook()
    monkeypatch.setattr(lossplot, "display", lambda *a, **k: pytest.fail("displayed outside a notebook"))
    plot = LossPlot(every=1, title="quiet")
    for step in range(100):
        plot.update(step, 1.0 / (step + 1))
    plot.close()
    assert plot.handle is None and plot.steps == []


def test_loss_plot_in_a_notebook_redraws_one_output_every_n_steps(monkeypatch):
    class Handle:
        updates = []

        def update(self, obj):
            self.updates.append(obj)

    shown = []
    monkeypatch.setattr(lossplot, "in_notebook", lambda: True)
    monkeypatch.setattr(lossplot, "display", lambda obj, display_id: shown.append(obj) or Handle())
    plot = LossPlot(every=50, title="ae-mnist")
    for step in range(120):
        plot.update(step, float("nan") if step == 7 else 2.0 * 0.99**step)
    assert len(shown) == 1 and len(Handle.updates) == 2  # drawn at steps 0, 50, 100
    plot.close()
    assert len(Handle.updates) == 3 and Handle.updates[-1].data.startswith(b"\x89PNG")
    assert plot.figure().axes[0].get_yscale() == "log"


def test_stroke_lift_is_one_for_a_uniform_map_and_the_inverse_stroke_share_for_a_map_on_the_strokes():
    from minilineage.widgets.ldm import ink_mask, stroke_lift

    image = -torch.ones(1, 1, 28, 28)
    image[..., 4:12, 8:16] = 1.0  # ink fills the 7x7 cells (1..2, 2..3): 4 of 49 cells
    stroke = ink_mask(image, (7, 7))
    assert stroke.sum() == 4 and stroke[0, 1:3, 2:4].all()
    uniform = torch.full((1, 1, 7, 7), 1 / 49)
    on_strokes = stroke[:, None].float() / 4  # all weight on the 4 stroke cells
    off_strokes = (~stroke[:, None]).float() / 45
    lift = stroke_lift(torch.cat([uniform, on_strokes, off_strokes], dim=1), image)  # (1, 3)
    assert torch.allclose(lift, torch.tensor([[1.0, 49 / 4, 0.0]]))
