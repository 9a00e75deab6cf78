"""Chapter 6's sampling studies: how samples are drawn and scored, and what a record holds."""

from __future__ import annotations

import json

import pytest
import torch

from minilineage.data import to_uint8
from minilineage.recipes import dit_studies


def test_samples_are_the_digits_in_turn_in_chunks_from_one_generator(monkeypatch):
    calls = []

    def draw(k, generator, labels):
        calls.append(labels.tolist())
        return torch.rand(k, 1, 28, 28, generator=generator) * 2 - 1

    seen = {}
    monkeypatch.setattr(dit_studies, "evaluate_samples", lambda images, labels: seen.update(images=images) or {"n": 10})
    monkeypatch.setattr(dit_studies, "CHUNK", 4)
    assert dit_studies.score(draw, 10)["n"] == 10
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    g = torch.Generator().manual_seed(0)
    first, second = (to_uint8(torch.rand(4, 1, 28, 28, generator=g) * 2 - 1) for _ in range(2))
    assert torch.equal(seen["images"][:4], first) and torch.equal(seen["images"][4:8], second)  # one generator


def test_a_study_record_says_how_it_was_made(monkeypatch, tmp_path):
    monkeypatch.setitem(dit_studies.STUDIES, "toy", lambda: {"model": {"1.5": {"fid_lenet": 60.0}}})
    threads = torch.get_num_threads()
    try:
        record = dit_studies.run_study("toy", out=tmp_path)
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "toy.json").read_text())
    assert saved == record and saved["results"] == {"model": {"1.5": {"fid_lenet": 60.0}}}
    assert saved["command"] == "python -m minilineage.recipes.dit_studies toy" and saved["device"] == "cpu (1 thread)"
    assert {"load_average_at_start", "wall_time_s", "created", "torch"} <= set(saved)
    with pytest.raises(ValueError, match="unknown study 'nope'; choose one of: guidance, levels"):
        dit_studies.run_study("nope", out=tmp_path)
