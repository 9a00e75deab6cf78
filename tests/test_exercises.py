"""Every exercise can be passed: its reference answer passes its own check, and a wrong answer does not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from minilineage.exercises import EXERCISES, exercise, grade, show_solution

CHAPTERS = sorted((Path(__file__).resolve().parent.parent / "chapters").glob("*.py"))


def wrong(answer):
    """A plausible wrong answer of the same kind: the reference, a little off."""
    if callable(answer):
        return lambda *args: answer(*args) * 1.1 + 0.01
    if isinstance(answer, torch.Tensor):
        return answer * 1.1 + 0.37
    if isinstance(answer, list):
        return [a * 1.1 + 0.37 for a in answer]
    return answer + 1 if isinstance(answer, int) else answer * 1.1 + 0.37


@pytest.mark.parametrize("name", list(EXERCISES))
def test_the_reference_answer_passes_its_check(name):
    assert grade(name, EXERCISES[name].solution) is True


@pytest.mark.parametrize("name", list(EXERCISES))
def test_a_wrong_answer_fails_and_no_answer_is_not_attempted(name):
    known = EXERCISES[name].wrong
    assert grade(name, wrong(EXERCISES[name].solution) if known is None else known) is False
    assert grade(name, None) is None


def test_every_exercise_a_chapter_uses_is_registered_and_every_registered_one_is_used():
    used = {name for py in CHAPTERS for name in re.findall(r'exercise\("([^"]+)"', py.read_text())}
    assert used <= set(EXERCISES), f"chapters use unregistered exercises: {sorted(used - set(EXERCISES))}"
    assert set(EXERCISES) <= used, f"registered but in no chapter: {sorted(set(EXERCISES) - used)}"


def test_feedback_never_prints_the_answer(capsys):
    name = "ch4.guidance"
    exercise(name, lambda c, u, w: c)
    out = capsys.readouterr().out
    assert out.startswith("Not quite. Hint:") and "eps_uncond + w" not in out
    exercise(name, EXERCISES[name].solution)
    assert capsys.readouterr().out == "Correct!\n"
    show_solution(name)
    assert "eps_uncond + w * (eps_cond - eps_uncond)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown exercise 'ch9.nope'; the exercises are: ch1.compression"):
        exercise("ch9.nope", 1)
