"""The chapters' exercises: each one a check that says whether an answer is right, and a reference answer.

In a chapter an exercise is two lines:

    my_q_sample = None  # def my_q_sample(sched, x0, t, eps): ...
    exercise("ch3.q_sample", my_q_sample)

`exercise` prints "Not attempted yet", "Correct!" or "Not quite" with a hint, never the answer.
Stuck? `show_solution("ch3.q_sample")` prints the reference answer. Every exercise is registered
here with `register`, in the module of its chapter (ch1.py, ch2.py, ...), next to its reference
answer; `tests/test_exercises.py` runs every reference answer through its own check, so no exercise
can be unpassable, and checks that a wrong answer fails.

A check receives the student's answer (a number, a tensor, or a function to call on the check's
own inputs) and computes what is expected from the package itself, so it needs nothing from the
notebook's variables.
"""

from minilineage.exercises import ch1, ch2, ch3, ch4, ch5, ch6, ch7  # noqa: F401  (each registers its chapter's exercises)
from minilineage.exercises.core import (
    EXERCISES,
    Exercise,
    close_to,
    exercise,
    grade,
    register,
    show_solution,
)

__all__ = ["EXERCISES", "Exercise", "close_to", "exercise", "grade", "register", "show_solution"]
