"""Chapter 5 widgets: move each control and check what is shown, pixel for pixel where it is pixels."""

from __future__ import annotations

import json
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget_link import Link

from minilineage.diffusion import NoiseSchedule, q_sample
from minilineage.layers import sincos_1d, sincos_2d
from minilineage.widgets import (
    decode_png,
    figure_png,
    noised_patches,
    patch_figure,
    patch_grid,
    patch_mosaic,
    position_similarity,
    side_by_side,
    to_pixels,
)


def digit() -> torch.Tensor:
    """A 28 x 28 test image (1, 28, 28) in [-1, 1] whose every pixel differs from its neighbours."""
    return (torch.arange(28 * 28, dtype=torch.float32).view(1, 28, 28) % 255) / 127.5 - 1


def test_patch_size_slider_shows_the_frame_of_that_patch_size():
    image = digit()
    widget = patch_grid(image, patch_sizes=(4, 7))
    first = widget.current_png()
    assert first == figure_png(patch_figure(image, 4))
    widget.slider.value = 7
    assert widget.stack.selected_index == 1
    assert widget.current_png() == figure_png(patch_figure(image, 7)) != first
    assert widget.captions[1].value.startswith("patch 7 x 7: 4 x 4 = 16 tokens of 49 numbers")
    assert type(widget.links[0]) is Link
    assert (widget.links[0].source, widget.links[0].target) == ((widget.slider, "index"), (widget.stack, "selected_index"))


def test_patch_grid_page_embeds_every_frame_and_the_link(tmp_path):
    widget = patch_grid(digit(), patch_sizes=(4, 7))
    html = widget.save_html(tmp_path / "patches.html").read_text()
    state = json.loads(re.search(r'widget-state\+json">(.*?)</script>', html, re.S).group(1))["state"]
    names = [model["model_name"] for model in state.values()]
    assert names.count("ImageModel") == 2 and names.count("LinkModel") == 1


def test_patch_mosaic_puts_white_gaps_between_patches():
    image = digit()
    mosaic = patch_mosaic(image, 7, gap=1)[0]  # (1 + 4 * 8, 1 + 4 * 8)
    assert mosaic.shape == (33, 33)
    assert (mosaic[8] == 255).all() and (mosaic[:, 16] == 255).all()
    assert torch.equal(mosaic[9:16, 1:8], torch.as_tensor(to_pixels(image))[7:14, 0:7])  # patch (1, 0)


def expected_shades(pos: torch.Tensor, k: int) -> np.ndarray:
    """Cosine similarity of patch k to each patch, one by one, shaded from the table's minimum (0) to 1 (255)."""
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))
    table = [[cos(a, b) for b in pos] for a in pos]
    low = min(min(row) for row in table)
    shades = [(s - low) / (1 - low) * 2 - 1 for s in table[k]]
    return to_pixels(torch.tensor(shades).view(7, 7))


def test_picking_a_patch_shows_its_similarity_to_every_other():
    image, two_d, one_d = digit(), sincos_2d((7, 7), 32), sincos_1d(49, 32)
    widget = position_similarity({"2-D": two_d, "1-D": one_d}, image, p=4, scale=1)
    first = widget.current_png()
    widget.slider.value = 17  # row 2, column 3
    assert widget.current_png() != first
    pixels = decode_png(widget.current_png())  # (28, 28 + 4 + 28 + 4 + 28, 3): image | 2-D map | 1-D map
    marked, map_2d, map_1d = pixels[:, :28], pixels[:, 32:60, 0], pixels[:, 64:, 0]
    assert (marked[8:12, 12:16] == (255, 0, 0)).all() and not (marked[:8] == (255, 0, 0)).all(-1).any()
    assert np.array_equal(map_2d[::4, ::4], expected_shades(two_d, 17))
    assert np.array_equal(map_1d[::4, ::4], expected_shades(one_d, 17))
    assert map_2d[8, 12] == map_1d[8, 12] == 255  # a patch is most similar to itself
    assert map_2d[8, 8] == map_2d[8, 16] and map_2d[4, 12] == map_2d[12, 12]  # 2-D sin-cos: only |distance| counts
    assert map_1d[8, 8] != map_1d[4, 12]  # 1-D: one step left (index 16) is not one step up (index 10)
    assert "patch 17 (row 2, column 3)" in widget.captions[17].value


def test_similarity_needs_one_embedding_per_patch():
    with pytest.raises(ValueError, match="48 embeddings for a grid of 7 x 7 = 49 patches"):
        position_similarity({"short": torch.randn(48, 8)}, digit(), p=4)


def test_t_slider_and_patch_selector_show_x_t_cut_into_tokens():
    x0 = torch.stack([digit()[0:1], -digit()[0:1]])  # (2, 1, 28, 28)
    widget = noised_patches(x0, patch_sizes=(4, 7), n_frames=5, generator=torch.Generator().manual_seed(3), scale=1)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    sched = NoiseSchedule.named("cosine", 1000)

    def shown(p: int, t: int) -> np.ndarray:
        xt = q_sample(sched, x0, torch.full((2,), t), eps)
        return side_by_side([patch_mosaic(image, p) for image in xt], gap=3)

    assert widget.timesteps == [0, 250, 500, 749, 999]
    assert np.array_equal(decode_png(widget.current_png()), shown(4, 0))
    widget.slider.value = 3
    assert np.array_equal(decode_png(widget.current_png()), shown(4, 749))
    widget.selector.index = 1
    assert np.array_equal(decode_png(widget.current_png()), shown(7, 749))
    assert "t = 749" in widget.current.captions[3].value and "16 tokens of 49 numbers" in widget.current.captions[3].value
