"""Exercises: the registry, the grading, and the helpers a chapter's checks are built from."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Exercise:
    """One exercise: `is_right(answer) -> bool`, a hint, the reference answer, and optionally a known wrong one."""

    name: str
    is_right: Callable[[object], bool]
    hint: str
    solution: object  # what a student would write: a value, or a function
    wrong: object = None  # a plausible wrong answer the check must refuse (tests perturb the solution if None)


EXERCISES: dict[str, Exercise] = {}


def register(name: str, is_right: Callable[[object], bool], hint: str, solution: object,
             wrong: object = None) -> Exercise:
    if name in EXERCISES:
        raise ValueError(f"exercise {name!r} is registered twice")
    EXERCISES[name] = Exercise(name, is_right, hint, solution, wrong)
    return EXERCISES[name]


def _get(name: str) -> Exercise:
    if name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}; the exercises are: {', '.join(EXERCISES)}")
    return EXERCISES[name]


def grade(name: str, answer) -> bool | None:
    """True or False for an answer (a wrong shape or type is False, not a crash); None if not attempted."""
    if answer is None or answer is ...:
        return None
    try:
        return bool(_get(name).is_right(answer))
    except Exception:  # noqa: BLE001  an answer that crashes the check is a wrong answer
        return False


def exercise(name: str, answer) -> bool | None:
    """Print whether `answer` solves exercise `name`, without giving the answer away."""
    verdict = grade(name, answer)
    if verdict is None:
        print("Not attempted yet: replace the `None` above with your answer.")
    else:
        print("Correct!" if verdict else f"Not quite. Hint: {_get(name).hint}")
    return verdict


def show_solution(name: str) -> None:
    """Print the reference answer of an exercise (its source, if it is a function)."""
    solution = _get(name).solution
    print(inspect.getsource(solution) if callable(solution) else repr(solution))


def close_to(expected, rtol: float = 1e-4, atol: float = 1e-6) -> Callable[[object], bool]:
    """A check comparing numbers or tensors with a tolerance (shapes must match)."""

    def is_right(answer) -> bool:
        a = torch.as_tensor(answer, dtype=torch.float64)
        e = torch.as_tensor(expected, dtype=torch.float64)
        return a.shape == e.shape and torch.allclose(a, e, rtol=rtol, atol=atol)

    return is_right
