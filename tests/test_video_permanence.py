"""Object permanence (chapter 7): crossing clips, a tracker that follows two digits through their overlap, and
the figures that say whether each digit comes out as itself."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import video_pipeline

from minilineage.recipes import video_permanence as vp


@pytest.fixture(scope="module")
def crossing():
    return vp.crossing_clips(20)


def test_crossing_clips_start_apart_meet_and_part_again_with_two_different_digits(crossing):
    clips, digits, centres, _, captions = crossing
    assert clips.shape == (20, 17, 1, 32, 32) and digits.shape == (20, 2) and centres.shape == (20, 17, 2, 2)
    assert (digits[:, 0] != digits[:, 1]).all() and (digits >= 0).all()
    distance = (centres[:, :, 0] - centres[:, :, 1]).norm(dim=-1)  # (20, 17)
    assert (distance[:, : vp.GIVEN] >= vp.APART).all() and (distance[:, vp.GIVEN :].amin(1) <= vp.MEET).all()
    assert all(len(c.split(",")) == 2 for c in captions)


def test_the_tracker_follows_real_digits_through_the_overlap(crossing):
    start = vp.GIVEN - 1
    tracked = vp.track(crossing.clips, crossing.centres[:, start], crossing.velocities[:, start])
    error = (tracked - crossing.centres).norm(dim=-1)[:, start + 1 :]  # (20, 12, 2): pixels from the true centres
    assert error.median() < 1 and (error.amax(dim=(1, 2)) < 5).float().mean() >= 0.75
    blind = vp.track(crossing.clips, crossing.centres[:, start], torch.zeros_like(crossing.velocities[:, start]))
    assert (blind - crossing.centres).norm(dim=-1)[:, -1].median() > 2  # without the velocity it is lost in the overlap


def test_a_bounce_off_a_wall_turns_the_velocity():
    centre, velocity = vp.reflect(torch.tensor([[-1.0, 5.0], [25.0, 30.0]]), torch.tensor([[-2.0, 1.0], [1.0, 2.0]]), 0, 24)
    assert centre.tolist() == [[1.0, 5.0], [23.0, 18.0]] and velocity.tolist() == [[2.0, 1.0], [-1.0, -2.0]]


def test_real_clips_keep_their_digits_and_swapped_tracks_read_as_swapped(crossing):
    real = vp.permanence_figures(crossing.clips, crossing)
    assert real["crossed"] >= 0.7 and real["kept"] >= 0.8 and real["swapped"] <= 0.1
    told_wrong = crossing._replace(digits=crossing.digits.flip(1))  # each track told the other's digit
    swapped = vp.permanence_figures(crossing.clips, told_wrong)
    assert swapped["swapped"] == pytest.approx(real["kept"]) and swapped["kept"] == pytest.approx(real["swapped"])
    still = crossing.clips[:, :1].expand(-1, 17, -1, -1, -1)  # nothing moves: the digits never meet
    assert vp.permanence_figures(still, crossing._replace(velocities=torch.zeros_like(crossing.velocities)))["crossed"] == 0


def test_the_measurement_runs_on_a_pipeline_and_its_table_prints_every_row(monkeypatch, crossing):
    pipe = video_pipeline(sample_steps=2)  # fully convolutional VAE, sin-cos positions: 32 x 32 clips of 17 frames fit
    monkeypatch.setattr(vp, "crossing_clips", lambda n: vp.Crossings(*(x[:n] for x in crossing)))
    record = vp.permanence(pipe, n=3, steps=2)
    assert set(record["rows"]) == {"real", "vae", "model"}
    assert all(0 <= f[k] <= 1 for f in record["rows"].values() for k in ("crossed", "kept", "swapped"))
    table = vp.permanence_table(record)
    assert "continued by the model" in table and "through the VAE" in table


def test_the_command_writes_its_record_where_asked(monkeypatch, crossing, tmp_path):
    from minilineage.recipes import video_ladder

    monkeypatch.setattr(vp, "crossing_clips", lambda n: vp.Crossings(*(x[:n] for x in crossing)))
    monkeypatch.setattr(video_ladder, "load_model", lambda name: video_pipeline(sample_steps=2))
    out = tmp_path / "p.json"
    vp.main(["videodit-moving-mnist", "--n", "2", "--steps", "2", "--out", str(out)])
    record = json.loads(out.read_text())
    assert record["command"] == f"python -m minilineage.recipes.video_permanence videodit-moving-mnist --n 2 --steps 2 --out {out}"
    assert record["n"] == 2 and set(record["rows"]) == {"real", "vae", "model"}
    with pytest.raises(SystemExit):
        vp.main(["videodit-moving-mnist", "--n", "0"])
