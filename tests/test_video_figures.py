"""Chapter 7's figures: reconstruction error and flicker, and the coherence of a clip of one moving digit."""

from __future__ import annotations

import math

import pytest
import torch

from minilineage import data
from minilineage.recipes import get_recipe
from minilineage.recipes.video import (
    centres,
    digit_crops,
    frame_consistency,
    naive_clips,
    reconstruction_figures,
    video_buckets,
)


@pytest.fixture(scope="module")
def clips():
    return data.load_dataset("moving-mnist", "test", n=40, digits=1, seed=5)


def test_reconstruction_figures_against_errors_of_known_size():
    x = torch.rand(4, 6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    assert reconstruction_figures(x, x) == {"mse": 0.0, "psnr": math.inf, "flicker": 0.0}
    steady = reconstruction_figures(x, x + 0.1)  # the same error in every frame: no flicker
    assert steady["mse"] == pytest.approx(0.01) and steady["psnr"] == pytest.approx(10 * math.log10(400))
    assert steady["flicker"] == pytest.approx(0.0, abs=1e-6)  # float32 rounding of x + 0.1 only
    noise = 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    jumpy = reconstruction_figures(x, x + noise)  # independent errors: flicker = sqrt(2) * their std
    assert jumpy["flicker"] == pytest.approx(math.sqrt(2) * 0.05, rel=0.05)
    with pytest.raises(ValueError, match="need two batches of clips"):
        reconstruction_figures(x, x[:, :1])


def test_crops_find_the_digit_and_centres_follow_the_recorded_path(clips):
    x = clips.float_images()  # (40, 17, 1, 32, 32), digits of 16 x 16 pixels
    crops = digit_crops(x)
    assert crops.shape == (40 * 17, 1, 28, 28)
    drawn = clips.info["positions"][:, :, 0].float()  # (N, F, 2) top-left (x, y) of the digit
    found = centres(x)  # (N, F, 2) as (row, column)
    offset = found - drawn.flip(-1)  # the centre of ink sits at a fixed place inside each digit's box
    assert (offset - offset.mean(dim=1, keepdim=True)).abs().max() < 1.0  # it moves exactly with the digit


def test_real_clips_are_coherent_and_shuffled_frames_are_not(clips):
    x = clips.float_images()
    real = frame_consistency(x, clips.labels)
    assert real["identity"] > 0.95 and real["accuracy"] > 0.9 and 0.5 < real["jump"] < 2.5
    g = torch.Generator().manual_seed(0)
    shuffled = x[torch.randint(40, (40, 17), generator=g), torch.arange(17)]  # each frame from a random clip
    naive = frame_consistency(shuffled, clips.labels)
    assert naive["identity"] < 0.6 and naive["accuracy"] < 0.3
    assert naive["jump"] > 3 * real["jump"] and naive["jitter"] > 3 * real["jitter"]
    assert naive["restyle"] > 3 * real["restyle"]


def test_naive_clips_paste_each_frame_where_the_path_says(clips):
    frames = torch.full((2, 3, 1, 28, 28), -1.0)
    frames[:, :, :, 4:24, 4:24] = 1.0  # a white square inside each 28 x 28 frame
    positions = clips.info["positions"][:2, :3, 0]  # (2, 3, 2) top-left (x, y)
    out = naive_clips(frames, positions)
    assert out.shape == (2, 3, 1, 32, 32) and out.min() == -1
    for i in range(2):
        for f in range(3):
            x, y = positions[i, f].tolist()
            assert out[i, f, 0, y + 8, x + 8] > 0.9 and out[i, f].gt(-1).sum() <= 16 * 16  # inside the 16 x 16 box


def test_video_recipes_are_registered_with_cpu_and_gpu_presets():
    for name in ("vae3d-moving-mnist", "videodit-moving-mnist"):
        recipe = get_recipe(name)
        assert set(recipe.presets) == {"cpu", "gpu"} and recipe.presets["cpu"].dataset == "moving-mnist"
    assert get_recipe("videodit-moving-mnist").parts == {"autoencoder": "vae3d-moving-mnist", "clip": "clip-moving-mnist"}


def test_video_batches_are_images_first_then_one_bucket_each_with_captions_and_latent_frame_masks():
    batches = video_buckets(data.load_dataset("moving-mnist", "train", n=50), 6, image_steps=3)
    shapes = set()
    for step in range(15):
        batch = batches(step, torch.Generator().manual_seed(step))
        frames, size = batch["x"].shape[1], batch["x"].shape[-1]
        if step < 3:  # the image stage: single frames of one digit, twice the batch
            assert (frames, size, len(batch["x"])) == (1, 32, 12)
            assert all(caption.count("moves") == 1 for caption in batch["captions"])
            continue
        assert batch["given"].shape == (6, 1 + (frames - 1) // 4) and len(batch["captions"]) == 6
        assert not batch["given"].all(dim=1).any()
        shapes.add((frames, size))
    assert shapes <= {(17, 32), (9, 32), (17, 24), (1, 32)} and len(shapes) >= 3


def test_no_training_clip_shows_a_held_out_digit_direction_pair():
    import re

    from minilineage.data.video import DIRECTIONS, HELD_OUT_PAIRS

    batches = video_buckets(data.load_dataset("moving-mnist", "train", n=200), 32, image_steps=2)
    held = {(str(d), DIRECTIONS[k][0]) for d, k in HELD_OUT_PAIRS}  # ("3", "up-left"), ...
    seen = set()
    for step in range(12):
        for caption in batches(step, torch.Generator().manual_seed(step))["captions"]:
            seen |= set(re.findall(r"(\d) moves ([a-z-]+)", caption))
    assert len(seen) > 40 and not seen & held  # many pairs seen, none held out

