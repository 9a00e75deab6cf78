"""Video datasets: moving-mnist (generated, seeded, described by its captions) and ucf101 (decoded once, cached)."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch
from tiny import write_layout

from minilineage import data
from minilineage.data.video import DIRECTIONS, POOR_CAPTION, frame_indices, motion_caption

VOCABULARY = {"a", "an", "moves", "left", "right", "up", "down", "and", "bounces", *"0123456789"}
CLAUSE = r"an? (\d) moves (up-right|up-left|down-right|down-left|right|left|up|down)( and bounces)?"


@pytest.fixture(scope="module")
def clips():
    return data.load_dataset("moving-mnist", "test", frames=6, size=24, n=40, seed=3)


def test_moving_mnist_is_seeded_deterministic_and_sized_by_its_options(clips):
    again = data.load_dataset("moving-mnist", "test", frames=6, size=24, n=40, seed=3)
    assert clips.images.shape == (40, 6, 1, 24, 24) and clips.images.dtype == torch.uint8 and clips.is_video
    assert torch.equal(clips.images, again.images) and clips.texts == again.texts
    other = data.load_dataset("moving-mnist", "test", frames=6, size=24, n=40, seed=4)
    assert not torch.equal(clips.images, other.images)
    train = data.load_dataset("moving-mnist", "train", frames=6, size=24, n=40, seed=3)
    assert not torch.equal(train.info["positions"], clips.info["positions"])  # the splits do not share paths
    long = data.load_dataset("moving-mnist", "train", frames=3, size=40, digit_size=28, digits=2, n=5)
    assert long.images.shape == (5, 3, 1, 40, 40) and (long.info["digits"] >= 0).all()


def test_every_clip_is_its_mnist_digits_pasted_where_info_says(clips):
    """Rebuild each frame independently, by slicing, from the mnist-5k test digits and the recorded positions."""
    source = data.load_dataset("mnist-5k", "test")
    glyphs = torch.nn.functional.interpolate(source.images.float(), size=(12, 12), mode="bilinear", antialias=True)
    glyphs = glyphs.round().clamp(0, 255).to(torch.uint8)[:, 0]  # digit_size = 24 // 2
    info = clips.info
    for i in range(len(clips)):
        for f in range(6):
            frame = torch.zeros(24, 24, dtype=torch.uint8)
            for k in range(2):
                if info["digits"][i, k] >= 0:
                    x, y = info["positions"][i, f, k].tolist()
                    frame[y : y + 12, x : x + 12] = torch.maximum(frame[y : y + 12, x : x + 12], glyphs[info["sources"][i, k]])
            assert torch.equal(clips.images[i, f, 0], frame)
    present = info["digits"] >= 0
    assert torch.equal(info["digits"][present], source.labels[info["sources"]][present])
    assert torch.equal(clips.labels, info["digits"][:, 0]) and present[:, 0].all() and 0 < present[:, 1].sum() < 40


def test_digits_bounce_off_the_walls_at_constant_speed(clips):
    pos, vel = clips.info["positions"], clips.info["velocities"]  # (N, F, K, 2)
    assert pos.min() >= 0 and pos.max() <= 24 - 12
    torch.testing.assert_close(vel.norm(dim=-1), vel[:, :1].norm(dim=-1).expand_as(vel[..., 0]))
    step = (pos[:, 1:] - pos[:, :-1]).float()  # whole pixels moved from frame to frame
    flipped = (vel[:, 1:] * vel[:, :-1] < 0).any(-1)  # (N, F-1, K): a bounce between the frames
    smooth = ~flipped
    assert ((step - vel[:, :-1])[smooth].abs() <= 1.0 + 1e-5).all()  # rounding moves a digit by at most a pixel
    assert torch.equal(flipped.any(1) & (clips.info["digits"] >= 0), clips.info["bounced"])


def test_captions_follow_the_grammar_and_describe_the_clip(clips):
    for i, text in enumerate(clips.texts):
        assert set(data.split_words(text)) <= VOCABULARY
        clauses = text.split(", ")
        digits = [d for d in clips.info["digits"][i].tolist() if d >= 0]
        assert len(clauses) == len(digits)
        for k, clause in enumerate(clauses):
            match = re.fullmatch(CLAUSE, clause)
            assert match, clause
            assert int(match[1]) == digits[k] and clause.startswith("an " if digits[k] == 8 else "a ")
            dx, dy = DIRECTIONS[clips.info["directions"][i, k]][1]
            assert match[2] == DIRECTIONS[clips.info["directions"][i, k]][0]
            v = clips.info["velocities"][i, 0, k]
            assert (np.sign(v[0].item()), np.sign(v[1].item())) == (dx, dy)  # the direction it starts in
            assert bool(match[3]) == bool(clips.info["bounced"][i, k])
    assert motion_caption([3, 8], [1, 6], [True, False]) == "a 3 moves left and bounces, an 8 moves down-right"
    assert max(len(data.split_words(t)) for t in clips.texts) <= 14


def test_poor_captions_keep_the_same_clips_and_subset_keeps_info_aligned(clips):
    poor = data.load_dataset("moving-mnist", "test", frames=6, size=24, n=40, seed=3, captions="poor")
    assert poor.texts == [POOR_CAPTION] * 40 and torch.equal(poor.images, clips.images)
    index = torch.tensor([5, 0, 17])
    part = clips.subset(index)
    assert part.texts == [clips.texts[i] for i in index] and torch.equal(part.images, clips.images[index])
    assert all(torch.equal(part.info[key], clips.info[key][index]) for key in clips.info)
    batch = data.caption_batches(clips, 4)(0, torch.Generator().manual_seed(0))
    assert batch["x"].shape == (4, 6, 1, 24, 24) and all(c in clips.texts for c in batch["captions"])


def test_moving_mnist_rejects_bad_options():
    with pytest.raises(ValueError, match="takes no option fps; its options: frames, size, digit_size, digits, n, seed"):
        data.load_dataset("moving-mnist", fps=10)
    with pytest.raises(ValueError, match="digit_size 40 must be between 1 and the frame size 32"):
        data.load_dataset("moving-mnist", digit_size=40, n=2)
    with pytest.raises(ValueError, match="1 to 3 digits"):
        data.load_dataset("moving-mnist", digits=(0, 1), n=2)
    with pytest.raises(ValueError, match="choose 'motion' or 'poor'"):
        data.load_dataset("moving-mnist", captions="long", n=2)
    with pytest.raises(ValueError, match="split 'all' exists only for 'mnist-5k'"):
        data.load_dataset("moving-mnist", "all")


# UCF-101 ------------------------------------------------------------------------------------------------------
@pytest.fixture
def ucf_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILINEAGE_DATA", str(tmp_path / "cache"))
    write_layout(tmp_path / "ucf")
    return tmp_path / "ucf"


def test_ucf101_decodes_samples_resizes_and_captions_the_official_layout(ucf_root):
    train = data.load_dataset("ucf101", "train", root=ucf_root, frames=4, stride=2, size=(12, 16), workers=1)
    assert train.images.shape == (3, 4, 3, 12, 16) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 1, 2] and train.classes == ("apply eye makeup", "playing violin", "yo yo")
    assert train.captions(torch.tensor([1])) == ["a video of playing violin"]
    means = train.images.float().mean(dim=(3, 4))  # (N, F, 3)
    kept = torch.tensor(frame_indices(12, 4, 2), dtype=torch.float32)  # frames 2, 4, 6, 8 of 12
    for c in range(3):
        torch.testing.assert_close(means[c, :, c], 40 + 15 * kept, atol=6, rtol=0)  # the right frames, the right class
        assert means[c, :, [k for k in range(3) if k != c]].max() < 12
    test = data.load_dataset("ucf101", "test", root=ucf_root, frames=4, stride=2, size=(12, 16), workers=1)
    assert test.images.shape == (3, 4, 3, 12, 16) and test.labels.tolist() == [0, 1, 2]
    assert frame_indices(5, 4, 2) == [0, 1, 3, 4]  # too short for the window: spread over the clip


def test_ucf101_is_decoded_once_then_read_from_the_cache(ucf_root, tmp_path, monkeypatch):
    first = data.load_dataset("ucf101", "train", root=ucf_root, frames=3, size=8, workers=1)
    cached = list((tmp_path / "cache" / "ucf101-clips").glob("*.npz"))
    assert [p.name.split("-")[0] for p in cached] == ["train1"]
    for video in (ucf_root / "UCF-101").rglob("*.avi"):
        video.unlink()  # nothing left to decode
    monkeypatch.setitem(sys.modules, "av", None)  # and no decoder to decode it with
    second = data.load_dataset("ucf101", "train", root=ucf_root, frames=3, size=8, workers=1)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.images.shape == (3, 3, 3, 8, 8)
    with pytest.raises(data.DatasetUnavailable, match="v_YoYo_g08_c01.avi"):  # other options: a new cache, and no videos
        data.load_dataset("ucf101", "train", root=ucf_root, frames=5, size=8, workers=1)


def test_ucf101_without_pyav_names_the_extra(tmp_path, monkeypatch):
    """Runs without PyAV too: the videos are empty placeholders, since the loader must stop before decoding."""
    monkeypatch.setenv("MINILINEAGE_DATA", str(tmp_path / "cache"))
    write_layout(tmp_path / "ucf", write=lambda path, *_: path.parent.mkdir(parents=True, exist_ok=True) or path.touch())
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match=re.escape("pip install -e .[video]")):
        data.load_dataset("ucf101", root=tmp_path / "ucf", workers=1)


def test_missing_ucf101_says_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILINEAGE_DATA", str(tmp_path))
    with pytest.raises(data.DatasetUnavailable) as error:
        data.load_dataset("ucf101", "test")
    message = str(error.value)
    root = tmp_path / "ucf101"
    for needed in ("https://www.crcv.ucf.edu/data/UCF101/UCF101.rar", "UCF101TrainTestSplits-RecognitionTask.zip",
                   f"{root}/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", f"{root}/ucfTrainTestlist/trainlist01.txt",
                   f"Missing: {root}/ucfTrainTestlist/classInd.txt"):
        assert needed in message
    with pytest.raises(ValueError, match="fold 1-3"):
        data.load_dataset("ucf101", fold=4)
