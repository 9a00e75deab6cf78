"""`minilineage sample` on a video checkpoint: every mode, lengths and sizes beyond training, .gif/.mp4, bad input.

The checkpoint is a tiny random video pipeline (9 frames of 16 x 16 in training, 3 latent frames of 4 x 4,
patch 2), so each command runs in well under a second with 2 sampling steps.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
from tiny import video_pipeline

from minilineage import checkpoint, cli
from minilineage.data import to_float, to_uint8
from minilineage.diffusion import DiffusionPipeline
from minilineage.recipes import video_modes as modes

PROMPT = "a 3 moves right"


@pytest.fixture(scope="module")
def pipe() -> DiffusionPipeline:
    return video_pipeline(sample_steps=2)


@pytest.fixture(scope="module")
def ckpt(pipe, tmp_path_factory) -> str:
    record = {"format": checkpoint.FORMAT, "model_class": "DiffusionPipeline", "recipe": "videodit-moving-mnist",
              "model_config": asdict(pipe.config), "model": pipe.state_dict()}
    return str(checkpoint.save_atomic(record, tmp_path_factory.mktemp("ckpt") / "video.pt"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> str:
    """Two 9-frame clips of 16 x 16 as `sample` writes them."""
    path = tmp_path_factory.mktemp("clips") / "clips.npz"
    np.savez(path, images=torch.randint(0, 256, (2, 9, 1, 16, 16), generator=torch.Generator().manual_seed(1),
                                        dtype=torch.uint8).numpy())
    return str(path)


def sample(ckpt, out, *flags) -> np.ndarray:
    cli.main(["sample", ckpt, "--steps", "2", "--device", "cpu", "--out", str(out), *flags])
    return np.load(out)["images"] if str(out).endswith(".npz") else None


def reconstruction(pipe, path) -> np.ndarray:
    x = to_float(torch.from_numpy(np.load(path)["images"]))
    return to_uint8(pipe.decode(pipe.encode(x)).clamp(-1, 1)).numpy()


def close(a: np.ndarray, b: np.ndarray) -> bool:  # equal up to a rounding step of uint8
    return np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_text_to_video_is_the_mode_function_with_the_prompts_digit_as_label(ckpt, pipe, tmp_path):
    images = sample(ckpt, tmp_path / "v.npz", "--prompt", PROMPT, "--n", "3")
    assert images.shape == (3, 9, 1, 16, 16) and images.dtype == np.uint8
    assert np.load(tmp_path / "v.npz")["labels"].tolist() == [3, 3, 3]
    expected = modes.text_to_video(pipe, [PROMPT] * 3, torch.Generator().manual_seed(0), steps=2)
    np.testing.assert_array_equal(images, to_uint8(expected).numpy())


def test_frames_and_sizes_beyond_training_and_single_frames(ckpt, tmp_path):
    assert sample(ckpt, tmp_path / "a.npz", "--n", "2", "--frames", "13", "--size", "24").shape == (2, 13, 1, 24, 24)
    assert sample(ckpt, tmp_path / "w.npz", "--n", "1", "--size", "16x32").shape == (1, 9, 1, 16, 32)  # 1:2 aspect
    assert sample(ckpt, tmp_path / "b.npz", "--n", "2", "--frames", "1").shape == (2, 1, 1, 16, 16)  # text to image
    two = sample(ckpt, tmp_path / "c.npz", "--n", "3", "--batch-size", "2", "--prompt", PROMPT)  # batches of 2, then 1
    assert two.shape == (3, 9, 1, 16, 16)


def test_edit_keeps_the_input_at_strength_zero_and_makes_one_clip_per_input(ckpt, pipe, clips, tmp_path):
    edited = sample(ckpt, tmp_path / "e.npz", "--init-video", clips, "--strength", "0.6", "--prompt", PROMPT)
    assert edited.shape == (2, 9, 1, 16, 16) and edited.dtype == np.uint8
    kept = sample(ckpt, tmp_path / "k.npz", "--init-video", clips, "--mode", "edit", "--strength", "0")
    assert close(kept, reconstruction(pipe, clips))
    assert sample(ckpt, tmp_path / "n.npz", "--init-video", clips, "--strength", "0.5", "--n", "5").shape[0] == 5  # cycled


def test_image_to_video_from_a_clips_first_frame_or_an_image_file(ckpt, pipe, clips, tmp_path):
    video = sample(ckpt, tmp_path / "i.npz", "--mode", "i2v", "--init-video", clips, "--frames", "13")
    assert video.shape == (2, 13, 1, 16, 16)
    first = np.load(clips)["images"][:, :1]
    assert close(video[:, 0], reconstruction(pipe, clips)[:, 0])
    np.savez(tmp_path / "images.npz", images=first[:, 0])  # (N, C, H, W)
    assert sample(ckpt, tmp_path / "j.npz", "--mode", "i2v", "--init-video", str(tmp_path / "images.npz")).shape == \
        (2, 9, 1, 16, 16)


def test_extension_to_several_windows_with_or_without_an_input_clip(ckpt, pipe, clips, tmp_path):
    longer = sample(ckpt, tmp_path / "x.npz", "--mode", "extend", "--init-video", clips, "--windows", "2", "--keep", "1")
    assert longer.shape == (2, 9 + 2 * 2 * 4, 1, 16, 16)  # 3 latent frames a window, 1 given: 8 new frames each
    assert close(longer[:, :9], reconstruction(pipe, clips))
    drawn = sample(ckpt, tmp_path / "y.npz", "--mode", "extend", "--n", "1", "--windows", "3", "--keep", "2")
    assert drawn.shape == (1, 9 + 3 * 4, 1, 16, 16)


def test_interpolation_and_merging(ckpt, pipe, clips, tmp_path):
    between = sample(ckpt, tmp_path / "b.npz", "--mode", "interpolate", "--init-video", clips)
    assert between.shape == (2, 9, 1, 16, 16)
    assert close(between[:, 0], reconstruction(pipe, clips)[:, 0])
    np.savez(tmp_path / "other.npz", images=np.load(clips)["images"][::-1])
    merged = sample(ckpt, tmp_path / "m.npz", "--mode", "merge", "--init-video", clips, str(tmp_path / "other.npz"),
                    "--keep", "1")
    assert merged.shape == (2, 9 + 1 * 4 + 2 * 4, 1, 16, 16)  # the first clip, 1 new latent frame, 2 of the second


def test_gif_and_mp4_hold_one_grid_per_frame(ckpt, tmp_path):
    from PIL import Image

    sample(ckpt, tmp_path / "v.gif", "--n", "3", "--frames", "13", "--prompt", PROMPT, "--fps", "4")
    with Image.open(tmp_path / "v.gif") as gif:
        assert gif.n_frames == 13 and gif.size == (38, 38)  # 2 x 2 grid of 16 x 16 with 2-pixel gaps
        assert gif.info["duration"] == 250
    av = pytest.importorskip("av")
    sample(ckpt, tmp_path / "v.mp4", "--n", "3", "--prompt", PROMPT)
    with av.open(str(tmp_path / "v.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 9 and frames[0].shape == (38, 38, 3)
    sample(ckpt, tmp_path / "v.png", "--n", "2")
    with Image.open(tmp_path / "v.png") as png:
        assert png.size == (9 * 18 + 2, 2 * 18 + 2)  # a row per clip, a column per frame
    sample(ckpt, tmp_path / "images.png", "--n", "9", "--frames", "1")
    with Image.open(tmp_path / "images.png") as png:
        assert png.size == (3 * 18 + 2, 3 * 18 + 2)  # images (one frame each): a 3 x 3 grid, not a column


def test_mp4_without_pyav_says_which_extra_to_install(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # `import av` now raises ModuleNotFoundError
    err = error_of(capsys, ckpt, tmp_path / "v.mp4", "--n", "1")
    assert "pip install -e .[video]" in err


# ---- Bad input: one line naming what was wrong and what is valid, before anything is written ---------------


def error_of(capsys, ckpt, out, *flags) -> str:
    with pytest.raises(SystemExit) as stop:
        sample(ckpt, out, *flags)
    assert stop.value.code == 2
    return capsys.readouterr().err


def test_lengths_and_sizes_that_do_not_fit_name_the_ones_that_do(ckpt, clips, capsys, tmp_path):
    assert "use 5 or 9 frames" in error_of(capsys, ckpt, tmp_path / "x.npz", "--frames", "6")
    assert "needs a multiple of 8; use 16 or 24" in error_of(capsys, ckpt, tmp_path / "x.npz", "--size", "20")
    assert "needs a multiple of 8; use 16 or 24" in error_of(capsys, ckpt, tmp_path / "x.npz", "--size", "16x20")
    assert "HEIGHTxWIDTH (24x48)" in error_of(capsys, ckpt, tmp_path / "x.npz", "--size", "16x20x4")
    np.savez(tmp_path / "odd.npz", images=np.zeros((1, 6, 1, 16, 16), np.uint8))
    assert "odd.npz: a causal VAE" in error_of(capsys, ckpt, tmp_path / "x.npz", "--init-video", str(tmp_path / "odd.npz"),
                                               "--strength", "0.5")
    np.savez(tmp_path / "images.npz", images=np.zeros((1, 1, 16, 16), np.uint8))
    assert "images.npz: expected uint8 `images` (N, F, C, H, W) with C = 1, got uint8 (1, 1, 16, 16)" in error_of(
        capsys, ckpt, tmp_path / "x.npz", "--init-video", str(tmp_path / "images.npz"), "--strength", "0.5")
    assert not (tmp_path / "x.npz").exists()


def test_flags_that_do_not_go_with_the_mode_are_refused(ckpt, clips, capsys, tmp_path):
    out = tmp_path / "x.npz"
    assert "--mode edit takes 1 --init-video file, got 0" in error_of(capsys, ckpt, out, "--strength", "0.6")
    assert "--mode edit needs --strength" in error_of(capsys, ckpt, out, "--mode", "edit", "--init-video", clips)
    assert "--strength must be in [0, 1], got 1.5" in error_of(capsys, ckpt, out, "--init-video", clips, "--strength", "1.5")
    err = error_of(capsys, ckpt, out, "--init-video", clips)
    assert "with --init-video choose --mode i2v, extend, interpolate or merge, or give --strength (edit)" in err
    assert "--mode merge takes 2 --init-video files, got 1" in error_of(capsys, ckpt, out, "--mode", "merge", "--init-video", clips)
    assert "--windows is for --mode extend, not --mode t2v" in error_of(capsys, ckpt, out, "--windows", "2")
    assert "--mode edit keeps the length of its --init-video" in error_of(capsys, ckpt, out, "--init-video", clips,
                                                                          "--strength", "0.5", "--frames", "13")
    assert "--mode i2v keeps the size of its --init-video" in error_of(capsys, ckpt, out, "--mode", "i2v",
                                                                       "--init-video", clips, "--size", "24")
    assert "keep must be between 1 and 1" in error_of(capsys, ckpt, out, "--mode", "merge", "--init-video", clips, clips)
    err = error_of(capsys, ckpt, out, "--mode", "loop")
    assert "invalid choice: 'loop'" in err and all(mode in err for mode in ("t2v", "i2v", "extend", "merge", "edit"))
    assert "does not take --labels" in error_of(capsys, ckpt, out, "--labels", "0-9")
    assert not out.exists()


def test_video_flags_and_formats_on_an_image_checkpoint_are_refused(capsys, tmp_path):
    err = error_of(capsys, "ae-mnist", tmp_path / "x.npz", "--frames", "9", "--mode", "t2v")
    assert "Autoencoder (ae-mnist) is not a video model: --frames, --mode only apply to video checkpoints" in err
    assert "--out .gif only applies to video checkpoints" in error_of(capsys, "ae-mnist", tmp_path / "x.gif")
    assert "--out must end in .npz or .png, got 'x.avi' (video checkpoints also write .gif or .mp4)" in error_of(
        capsys, "ae-mnist", tmp_path / "x.avi")
    assert "labels must be classes 0..9" in error_of(capsys, "ddpm-mnist", tmp_path / "x.npz", "--labels", "0-12")  # --n: 64
    assert not list(tmp_path.iterdir())
