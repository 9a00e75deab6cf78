"""Chapter 7's ladder: which prompts it asks, which pairs it holds out, and how it reads digits and motion."""

from __future__ import annotations

import json

import pytest
import torch

from minilineage import data
from minilineage.data.video import DIRECTIONS
from minilineage.recipes.video_ladder import (
    HELD_OUT_PAIRS,
    digit_figures,
    ink_moves,
    ladder_pairs,
    motion_figures,
    prompt,
    without_pairs,
)


@pytest.fixture(scope="module")
def clips():
    return data.load_dataset("moving-mnist", "test", n=100, digits=1, seed=5)


def blob_clip(path: list[tuple[float, float]], size: int = 32) -> torch.Tensor:
    """One clip (1, F, 1, S, S) of a 3 x 3 square of ink whose top-left corner follows `path` (x, y) in whole pixels."""
    clip = -torch.ones(1, len(path), 1, size, size)
    for f, (x, y) in enumerate(path):
        clip[0, f, 0, round(y) : round(y) + 3, round(x) : round(x) + 3] = 1
    return clip


def test_prompts_use_the_captions_words_and_cover_every_seen_pair_once():
    assert prompt(8, 3) == "an 8 moves down" and prompt(3, 5) == "a 3 moves up-left"
    seen = ladder_pairs(70)
    assert len({tuple(p) for p in seen.tolist()}) == 70 and not {tuple(p) for p in seen.tolist()} & set(HELD_OUT_PAIRS)
    assert (seen[:10, 0] == torch.arange(10)).all()  # ten prompts in a row ask for every digit once
    held = ladder_pairs(20, held_out=True)
    assert {tuple(p) for p in held.tolist()} == set(HELD_OUT_PAIRS) and len(HELD_OUT_PAIRS) == 10
    assert {d for d, _ in HELD_OUT_PAIRS} == set(range(10)) and {k for _, k in HELD_OUT_PAIRS} == set(range(8))


def test_without_pairs_drops_exactly_the_clips_of_a_held_out_pair():
    train = data.load_dataset("moving-mnist", "train", n=600)
    kept = without_pairs(train)
    digits, ways = train.info["digits"], train.info["directions"]
    hit = torch.zeros(len(train), dtype=torch.bool)
    for d, k in HELD_OUT_PAIRS:
        hit |= ((digits == d) & (ways == k)).any(dim=1)
    assert len(kept) == len(train) - hit.sum().item() and 0 < hit.sum().item() < 0.35 * len(train)
    left = {(d, k) for row_d, row_k in zip(kept.info["digits"].tolist(), kept.info["directions"].tolist(), strict=True)
            for d, k in zip(row_d, row_k, strict=True)}
    assert not left & set(HELD_OUT_PAIRS)
    assert len(kept.texts) == len(kept) and kept.texts[0] == train.texts[torch.nonzero(~hit)[0].item()]


def test_ink_moves_reads_direction_within_sixty_degrees_and_at_least_a_pixel():
    right = blob_clip([(5 + f, 10) for f in range(4)])  # 3 pixels to the right
    assert ink_moves(right, torch.tensor([0])).item() and not ink_moves(right, torch.tensor([1])).item()
    assert ink_moves(right, torch.tensor([4])).item() and ink_moves(right, torch.tensor([6])).item()  # 45 degrees off
    assert not ink_moves(right, torch.tensor([2])).item()  # up is 90 degrees off
    slow = blob_clip([(5, 10), (5, 10), (5, 10), (5.4, 10)])  # rounds to no move at all
    assert not ink_moves(slow, torch.tensor([0])).item()
    down_left = blob_clip([(20 - f, 8 + f) for f in range(4)])
    assert [way for way in range(8) if ink_moves(down_left, torch.tensor([way])).item()] == [
        i for i, (name, _) in enumerate(DIRECTIONS) if name in ("left", "down", "down-left")]


def test_real_clips_follow_their_captions_and_a_shuffled_direction_is_near_chance(clips):
    figures = motion_figures(clips.float_images(), clips.info["directions"][:, 0])
    assert figures["motion"] >= 0.75  # a bounce within the first four frames is what the rest miss
    assert 0.15 <= figures["motion_shuffled"] <= 0.45  # a 120-degree window of 360: about a third


def test_digit_figures_read_real_clips_and_images_and_see_a_digit_change(clips):
    x, digits = clips.float_images(), clips.info["digits"][:, 0]
    real = digit_figures(x, digits)
    assert real["accuracy"] > 0.9 and real["one_digit"] > 0.95 and set(real) >= {"identity", "restyle", "jump"}
    assert digit_figures(x[:, :1], digits) == {"accuracy": pytest.approx(digit_figures(x[:, :1], digits)["accuracy"])}
    swapped = x.clone()
    swapped[:, 9:] = x[torch.roll(torch.arange(len(x)), 1), 9:]  # the second half from another clip, most with another digit
    mixed = digit_figures(swapped, digits)
    assert mixed["one_digit"] < 0.2 and mixed["accuracy"] < 0.65


def test_the_ladder_climbs_every_rung_of_a_shipped_text_to_video_checkpoint(tmp_path, capsys):
    from minilineage.recipes import video_ladder

    out = tmp_path / "ladder.json"
    video_ladder.main(["videodit-moving-mnist", "--n", "3", "--steps", "2", "--guidance", "2", "--out", str(out)])
    record = json.loads(out.read_text())
    rungs = record["rungs"]
    assert list(rungs) == ["real", "vae", "t2i", "t2v", "held_out", "i2v", "extend"]
    assert rungs["i2v"]["frames_scored"] == 16 and rungs["extend"]["frames_scored"] == 24  # generated frames only
    assert (record["n"], record["steps"], record["guidance"]) == (3, 2, 2.0)
    assert rungs["real"]["accuracy"] == 1.0 and rungs["real"]["one_digit"] == 1.0  # the judge reads real clips
    assert set(rungs["t2i"]) == {"accuracy", "sample_seconds"}  # one frame: no motion, no identity
    for rung in ("real", "vae", "t2v", "held_out"):
        assert {"accuracy", "identity", "one_digit", "motion", "motion_shuffled"} <= set(rungs[rung])
        assert all(0 <= rungs[rung][k] <= 1 for k in ("accuracy", "identity", "one_digit", "motion"))
    table = capsys.readouterr().out
    assert table == video_ladder.ladder_table(record) + "\n" and record["command"].endswith("--out " + str(out))
    assert "text-to-image (frames=1)" in table and f"{rungs['t2v']['accuracy']:.0%}" in table.splitlines()[5]


def test_the_ladder_refuses_a_model_that_is_not_text_to_video(capsys):
    from minilineage.recipes import video_ladder

    with pytest.raises(SystemExit):
        video_ladder.main(["dit-mnist", "--n", "2"])
    assert "not a latent text-to-video pipeline" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        video_ladder.main(["videodit-moving-mnist", "--n", "0"])
