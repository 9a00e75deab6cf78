"""Patches and position embeddings: exact round trips, the documented token order, errors, known values."""

from __future__ import annotations

import math

import pytest
import torch

from minilineage.layers import (
    LearnedPositionEmbedding,
    grid_positions,
    patchify,
    patchify_video,
    resample_positions,
    sincos_1d,
    sincos_2d,
    sincos_3d,
    unpatchify,
    unpatchify_video,
)

# --- patchify / unpatchify ------------------------------------------------------------------------


def test_image_round_trip_is_exact():
    x = torch.randn(2, 3, 8, 12)
    tokens, grid = patchify(x, 4)
    assert tokens.shape == (2, 6, 48) and grid == (2, 3)
    assert torch.equal(unpatchify(tokens, grid, 4), x)


def test_video_round_trip_is_exact():
    x = torch.randn(2, 6, 3, 8, 4)
    tokens, grid = patchify_video(x, p=2, p_t=3)
    assert tokens.shape == (2, 2 * 4 * 2, 3 * 2 * 2 * 3) and grid == (2, 4, 2)
    assert torch.equal(unpatchify_video(tokens, grid, p=2, p_t=3), x)


def test_image_tokens_follow_the_documented_order():
    """Token i*w + j is patch (row i, column j), its pixels row-major over (p, p, C), channels fastest."""
    x = torch.arange(2 * 2 * 6 * 4, dtype=torch.float32).view(2, 2, 6, 4)
    tokens, (h, w) = patchify(x, 2)
    for b in range(2):
        for i in range(h):
            for j in range(w):
                patch = x[b, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]  # (C, p, p)
                expected = [patch[c, r, s].item() for r in range(2) for s in range(2) for c in range(2)]
                assert tokens[b, i * w + j].tolist() == expected


def test_video_tokens_follow_the_documented_order():
    x = torch.arange(4 * 1 * 4 * 2, dtype=torch.float32).view(1, 4, 1, 4, 2)  # (B, F, C, H, W)
    tokens, (f, h, w) = patchify_video(x, p=2, p_t=2)
    assert (f, h, w) == (2, 2, 1)
    for n in range(f * h * w):
        fi, i, j = n // (h * w), (n // w) % h, n % w
        block = x[0, 2 * fi : 2 * fi + 2, 0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]  # (p_t, p, p)
        assert tokens[0, n].tolist() == block.flatten().tolist()


def test_patch_size_one_frame_per_patch_equals_patchifying_each_frame():
    x = torch.randn(2, 3, 1, 4, 4)
    tokens, grid = patchify_video(x, p=2)
    per_frame = torch.cat([patchify(x[:, f], 2)[0] for f in range(3)], dim=1)
    assert grid == (3, 2, 2) and torch.equal(tokens, per_frame)


@pytest.mark.parametrize("shape, p, message", [
    ((1, 1, 30, 28), 4, "image height 30 is not divisible by patch size 4"),
    ((1, 1, 28, 30), 4, "image width 30 is not divisible by patch size 4"),
    ((1, 1, 28, 28), 0, "patch size must be a positive integer, got 0"),
])
def test_sizes_that_do_not_divide_are_named(shape, p, message):
    with pytest.raises(ValueError, match=message):
        patchify(torch.zeros(shape), p)


def test_video_sizes_that_do_not_divide_are_named():
    with pytest.raises(ValueError, match="frame count 5 is not divisible by temporal patch size 2"):
        patchify_video(torch.zeros(1, 5, 1, 8, 8), p=4, p_t=2)
    with pytest.raises(ValueError, match="frame height 6 is not divisible by patch size 4"):
        patchify_video(torch.zeros(1, 4, 1, 6, 8), p=4)
    with pytest.raises(ValueError, match=r"expects videos \(B, F, C, H, W\)"):
        patchify_video(torch.zeros(1, 1, 8, 8), p=4)


def test_unpatchify_refuses_tokens_that_do_not_fit_the_grid():
    tokens = torch.zeros(1, 12, 16)
    with pytest.raises(ValueError, match="12 tokens do not fill a grid of 3 x 3 = 9"):
        unpatchify(tokens, (3, 3), 4)
    with pytest.raises(ValueError, match="token width 16 is not a multiple of p\\*p = 9"):
        unpatchify(tokens, (3, 4), 3)


# --- position embeddings --------------------------------------------------------------------------


def test_grid_positions_are_in_token_order():
    pos = grid_positions((2, 3, 4))
    n = 17
    assert pos.shape == (24, 3) and pos[n].tolist() == [n // 12, (n // 4) % 3, n % 4]


def test_sincos_2d_values_match_the_formula():
    """Channels: [cos(i w_k), sin(i w_k)] for the row i, then the same for the column j, w_k = 10000^(-k/(dim/4))."""
    dim, (i, j) = 16, (2, 5)
    emb = sincos_2d((4, 7), dim)[i * 7 + j]
    quarter = dim // 4
    omega = [10000 ** (-k / quarter) for k in range(quarter)]
    expected = ([math.cos(i * o) for o in omega] + [math.sin(i * o) for o in omega]
                + [math.cos(j * o) for o in omega] + [math.sin(j * o) for o in omega])
    assert torch.allclose(emb, torch.tensor(expected), atol=1e-6)
    assert emb[0].item() == pytest.approx(math.cos(2.0), abs=1e-7)  # -0.41615 (row 2, fastest frequency)


def test_sincos_2d_at_the_origin_is_cosines_one_sines_zero():
    emb = sincos_2d((3, 3), 32)[0]
    ones, zeros = torch.ones(8), torch.zeros(8)
    assert torch.equal(emb, torch.cat([ones, zeros, ones, zeros]))


def test_sincos_2d_patches_in_one_row_share_the_row_half():
    emb = sincos_2d((5, 6), 32).view(5, 6, 32)
    assert torch.equal(emb[3, 0, :16], emb[3, 5, :16]) and not torch.equal(emb[3, 0, 16:], emb[3, 5, 16:])
    assert torch.equal(emb[0, 2, 16:], emb[4, 2, 16:])  # ... and one column shares the column half


def test_sincos_similarity_falls_with_distance_along_an_axis():
    emb = sincos_2d((1, 12), 64)  # one row of 12 patches
    similarity = (emb[0] @ emb.T).tolist()  # dot product with patch 0
    assert similarity[0] == pytest.approx(32.0)  # |e|^2 = dim / 2: each sin^2 + cos^2 pair gives 1 ...
    assert all(a > b for a, b in zip(similarity[:5], similarity[1:5]))  # ... falls over the first 4 steps
    assert max(similarity[2:]) < similarity[1]  # and the nearest neighbour is the most similar other patch


def test_sincos_positions_do_not_depend_on_the_grid_size():
    small, large = sincos_2d((3, 5), 32).view(3, 5, 32), sincos_2d((9, 9), 32).view(9, 9, 32)
    assert torch.equal(small, large[:3, :5])  # absolute positions: patch (i, j) is the same everywhere


def test_sincos_scale_stretches_positions():
    half = sincos_2d((4, 4), 32, scale=0.5).view(4, 4, 32)
    assert torch.allclose(half[2, 2], sincos_2d((7, 7), 32).view(7, 7, 32)[1, 1])


def test_sincos_1d_reads_the_raster_index():
    assert torch.equal(sincos_1d(20, 8)[7], sincos_1d(8, 8)[7])
    assert sincos_1d(5, 8).shape == (5, 8)


def test_sincos_3d_at_one_frame_reduces_to_2d():
    dim, grid = 32, (1, 3, 4)
    emb = sincos_3d(grid, dim)
    time_part = torch.cat([torch.ones(4), torch.zeros(4)])  # frame 0: cos 0 = 1, sin 0 = 0 (dim / 4 channels)
    assert torch.equal(emb[:, :8], time_part.expand(12, 8))
    assert torch.equal(emb[:, 8:], sincos_2d((3, 4), 3 * dim // 4))


def test_sincos_3d_frames_share_space_and_differ_in_time():
    emb = sincos_3d((3, 2, 2), 16).view(3, 4, 16)  # (f, h*w, dim)
    assert torch.equal(emb[0, :, 4:], emb[2, :, 4:])
    assert torch.allclose(emb[2, 0, :4], torch.tensor([math.cos(2.0), math.cos(2e-2), math.sin(2.0), math.sin(2e-2)]))


@pytest.mark.parametrize("make, message", [
    (lambda: sincos_2d((2, 2), 6), "sincos_2d needs dim divisible by 4"),
    (lambda: sincos_3d((1, 2, 2), 24), "sincos_3d needs dim divisible by 16"),
    (lambda: sincos_2d((2, 2), 8, scale=(1, 1, 1)), "scale needs one number or 2"),
])
def test_embedding_sizes_that_do_not_fit_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_learned_embedding_covers_any_length_up_to_its_table():
    pos = LearnedPositionEmbedding(49, 8)
    assert torch.equal(pos(10), pos.table[:10]) and pos(49).shape == (49, 8)
    with pytest.raises(ValueError, match="exist for 49 positions, asked for 81"):
        pos(81)


def test_resampling_a_table_to_its_own_grid_changes_nothing():
    table = torch.randn(12, 5)
    assert torch.allclose(resample_positions(table, (3, 4), (3, 4)), table, atol=1e-6)


def test_resampling_keeps_a_constant_table_and_follows_the_grid():
    assert torch.allclose(resample_positions(torch.full((49, 3), 0.7), (7, 7), (9, 5)), torch.full((45, 3), 0.7))
    rows = grid_positions((7, 7))[:, :1].float().expand(49, 2)  # a table that stores each patch's row
    smaller = resample_positions(rows, (7, 7), (1, 1))  # one patch covering everything: the middle row
    assert torch.allclose(smaller, torch.tensor([[3.0, 3.0]]), atol=1e-5)
    with pytest.raises(ValueError, match="a table of 12 positions is not a 7 x 7 grid"):
        resample_positions(torch.zeros(12, 2), (7, 7), (5, 5))
